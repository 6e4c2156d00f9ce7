"""Status 212 Encaissée: telling the platform that a services invoice has been paid.

A French seller that pays VAT on receipts (not on debits) owes the VAT of a services
invoice when the money comes in, and the reform asks it to say so: once such an invoice
deposited on the platform is paid in full, the lifecycle message 212 Encaissée, with the
amount collected per VAT rate, goes to the platform (XP Z12-014; the PPF feeds the VAT
pre-filling from it). What was billed is read from the invoice itself, the Factur-X XML
in the archived PDF: its billing mode (BT-23: S services or M mixed), whether it opted for
VAT on debits (BT-8), its VAT breakdown and its parties.

Each message is deposited exactly once: the journal holds one delivery ``pa-212:<invoice>``
claimed before the deposit, like an invoice's, and a deposit whose answer was lost is left
in doubt and looked up by its tracking id before any second try. An invoice found to need
no 212 (goods, or VAT on debits) is remembered as such, so its PDF is read once, not every
morning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
import sqlalchemy as sa
from lxml import etree

from pipeline import keys
from pipeline.einvoice import cdar
from pipeline.einvoice.facturx import embedded_xml
from pipeline.einvoice.xml_totals import NS
from pipeline.errors import PipelineError
from pipeline.journal import Delivery, Journal
from pipeline.money import from_cents
from pipeline.platform import PlatformAuthError, PlatformRejected, PlatformUnavailable
from pipeline.platform.client import PlatformClient
from pipeline.settings import Settings
from pipeline.storage.base import Storage

__all__ = ["CHANNEL", "Billed", "CollectedReport", "read_billed", "collected_by_rate",
           "send_collected"]

CHANNEL = "pa-212"
PARIS = ZoneInfo("Europe/Paris")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_SETTLEMENT = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
_AGREEMENT = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeAgreement"


_metadata = sa.MetaData()
no_212 = sa.Table(
    "collected_not_due", _metadata,
    sa.Column("invoice_number", sa.String, primary_key=True),
    sa.Column("why", sa.String, nullable=False),
)


@dataclass(frozen=True)
class Billed:
    """What a 212 needs to know of the invoice, as the invoice says it."""

    number: str
    issue_date: date
    type_code: str
    billing_mode: str
    vat_on_debits: bool
    currency: str
    gross_by_rate: tuple[tuple[Decimal, Decimal], ...]
    """(VAT rate, basis + VAT) per rate of the breakdown."""
    seller: cdar.Party
    buyer: cdar.Party

    @property
    def due_on_receipt(self) -> bool:
        """Services (or services and goods) whose VAT is due when paid."""
        return self.billing_mode[:1] in ("S", "M") and not self.vat_on_debits


def _party(root: etree._Element, path: str) -> cdar.Party:
    siren = root.findtext(f"{path}/ram:SpecifiedLegalOrganization/ram:ID", namespaces=NS)
    uri = root.find(f"{path}/ram:URIUniversalCommunication/ram:URIID", NS)
    return cdar.Party(siren, "0002" if siren else None,
                      root.findtext(f"{path}/ram:Name", namespaces=NS),
                      address=uri.text if uri is not None else None,
                      address_scheme=uri.get("schemeID") if uri is not None else None)


def read_billed(xml: bytes) -> Billed:
    """The invoice's number, date, billing mode, VAT option, breakdown and parties.

    Raises:
        ValueError: the XML is not a CII invoice with those.
    """
    root = etree.fromstring(xml, _PARSER)
    number = root.findtext("rsm:ExchangedDocument/ram:ID", namespaces=NS)
    issued = root.findtext("rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString",
                           namespaces={**NS, "udt": "urn:un:unece:uncefact:data:standard:"
                                                    "UnqualifiedDataType:100"})
    if not number or not issued:
        raise ValueError("not a CII invoice: no BT-1 or BT-2")
    by_rate: dict[Decimal, Decimal] = {}
    debits = False
    for tax in root.iterfind(f"{_SETTLEMENT}/ram:ApplicableTradeTax", NS):
        rate = Decimal(tax.findtext("ram:RateApplicablePercent", "0", NS))
        gross = Decimal(tax.findtext("ram:BasisAmount", "0", NS)) + Decimal(
            tax.findtext("ram:CalculatedAmount", "0", NS))
        by_rate[rate] = by_rate.get(rate, Decimal(0)) + gross
        debits = debits or tax.findtext("ram:DueDateTypeCode", namespaces=NS) == "5"
    return Billed(
        number=number, issue_date=datetime.strptime(issued, "%Y%m%d").date(),
        type_code=root.findtext("rsm:ExchangedDocument/ram:TypeCode", "380", NS),
        billing_mode=root.findtext(
            "rsm:ExchangedDocumentContext/ram:BusinessProcessSpecifiedDocumentContextParameter"
            "/ram:ID", "", NS),
        vat_on_debits=debits,
        currency=root.findtext(f"{_SETTLEMENT}/ram:InvoiceCurrencyCode", "EUR", NS),
        gross_by_rate=tuple(sorted(by_rate.items())),
        seller=_party(root, f"{_AGREEMENT}/ram:SellerTradeParty"),
        buyer=_party(root, f"{_AGREEMENT}/ram:BuyerTradeParty"))


def collected_by_rate(billed: Billed, paid: Decimal) -> list[tuple[Decimal, Decimal]]:
    """The money received, split over the VAT rates as the invoice's gross is; the cent
    left by rounding goes to the largest share, so the parts add up to ``paid``."""
    gross = sum((g for _, g in billed.gross_by_rate), Decimal(0))
    if gross <= 0:
        return []
    parts = [(rate, (paid * g / gross).quantize(Decimal("0.01"))) for rate, g in
             billed.gross_by_rate if g > 0]
    largest = max(range(len(parts)), key=lambda i: parts[i][1])
    rate, share = parts[largest]
    parts[largest] = (rate, share + paid - sum(p for _, p in parts))
    return parts


@dataclass
class CollectedReport:
    """What one pass over the paid invoices did."""

    deposited: list[str] = field(default_factory=list)
    already: int = 0
    not_due: int = 0
    """Paid invoices that need no 212 (goods, or VAT on debits)."""
    failed: dict[str, str] = field(default_factory=dict)
    in_doubt: dict[str, str] = field(default_factory=dict)


def _tracking_id(number: str) -> str:
    """At most 36 characters (XP Z12-013), unique per invoice."""
    return f"212-{number}"[:36] if len(number) <= 32 else f"212-{keys.digest(number)[:32]}"


def send_collected(paid: pl.DataFrame, index: pl.DataFrame, storage: Storage,
                   journal: Journal, settings: Settings, client: PlatformClient, run_id: str,
                   now: Callable[[], datetime] = lambda: datetime.now(PARIS),
                   resend_in_doubt: bool = False) -> CollectedReport:
    """Deposit a 212 for every invoice of ``paid`` deposited on the platform that needs one.

    Args:
        paid: invoices paid in full: ``invoice_number``, ``cents`` (received).
        index: the archive index (which invoices went to the platform, and their PDF).
        run_id: the journal's run (``journal.begin_run`` done by the caller).
        resend_in_doubt: look up, then deposit again, what a stopped run left in doubt.
    """
    report = CollectedReport()
    _metadata.create_all(journal.engine)
    with journal.engine.connect() as conn:
        not_due = set(conn.execute(sa.select(no_212.c.invoice_number)).scalars())
    on_platform = index.filter(pl.col("channel") == "pa").unique("invoice_number").select(
        "invoice_number", "storage_key")
    todo = paid.join(on_platform, on="invoice_number").filter(
        ~pl.col("invoice_number").is_in(sorted(not_due)))
    report.not_due = paid.height - paid.filter(
        ~pl.col("invoice_number").is_in(sorted(not_due))).height
    done = journal.delivered_keys(keys.idempotency_key(n, CHANNEL)
                                  for n in todo["invoice_number"])
    for number, cents, pdf_key in todo.select("invoice_number", "cents",
                                              "storage_key").iter_rows():
        key = keys.idempotency_key(number, CHANNEL)
        if key in done:
            report.already += 1
            continue
        try:
            billed = read_billed(embedded_xml(storage.get(pdf_key)))
        except (ValueError, PipelineError, OSError) as exc:
            report.failed[number] = f"the archived invoice {pdf_key} cannot be read: {exc}"
            continue
        if not billed.due_on_receipt:
            report.not_due += 1
            with journal.engine.begin() as conn:
                journal.insert_if_absent(conn, no_212, invoice_number=number, why=(
                    "VAT on debits" if billed.vat_on_debits
                    else f"billing mode {billed.billing_mode}"))
            continue
        status = cdar.seller_status(
            212, invoice_number=number, invoice_date=billed.issue_date, seller=billed.seller,
            buyer=billed.buyer, at=now().replace(microsecond=0, tzinfo=None),
            collected=collected_by_rate(billed, from_cents(cents)),
            currency=billed.currency, invoice_type=billed.type_code)
        xml = cdar.build(status)
        claim = journal.claim_all([Delivery(key, number, CHANNEL, keys.digest(xml.decode()))],
                                  run_id, "platform", resend_in_doubt)[key]
        if claim != "claimed":
            if claim == "delivered":
                report.already += 1
            else:
                report.in_doubt[number] = f"212 {claim}: another run holds it"
            continue
        _deposit(number, xml, key, client, journal, run_id, resend_in_doubt, report)
    return report


def _deposit(number: str, xml: bytes, key: str, client: PlatformClient, journal: Journal,
             run_id: str, look_up_first: bool, report: CollectedReport) -> None:
    """Deposit one 212, first looking for an earlier one when it was left in doubt: the
    platform does not refuse a second flow with the same tracking id."""
    tracking_id = _tracking_id(number)
    if look_up_first:
        try:
            earlier = [f for f in client.find_deposits(tracking_id) if f.ack_status != "Error"]
        except PipelineError as exc:  # cannot tell: depositing could make a second flow
            report.in_doubt[number] = f"212: could not check for an earlier deposit: {exc}"
            journal.finish(key, run_id, "in_doubt", str(exc))
            return
        if earlier:
            journal.finish(key, run_id, "deposited", f"flow {earlier[0].flow_id} (deposited "
                                                     "earlier, found by its tracking id)")
            report.deposited.append(number)
            return
    try:
        flow_id = client.deposit(xml, f"{keys.safe_component(number)}-212.xml", tracking_id,
                                 "CDAR", None, None)
    except PlatformUnavailable as exc:
        if exc.in_doubt:
            report.in_doubt[number] = f"212 may have been deposited: {exc}"
            journal.finish(key, run_id, "in_doubt", str(exc))
        else:
            report.failed[number] = f"212 not deposited: {exc}"
            journal.finish(key, run_id, "failed", str(exc), "transient")
        return
    except (PlatformRejected, PlatformAuthError) as exc:
        report.failed[number] = f"212 refused by the platform: {exc}"
        journal.finish(key, run_id, "failed", str(exc), "terminal")
        return
    journal.finish(key, run_id, "deposited", f"flow {flow_id}")
    report.deposited.append(number)
