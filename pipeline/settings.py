"""The one settings object.

Sources, highest priority first: keyword arguments > environment variables
``INVOICES_<SECTION>__<FIELD>`` > a user TOML file (``INVOICES_CONFIG``) > the
embedded ``configs/default.toml``. Secrets come only from the environment.
"""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.schemas import CHANNELS

__all__ = ["Settings", "SellerSettings", "RenderSettings", "ArchiveSettings", "LedgerSettings",
           "IngestSettings", "ValidationSettings", "Tolerance", "Limits", "FORMAT_MAX_AMOUNT",
           "PROJECT_ROOT", "DEFAULT_CONFIG", "SHARED_DIR", "EdiSettings", "SmtpSettings",
           "SftpPartner", "DeliverySettings", "ReceivablesSettings", "DunningLevel",
           "DunningSettings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.toml"
# Shared reference material (datasets, standards, reference workloads) for tests and benches.
SHARED_DIR = Path(os.environ.get("INVOICES_SHARED_DIR", PROJECT_ROOT.parent / "shared"))


NO_EARLY_PAYMENT_DISCOUNT = {
    "fr": "Pas d'escompte pour paiement anticipé.",
    "en": "No discount for early payment.",
    "de": "Kein Skonto bei vorzeitiger Zahlung.",
}


class SellerSettings(BaseModel):
    """The issuing company: configuration, never extract data."""

    model_config = ConfigDict(extra="forbid")

    legal_name: str = Field(description="Registered name printed on every invoice.")
    siren: str = Field(pattern=r"^\d{9}$", description="9-digit SIREN.")
    vat_id: str = Field(description="Intra-EU VAT number.")
    address_line1: str = Field(description="Street address.")
    postcode: str = Field(description="Postcode.")
    city: str = Field(description="City.")
    country: str = Field(default="FR", pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2.")
    rcs: str = Field(description="Trade register mention, e.g. 'RCS Paris 732 829 320'.")
    share_capital: str = Field(description="Share capital as printed.")
    iban: str = Field(description="IBAN for payment by transfer.")
    bic: str = Field(description="BIC of the bank.")
    email: str = Field(description="Sender address of invoice emails.")
    late_penalty_rate: dict[str, str] = Field(
        description="Late-payment penalty rate as printed, per language (fr, en, de).")
    recovery_indemnity: Decimal = Field(
        default=Decimal("40.00"), description="Fixed recovery indemnity (art. D441-5), EUR.")
    early_payment_discount: dict[str, str] = Field(
        default_factory=lambda: dict(NO_EARLY_PAYMENT_DISCOUNT),
        description="The early-payment discount terms, or their absence, as printed per "
                    "language (art. L441-9; note AAB of the 2026 reform).")
    vat_on_debits: bool = Field(
        default=False, description="The seller opted to pay VAT on debits (art. 269-2-c CGI): "
                                   "printed on services invoices, BT-8 in the e-invoices.")
    default_item_nature: Literal["goods", "services"] = Field(
        default="goods", description="What a line is when the extract's item_nature is empty: "
                                     "decides the billing mode (BT-23) and the operation "
                                     "category printed.")


class RenderSettings(BaseModel):
    """How documents are rendered."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                         description="Render worker processes; 1 renders in-process.")
    batch_size: int = Field(default=50, ge=1, le=5000,
                            description="Invoices per render/delivery batch.")
    chunk_size: int = Field(default=10, ge=1, le=5000,
                            description="Invoices per render job sent to a worker: small chunks "
                                        "keep every worker busy until the last invoice.")
    batch_timeout_s: float = Field(
        default=1800, gt=0,
        description="A batch's invoices not rendered by then fail (a stuck worker).")
    templates_dir: Path = Field(default=PROJECT_ROOT / "templates",
                                description="Root of the Jinja templates and assets.")
    engine: Literal["weasyprint"] = Field(default="weasyprint",
                                          description="The render engine (pipeline.render.engine).")


class IngestSettings(BaseModel):
    """Extract reading."""

    model_config = ConfigDict(extra="forbid")

    error_rows: int = Field(default=5, ge=1, description="Offending rows quoted in an error.")


class Tolerance(BaseModel):
    """How far an invoiced unit price may stray from the PO price."""

    model_config = ConfigDict(extra="forbid")

    absolute: Decimal = Field(default=Decimal(0), ge=0, description="In currency units.")
    percent: Decimal = Field(default=Decimal(0), ge=0, le=100,
                             description="In percent of the PO price.")


# The largest amount every output format can carry: X12 810 TDS01 is N2 of at most 15 digits.
FORMAT_MAX_AMOUNT = Decimal("9999999999999.99")


class Limits(BaseModel):
    """Plausibility limits: values outside them are rejected before anything is rendered.

    The defaults suit a B2B biller; the hard bounds are what the output formats and the
    invoice layout can hold, so a limit can be raised only as far as it can be honoured.
    """

    model_config = ConfigDict(extra="forbid")

    max_amount: Decimal = Field(
        default=Decimal("999999999.99"), gt=0, le=FORMAT_MAX_AMOUNT,
        description="Largest absolute unit price, line amount or invoice total.")
    max_quantity: Decimal = Field(
        default=Decimal("999999999.999"), gt=0, le=Decimal("999999999.999"),
        description="Largest absolute quantity on one line.")
    identifier_length: int = Field(
        default=35, ge=1, le=35,
        description="Longest identifier (invoice, PO, delivery note numbers, customer ids, SKUs):"
                    " 35 is the EDIFACT an..35 of BGM and RFF.")
    name_length: int = Field(default=200, ge=1, le=200,
                             description="Longest name, address line, city or email list.")
    description_length: int = Field(default=1000, ge=1, le=1000,
                                    description="Longest line description or exemption reason.")
    earliest_date: date = Field(default=date(2000, 1, 1),
                                description="No date of an extract may be before this day.")
    latest_date: date = Field(default=date(2099, 12, 31),
                              description="No date of an extract may be after this day.")
    max_payment_days: int = Field(default=366, ge=0, le=3660,
                                  description="Longest span from issue date to due date.")
    max_delivery_age_days: int = Field(
        default=366, ge=0, le=3660,
        description="Longest span from a delivery (or the invoice's delivery date) to the issue.")


class ValidationSettings(BaseModel):
    """Which rules run, how hard they bite, and their parameters."""

    model_config = ConfigDict(extra="forbid")

    rules: dict[str, Literal["error", "warning", "off"]] = Field(
        default_factory=dict,
        description="Per reason code: 'error' rejects, 'warning' lists, 'off' skips.")
    price_tolerance: Tolerance = Field(default_factory=Tolerance,
                                       description="Default unit-price tolerance (none).")
    customer_tolerances: dict[str, Tolerance] = Field(
        default_factory=dict, description="Per customer_id, overrides price_tolerance.")
    vat_rates: dict[str, list[Decimal]] = Field(
        default_factory=lambda: {"FR": [Decimal(r) for r in ("20", "10", "5.5", "2.1", "0")]},
        description="VAT rates (percent) allowed per seller country.")
    limits: Limits = Field(default_factory=Limits,
                           description="Plausibility limits on amounts, texts and dates.")


FormatName = str
"""An e-invoice format customers can be sent: a name in ``einvoice.registry``."""


class EdiSettings(BaseModel):
    """Electronic formats sent to EDI and Peppol customers."""

    model_config = ConfigDict(extra="forbid")

    sender_gln: str = Field(default="3012345000000", pattern=r"^\d{13}$",
                            description="The seller's GLN in EDI interchanges (UNB, NAD+SU).")
    formats: dict[str, list[FormatName]] = Field(
        default_factory=lambda: {"edi": ["edifact"], "peppol": ["ubl"]},
        description="Formats per channel.")
    customers: dict[str, list[FormatName]] = Field(
        default_factory=dict, description="Per customer_id, overrides the channel's formats.")

    @field_validator("formats")
    @classmethod
    def _known_channels(cls, value: dict[str, list[FormatName]]
                        ) -> dict[str, list[FormatName]]:
        unknown = sorted(set(value) - set(CHANNELS))
        if unknown:
            raise ValueError(f"not channels: {unknown} (channels: {', '.join(CHANNELS)})")
        return value

    @field_validator("formats", "customers")
    @classmethod
    def _known_formats(cls, value: dict[str, list[FormatName]]
                       ) -> dict[str, list[FormatName]]:
        from pipeline.einvoice.registry import selectable  # its formats import this module

        known = selectable()
        unknown = sorted({name for names in value.values() for name in names} - set(known))
        if unknown:
            raise ValueError(f"unknown e-invoice formats {unknown} (formats: "
                             f"{', '.join(known)})")
        return value

    def formats_for(self, channel: str, customer_id: str) -> list[FormatName]:
        """The formats one customer receives."""
        return self.customers.get(customer_id, self.formats.get(channel, []))


class SmtpSettings(BaseModel):
    """The SMTP relay; with no host, the email channel writes ``.eml`` files to the outbox."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(default=None, description="Relay host; unset: outbox transport.")
    port: int = Field(default=587, ge=1, le=65535, description="Relay port (465 implicit TLS).")
    starttls: bool = Field(default=True, description="Upgrade with STARTTLS (false: plain "
                                                     "local relay).")
    implicit_tls: bool = Field(default=False, description="TLS from the first byte (SMTPS).")
    username: str | None = Field(default=None, description="AUTH user.")
    password: SecretStr | None = Field(default=None,
                                       description="AUTH password: environment only.")
    timeout_s: float = Field(default=30, gt=0, description="Socket timeout per command.")
    rate_per_s: float = Field(default=0, ge=0,
                              description="Most messages per second (0: as fast as the relay).")
    parallel_batches: int = Field(
        default=2, ge=1, le=64,
        description="Batches sending to the relay at once, across every process and machine "
                    "of a run (the Prefect global concurrency limit smtp-relay).")
    retries: int = Field(default=5, ge=0, le=50,
                         description="Retries of a 4xx answer or a dropped connection.")
    backoff_s: float = Field(default=1.0, ge=0, description="First retry delay, doubling.")
    cc: list[str] = Field(default_factory=list, description="Copied on every invoice email.")
    bcc: str | None = Field(default=None, description="Blind copy, e.g. the AR mailbox.")
    xml_customers: list[str] = Field(
        default_factory=list,
        description="customer_ids whose emails also carry the Factur-X XML as a file.")


class SftpPartner(BaseModel):
    """One trading partner's (or the print house's) SFTP drop."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Server host.")
    port: int = Field(default=22, ge=1, le=65535, description="Server port.")
    username: str = Field(description="Login.")
    password: SecretStr | None = Field(
        default=None, description="Password: INVOICES_SFTP__<PARTNER>__PASSWORD only.")
    key_file: Path | None = Field(default=None, description="Private key file.")
    folder: str = Field(default=".", description="Folder the files go to.")
    known_hosts: Path = Field(description="known_hosts file the server's key must be in.")


class DeliverySettings(BaseModel):
    """Which transport each channel uses, and what happens around delivery."""

    model_config = ConfigDict(extra="forbid")

    transports: dict[str, Literal["outbox", "smtp", "sftp", "platform"]] = Field(
        default_factory=dict,
        description="Per channel; unset: smtp for email when [smtp] host is set, sftp for "
                    "edi/peppol partners and print when [sftp.<partner>] is set, else outbox.")
    print_partner: str = Field(default="print",
                               description="The [sftp.<name>] of the print house.")
    fallback_to_print: bool = Field(
        default=False, description="An email refused for good (5xx) goes to print instead.")
    wait_for_other_runs_s: float = Field(
        default=600, ge=0,
        description="How long a run waits for deliveries another live run has started.")
    batch_retries: int = Field(
        default=2, ge=0, le=10,
        description="Times a batch whose failures were all transient is tried again.")
    batch_retry_delays_s: list[float] = Field(
        default=[30, 120], min_length=1,
        description="Waits before each batch retry (the last one repeats).")


class ArchiveSettings(BaseModel):
    """Where artifacts are archived; unset means ``<home>/archive``."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None,
                            description="A local folder, or s3://bucket/prefix.")
    endpoint_url: str | None = Field(
        default=None, description="An S3-compatible store's endpoint (MinIO, Ceph, Scaleway, "
                                  "OVH); unset means AWS. Credentials and region come from "
                                  "the AWS chain (environment, profile, instance role).")
    upload_workers: int = Field(default=16, ge=1, le=256,
                                description="Uploads in flight at once.")
    retention_years: int | None = Field(
        default=None, ge=1, le=100,
        description="S3 Object Lock retention (compliance mode) of archived invoices and "
                    "deliveries; the bucket must have Object Lock enabled.")
    conditional_writes: bool = Field(
        default=True, description="Write with If-None-Match: * so the store refuses to "
                                  "overwrite; false for stores that reject it (a HEAD "
                                  "precedes each write instead).")


class PlatformSettings(BaseModel):
    """The accredited platform (PA) of the French 2026 reform, through the AFNOR XP Z12-013
    Flow and Directory APIs; unset: no invoice is routed to a platform."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="Base URL of the PA's Flow API.")
    directory_url: str | None = Field(
        default=None, description="Base URL of its Directory API; unset: the Flow API's.")
    token_url: str | None = Field(default=None,
                                  description="OAuth2 token URL (client credentials).")
    client_id: str | None = Field(default=None, description="OAuth2 client id.")
    client_secret: SecretStr | None = Field(
        default=None, description="OAuth2 client secret: INVOICES_PA__CLIENT_SECRET only.")
    timeout_s: float = Field(default=30, gt=0, description="Per request.")
    retries: int = Field(default=3, ge=0, le=20,
                         description="Times a throttled (429) or unavailable (503) call is "
                                     "tried again, after the PA's Retry-After.")
    french_b2b: bool = Field(
        default=True, description="Route every invoice to a French buyer with a SIREN to the "
                                  "PA, whatever its customer's channel (the reform's rule); "
                                  "false: only customers whose channel is 'pa'.")

    @property
    def configured(self) -> bool:
        """A platform to deposit on is set."""
        return bool(self.url)


class DunningLevel(BaseModel):
    """One step of the dunning policy."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["reminder", "firm_reminder", "formal_notice"] = Field(
        description="The letter's template (templates/dunning/<lang>/<name>.html).")
    days: int = Field(ge=1, le=3650, description="Days past the due date that start it.")
    channel: Literal["email", "print"] = Field(
        description="How it goes out: email, or print (a letter by post).")


class DunningSettings(BaseModel):
    """Who gets which reminder when (the French "relance" policy)."""

    model_config = ConfigDict(extra="forbid")

    levels: list[DunningLevel] = Field(default_factory=lambda: [
        DunningLevel(name="reminder", days=7, channel="email"),
        DunningLevel(name="firm_reminder", days=20, channel="email"),
        DunningLevel(name="formal_notice", days=45, channel="print")],
        description="In order of days; an invoice gets each level once.")
    minimum_amount: Decimal = Field(
        default=Decimal("50.00"), ge=0,
        description="A customer owing less than this past due gets no letter (EUR).")
    excluded_customers: list[str] = Field(
        default_factory=list, description="Customers never dunned (public bodies, key "
                                          "accounts handled by hand).")
    late_interest_rate: Decimal = Field(
        default=Decimal("12.15"), ge=0, le=100,
        description="Late-payment interest, percent a year, counted pro rata temporis on "
                    "the days late (in France: the ECB refinancing rate plus 10 points).")

    @field_validator("levels")
    @classmethod
    def _ordered(cls, levels: list[DunningLevel]) -> list[DunningLevel]:
        if not levels:
            raise ValueError("at least one level")
        days = [level.days for level in levels]
        if days != sorted(set(days)):
            raise ValueError(f"levels must have increasing days, not {days}")
        return levels


class ReceivablesSettings(BaseModel):
    """Matching payments and following up what is owed."""

    model_config = ConfigDict(extra="forbid")

    oldest_first: bool = Field(
        default=False, description="Give a known payer's unplaced money to its earliest due "
                                   "invoices (the last, least certain matching pass).")
    statement_day: int = Field(
        default=1, ge=1, le=28,
        description="Day of the month the customer statements of the month before go out.")
    dunning: DunningSettings = DunningSettings()


class LedgerSettings(BaseModel):
    """The delivery ledger database; unset means SQLite in the home directory."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="SQLAlchemy URL.")


class Settings(BaseSettings):
    """Everything the pipeline can be told, with the embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="INVOICES_", env_nested_delimiter="__",
                                      extra="forbid")

    home: Path = Field(default=Path("var"), description="Directory for every output of a run.")
    seller: SellerSettings
    render: RenderSettings = RenderSettings()
    ingest: IngestSettings = IngestSettings()
    validation: ValidationSettings = ValidationSettings()
    edi: EdiSettings = EdiSettings()
    archive: ArchiveSettings = ArchiveSettings()
    ledger: LedgerSettings = LedgerSettings()
    smtp: SmtpSettings = SmtpSettings()
    sftp: dict[str, SftpPartner] = Field(default_factory=dict,
                                         description="SFTP drops by partner (GLN or name).")
    delivery: DeliverySettings = DeliverySettings()
    pa: PlatformSettings = PlatformSettings()
    receivables: ReceivablesSettings = ReceivablesSettings()

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def ledger_url(self) -> str:
        """The SQLAlchemy URL of the delivery ledger."""
        return self.ledger.url or f"sqlite:///{self.home / 'ledger.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files: list[Path] = [DEFAULT_CONFIG]
        if user_file := os.environ.get("INVOICES_CONFIG"):
            files.append(Path(user_file))
        # Later files take priority in TomlConfigSettingsSource's deep merge.
        return (init_settings, env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=files))

    def as_plain_data(self) -> dict[str, Any]:
        """The settings as JSON-ready data, secrets left out.

        Tasks receive settings as data (they may run in another process or on another
        machine, and the orchestrator stores task inputs in its database); each process
        takes the secrets from its own environment when it rebuilds them with
        ``Settings(**data)``.
        """
        data = _without_secrets(self, self.model_dump(mode="json"))
        if self.ledger.url:  # a database password in the URL stays here too (PGPASSWORD)
            import sqlalchemy as sa

            url = sa.make_url(self.ledger.url)
            data["ledger"]["url"] = url._replace(password=None).render_as_string(
                hide_password=False) if url.password else self.ledger.url
        return data


def _without_secrets(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            del data[name]
        elif isinstance(value, BaseModel):
            _without_secrets(value, data[name])
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    _without_secrets(item, data[name][key])
    return data
