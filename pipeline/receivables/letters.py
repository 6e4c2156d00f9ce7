"""Dunning letters and customer statements as HTML and PDF.

The same machinery as the invoices (``pipeline.render``): the templates' override chain
(``brands/<brand>/``, ``customers/<customer_id>/``, then the root), the sandboxed,
autoescaping, strict Jinja environment with the language's message catalogue and Babel
filters, the asset-only URL fetcher, the shipped fonts and ``assets/invoice.css`` for the
letterhead. A letter at level ``reminder`` in French is ``dunning/fr/reminder.html``; a
statement is ``dunning/<lang>/statement.html`` (``templates/dunning/README.md``).

The same letter, customer and settings give the same PDF bytes in any process, as
invoices do (``SOURCE_DATE_EPOCH`` fixed, no clock or random in the output), so a letter
stored before a crash is rendered again identically.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError

from pipeline.codes import LANGUAGES, language
from pipeline.documents import Party
from pipeline.errors import PipelineError, RenderError, TemplateError
from pipeline.money import from_cents
from pipeline.receivables.dunning import DunningLetter, DunningLine, late_interest, letter_id
from pipeline.receivables.statements import CustomerStatement, StatementLine
from pipeline.render.engine import DETERMINISTIC_EPOCH, AssetOnlyFetcher
from pipeline.render.templates import TemplateSet, make_environment, render_template
from pipeline.settings import DunningLevel, SellerSettings, Settings

__all__ = ["Recipient", "LetterRenderer", "render_letter", "template_name",
           "check_letter_templates", "sample_letter", "sample_statement", "SAMPLE_RECIPIENT",
           "PDF_VARIANT"]

PDF_VARIANT = "pdf/a-3b"
"""Letters are archived like invoices: PDF/A-3b (without attachments)."""

_STYLESHEET = "assets/invoice.css"


@dataclass(frozen=True)
class Recipient:
    """The customer a letter or statement is written to."""

    party: Party
    """Name and postal address, printed in the envelope window."""
    language: str
    """``fr``, ``en`` or ``de``; another code is written to in French."""
    brand: str | None = None
    """The template brand override, as for the customer's invoices."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Recipient:
        """A recipient from a row of the extract's ``customers`` table."""
        return cls(party=Party(
            name=row["legal_name"], address_line1=row["address_line1"],
            address_line2=row.get("address_line2"), postcode=row["postcode"],
            city=row["city"], country=row["country"], siren=row.get("siren"),
            vat_id=row.get("vat_id")), language=row["language"], brand=row.get("brand"))


def _seller_party(seller: SellerSettings) -> Party:
    return Party(seller.legal_name, seller.address_line1, None, seller.postcode, seller.city,
                 seller.country, seller.siren, seller.vat_id)


def template_name(letter: DunningLetter | CustomerStatement, lang: str) -> str:
    """The template of a letter (``dunning/<lang>/<level_name>.html``) or a statement
    (``dunning/<lang>/statement.html``)."""
    if isinstance(letter, CustomerStatement):
        return f"dunning/{lang}/statement.html"
    return f"dunning/{lang}/{letter.level_name}.html"


class LetterRenderer:
    """Letters and statements of one templates folder; built once, reused for every letter
    (environments per override chain and language, fonts, stylesheets, image cache)."""

    def __init__(self, templates_dir: Path) -> None:
        os.environ.setdefault("SOURCE_DATE_EPOCH", DETERMINISTIC_EPOCH)
        self.templates = TemplateSet(templates_dir)
        self.fonts = FontConfiguration()
        self.fetcher = AssetOnlyFetcher(self.templates.asset_dirs())
        self.cache: dict[str, object] = {}
        self._envs: dict[tuple[tuple[Path, ...], str], jinja2.Environment] = {}
        self._stylesheets: dict[Path, CSS] = {}

    def _chain(self, customer_id: str, recipient: Recipient) -> tuple[Path, ...]:
        return self.templates.chain(recipient.brand, customer_id)

    def environment(self, customer_id: str, recipient: Recipient, lang: str
                    ) -> jinja2.Environment:
        """The environment of a customer's override chain and a language (cached)."""
        key = (self._chain(customer_id, recipient), lang)
        if key not in self._envs:
            self._envs[key] = make_environment(list(key[0]),
                                               self.templates.translations(lang))
        return self._envs[key]

    def stylesheet(self, customer_id: str, recipient: Recipient) -> Path:
        """``assets/invoice.css`` of the most specific level that has one (the letterhead
        is the invoices')."""
        for directory in self._chain(customer_id, recipient):
            css = directory / _STYLESHEET
            if css.is_file():
                return css
        raise TemplateError(f"no {_STYLESHEET} under {self.templates.root}")

    def html(self, letter: DunningLetter | CustomerStatement, recipient: Recipient,
             seller: SellerSettings, lang: str | None = None) -> str:
        """The HTML of a letter or statement (what a preview shows).

        Args:
            letter: a dunning letter or a customer statement.
            recipient: the customer's name, address, language and brand.
            seller: the issuing company (``Settings().seller``).
            lang: the language to write in; the recipient's by default.
        """
        lang = language(lang or recipient.language)
        env = self.environment(letter.customer_id, recipient, lang)
        name = "statement" if isinstance(letter, CustomerStatement) else "letter"
        return render_template(env, template_name(letter, lang), **{name: letter},
                               customer=recipient.party, seller=_seller_party(seller),
                               seller_legal=seller, lang=lang)

    def render(self, letter: DunningLetter | CustomerStatement, recipient: Recipient,
               seller: SellerSettings, lang: str | None = None) -> bytes:
        """PDF bytes of a letter or statement; the same input always gives the same bytes.

        Args:
            letter: a dunning letter or a customer statement.
            recipient: the customer's name, address, language and brand.
            seller: the issuing company (``Settings().seller``).
            lang: the language to write in; the recipient's by default.
        """
        html = self.html(letter, recipient, seller, lang)
        css = self.stylesheet(letter.customer_id, recipient)
        if css not in self._stylesheets:
            self._stylesheets[css] = CSS(filename=str(css), url_fetcher=self.fetcher,
                                         font_config=self.fonts)
        ident = (letter.statement_id if isinstance(letter, CustomerStatement)
                 else letter.letter_id)
        try:
            document = HTML(string=html, base_url=css.parent.as_uri() + "/",
                            url_fetcher=self.fetcher).render(
                stylesheets=[self._stylesheets[css]], font_config=self.fonts,
                cache=self.cache)
            return document.write_pdf(pdf_variant=PDF_VARIANT)
        except FatalURLFetchingError as exc:
            raise RenderError(f"letter {ident}: {exc.__cause__ or exc}") from None


@functools.lru_cache(maxsize=4)
def _renderer(templates_dir: Path) -> LetterRenderer:
    return LetterRenderer(templates_dir)


def render_letter(letter: DunningLetter | CustomerStatement, customer: Recipient,
                  settings: Settings, lang: str | None = None) -> bytes:
    """The PDF of a letter or statement (one renderer per templates folder and process).

    Args:
        letter: a dunning letter or a customer statement.
        customer: the customer's name, address, language and brand.
        settings: the templates folder (``render.templates_dir``) and the seller.
        lang: the language to write in; the customer's by default.
    """
    renderer = _renderer(settings.render.templates_dir.resolve())
    return renderer.render(letter, customer, settings.seller, lang)


# --- samples, for `invoices templates check` and previews -------------------------------

SAMPLE_RECIPIENT = Recipient(
    Party("Boulangerie Martin SARL", "4 rue Victor Hugo", "Bâtiment B", "69002", "Lyon", "FR",
          "732829320", "FR44732829320"), "fr")


def sample_letter(level: DunningLevel, number: int = 1, run_date: date = date(2026, 12, 15),
                  customer_id: str = "C00042") -> DunningLetter:
    """A letter at one level of the policy, three invoices late, for previews and checks."""
    rate = Decimal("12.15")
    lines = []
    for i, amount in enumerate((Decimal("1234.50"), Decimal("89.90"), Decimal("12500.00"))):
        due = date(2026, 10, 1 + 10 * i)
        days_late = (run_date - due).days
        lines.append(DunningLine(
            invoice_number=f"FA2026-0001{i + 1}", issue_date=due - timedelta(days=30),
            due_date=due, days_late=days_late, open_amount=amount,
            interest=late_interest(amount, rate, days_late), indemnity=Decimal("40.00")))
    return DunningLetter(
        letter_id=letter_id(number, customer_id, run_date, "EUR"), customer_id=customer_id,
        level=number, level_name=level.name, channel=level.channel, run_date=run_date,
        currency="EUR", interest_rate=rate, lines=tuple(lines),
        records=tuple((line.invoice_number, number) for line in lines))


def sample_statement(customer_id: str = "C00042") -> CustomerStatement:
    """A November statement with each kind of movement, for previews and checks."""
    rows = [(date(2026, 11, 3), "invoice", "FA2026-00031", (), date(2026, 12, 3), 150000),
            (date(2026, 11, 5), "payment", "P-1", ("FA2026-00011",), None, -123450),
            (date(2026, 11, 12), "credit_note", "AV2026-00004", ("FA2026-00031",), None, -20000),
            (date(2026, 11, 20), "payment_return", "P-2", ("FA2026-00012",), None, 8990),
            (date(2026, 11, 24), "invoice", "FA2026-00047", (), date(2026, 12, 24), 48000)]
    balance, lines = 1368440, []
    for day, kind, ref, invoices, due, cents in rows:
        balance += cents
        lines.append(StatementLine(day, kind, ref, invoices, due,  # type: ignore[arg-type]
                                   from_cents(max(cents, 0)),
                                   from_cents(max(-cents, 0)),
                                   from_cents(balance)))
    return CustomerStatement(
        statement_id=f"S-{customer_id}-2026-11-EUR", customer_id=customer_id, currency="EUR",
        period_start=date(2026, 11, 1), period_end=date(2026, 11, 30),
        opening_balance=Decimal("13684.40"), lines=tuple(lines),
        closing_balance=from_cents(balance),
        aged=(("not due", Decimal("1780.00")), ("1-30", Decimal("0.00")),
              ("31-60", Decimal("12539.80")), ("61-90", Decimal("0.00")),
              ("over 90", Decimal("0.00"))))


def _check_variants(templates: Path, settings: Settings
                    ) -> Iterator[tuple[str, DunningLetter | CustomerStatement, Recipient]]:
    """Every letter level and the statement, per language and override level."""
    levels: list[tuple[str, str, str | None]] = [("templates/", "C00042", None)]
    levels += [(f"brands/{p.name}/", "C00042", p.name)
               for p in sorted((templates / "brands").glob("*")) if p.is_dir()]
    levels += [(f"customers/{p.name}/", p.name, None)
               for p in sorted((templates / "customers").glob("*")) if p.is_dir()]
    policy = settings.receivables.dunning.levels
    for where, customer_id, brand in levels:
        for lang in LANGUAGES:
            recipient = Recipient(SAMPLE_RECIPIENT.party, lang, brand)
            for number, level in enumerate(policy, start=1):
                yield (f"{where} dunning {level.name} ({lang})",
                       sample_letter(level, number, customer_id=customer_id), recipient)
            yield (f"{where} statement ({lang})", sample_statement(customer_id), recipient)


def check_letter_templates(templates: Path, settings: Settings) -> tuple[int, list[str]]:
    """Render every dunning letter level and the statement, in every language and override
    level, on sample data; returns (variants checked, problems), as
    ``workshop.check_templates`` does for invoices."""
    renderer = LetterRenderer(templates)
    problems, checked = [], 0
    for label, letter, recipient in _check_variants(templates.resolve(), settings):
        checked += 1
        try:
            renderer.render(letter, recipient, settings.seller)
        except PipelineError as exc:
            problems.append(f"{label}: {exc}")
    return checked, problems
