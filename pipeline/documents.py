"""Accepted frames -> InvoiceDocument: the only render-ready model.

Documents are plain frozen dataclasses of str, Decimal and date, so they
pickle cheaply to render workers and templates never see a DataFrame.
Amounts are computed here, once, through ``money``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import polars as pl

from pipeline import money
from pipeline.ingest import ExtractBundle
from pipeline.settings import SellerSettings

__all__ = ["Party", "Line", "Address", "VatRow", "InvoiceDocument", "build_documents"]


@dataclass(frozen=True)
class Party:
    """Seller or buyer identity as printed."""

    name: str
    address_line1: str
    address_line2: str | None
    postcode: str
    city: str
    country: str
    siren: str | None
    vat_id: str | None


@dataclass(frozen=True)
class Line:
    """One invoice line with its net amount."""

    line_no: int
    sku: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    vat_rate: Decimal
    vat_category: str
    net: Decimal
    po_line_no: int | None
    delivery_note_number: str | None
    item_nature: str
    """``goods`` or ``services`` (the extract's, else the seller's default)."""
    vat_exemption_reason: str | None


@dataclass(frozen=True)
class Address:
    """A delivery address (EN 16931 BG-15)."""

    line1: str
    postcode: str
    city: str
    country: str


@dataclass(frozen=True)
class VatRow:
    """VAT breakdown for one category and rate (EN 16931 BG-23)."""

    category: str
    rate: Decimal
    base: Decimal
    vat: Decimal
    exemption_reason: str | None = None
    """Why no VAT is due (text or VATEX code), for every category but S."""


@dataclass(frozen=True)
class InvoiceDocument:
    """Everything a template, a channel and the archive need about one invoice."""

    number: str
    invoice_type: str
    customer_id: str
    issue_date: date
    delivery_date: date | None
    due_date: date
    currency: str
    po_number: str | None
    delivery_notes: tuple[str, ...]
    credited_invoice_number: str | None
    credited_issue_date: date | None
    seller: Party
    seller_legal: SellerSettings
    buyer: Party
    channel: str
    email: str | None
    gln: str | None
    peppol_id: str | None
    language: str
    brand: str | None
    payment_terms_days: int
    lines: tuple[Line, ...]
    vat_breakdown: tuple[VatRow, ...]
    total_net: Decimal
    total_vat: Decimal
    total_gross: Decimal
    ship_to: Address | None = None
    """Where the goods or services went, when not at the buyer's address."""

    @property
    def is_credit_note(self) -> bool:
        """Credit notes use their own template and wording."""
        return self.invoice_type == "credit_note"

    @property
    def operation(self) -> str:
        """The category of the operation (2026 reform): ``goods``, ``services`` or ``mixed``."""
        natures = {ln.item_nature for ln in self.lines}
        return natures.pop() if len(natures) == 1 else "mixed"

    @property
    def vat_on_debits(self) -> bool:
        """The seller's option for VAT on debits applies to services only (art. 269-2-c CGI)."""
        return self.seller_legal.vat_on_debits and self.operation != "goods"


def _seller_party(seller: SellerSettings) -> Party:
    return Party(seller.legal_name, seller.address_line1, None, seller.postcode, seller.city,
                 seller.country, seller.siren, seller.vat_id)


_SHIP_TO = ("ship_to_address_line1", "ship_to_postcode", "ship_to_city", "ship_to_country")


def _ship_to(row: dict[str, object], buyer: Party) -> Address | None:
    """The delivery address when it is given and is not the buyer's own."""
    values = [row[c] for c in _SHIP_TO]
    if not all(values):
        return None
    address = Address(*(str(v) for v in values))
    same = (address.line1.casefold(), address.postcode.replace(" ", ""), address.country) == (
        buyer.address_line1.casefold(), buyer.postcode.replace(" ", ""), buyer.country)
    return None if same else address


def _reasons(lines: Sequence[Line]) -> dict[tuple[str, Decimal], str]:
    """Per (category, rate), the exemption reasons of its lines, each once, in line order."""
    found: dict[tuple[str, Decimal], list[str]] = {}
    for ln in lines:
        if ln.vat_exemption_reason:
            reasons = found.setdefault((ln.vat_category, ln.vat_rate), [])
            if ln.vat_exemption_reason not in reasons:
                reasons.append(ln.vat_exemption_reason)
    return {key: "; ".join(reasons) for key, reasons in found.items()}


def build_documents(bundle: ExtractBundle, numbers: Sequence[str], seller: SellerSettings,
                    earlier_issue_dates: Mapping[str, date] | None = None
                    ) -> list[InvoiceDocument]:
    """Build the documents of the given (accepted) invoices, in the given order.

    Args:
        bundle: the ingested extract.
        numbers: invoice numbers, unique; typically one batch.
        seller: the issuing company from settings.
        earlier_issue_dates: issue dates of invoices billed by earlier runs, for credit
            notes correcting one that is not in this extract (BT-26).
    """
    wanted = pl.Series("invoice_number", list(numbers), dtype=pl.String).implode()
    headers = bundle.invoices.filter(pl.col("invoice_number").is_in(wanted)).join(
        bundle.customers.rename({"country": "buyer_country"}), on="customer_id", how="left")
    lines = bundle.invoice_lines.filter(pl.col("invoice_number").is_in(wanted)).sort(
        "invoice_number", "line_no")
    used_notes = (lines.select("invoice_number", "delivery_note_number").drop_nulls()
                  .join(bundle.delivery_notes, on="delivery_note_number")
                  .sort("invoice_number", "delivery_note_number"))
    dn_facts = used_notes.group_by("invoice_number").agg(
        pl.col("delivery_date").max().alias("dn_date"),
        # the first delivery note that names a delivery address
        *(pl.col(c).filter(pl.col("ship_to_address_line1").is_not_null()).first()
          .alias(f"dn_{c}") for c in _SHIP_TO))
    headers = headers.join(dn_facts, on="invoice_number", how="left").with_columns(
        # a delivery address is taken whole, from the invoice or else from its delivery notes
        pl.when(pl.col("ship_to_address_line1").is_not_null())
        .then(pl.struct(*_SHIP_TO)).otherwise(pl.struct(
            *(pl.col(f"dn_{c}").alias(c) for c in _SHIP_TO))).alias("ship_to"))
    credited = bundle.invoices.select("invoice_number", "issue_date")
    issued = dict(earlier_issue_dates or {})
    issued.update(zip(credited["invoice_number"], credited["issue_date"], strict=True))

    lines_of: dict[str, list[Line]] = {}
    for row in lines.iter_rows(named=True):
        lines_of.setdefault(row["invoice_number"], []).append(Line(
            line_no=row["line_no"], sku=row["sku"], description=row["description"],
            quantity=row["quantity"], unit=row["unit"], unit_price=row["unit_price"],
            vat_rate=row["vat_rate"], vat_category=row["vat_category"],
            net=money.line_net(row["quantity"], row["unit_price"]),
            po_line_no=row["po_line_no"], delivery_note_number=row["delivery_note_number"],
            item_nature=row["item_nature"] or seller.default_item_nature,
            vat_exemption_reason=row["vat_exemption_reason"]))

    seller_party = _seller_party(seller)
    by_number = {}
    for h in headers.iter_rows(named=True):
        doc_lines = tuple(lines_of.get(h["invoice_number"], ()))
        reasons = _reasons(doc_lines)
        breakdown = tuple(VatRow(cat, rate, base, vat, reasons.get((cat, rate)))
                          for cat, rate, base, vat in money.vat_breakdown(
                              (ln.vat_category, ln.vat_rate, ln.net) for ln in doc_lines))
        total_net = sum((ln.net for ln in doc_lines), Decimal("0.00"))
        total_vat = sum((row.vat for row in breakdown), Decimal("0.00"))
        buyer = Party(h["legal_name"], h["address_line1"], h["address_line2"], h["postcode"],
                      h["city"], h["buyer_country"], h["siren"], h["vat_id"])
        by_number[h["invoice_number"]] = InvoiceDocument(
            number=h["invoice_number"], invoice_type=h["invoice_type"],
            customer_id=h["customer_id"], issue_date=h["issue_date"],
            delivery_date=h["delivery_date"] or h["dn_date"], due_date=h["due_date"],
            currency=h["currency"], po_number=h["po_number"],
            delivery_notes=tuple(dict.fromkeys(
                ln.delivery_note_number for ln in doc_lines if ln.delivery_note_number)),
            credited_invoice_number=h["credited_invoice_number"],
            credited_issue_date=issued.get(h["credited_invoice_number"] or ""),
            seller=seller_party, seller_legal=seller, buyer=buyer,
            channel=h["channel"], email=h["email"], gln=h["gln"], peppol_id=h["peppol_id"],
            language=h["language"], brand=h["brand"],
            payment_terms_days=h["payment_terms_days"], lines=doc_lines,
            vat_breakdown=breakdown, total_net=total_net, total_vat=total_vat,
            total_gross=total_net + total_vat, ship_to=_ship_to(h["ship_to"], buyer))
    return [by_number[n] for n in numbers]
