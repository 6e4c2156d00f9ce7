"""Accepted frames -> InvoiceDocument: the only render-ready model.

Documents are plain frozen dataclasses of str, Decimal and date, so they
pickle cheaply to render workers and templates never see a DataFrame.
Amounts are computed here, once, through ``money``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import polars as pl

from pipeline import money
from pipeline.ingest import ExtractBundle
from pipeline.settings import SellerSettings

__all__ = ["Party", "Line", "VatRow", "InvoiceDocument", "build_documents"]


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


@dataclass(frozen=True)
class VatRow:
    """VAT breakdown for one category and rate (EN 16931 BG-23)."""

    category: str
    rate: Decimal
    base: Decimal
    vat: Decimal


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

    @property
    def is_credit_note(self) -> bool:
        """Credit notes use their own template and wording."""
        return self.invoice_type == "credit_note"


def _seller_party(seller: SellerSettings) -> Party:
    return Party(seller.legal_name, seller.address_line1, None, seller.postcode, seller.city,
                 seller.country, seller.siren, seller.vat_id)


def build_documents(bundle: ExtractBundle, numbers: Sequence[str],
                    seller: SellerSettings) -> list[InvoiceDocument]:
    """Build the documents of the given (accepted) invoices, in the given order.

    Args:
        bundle: the ingested extract.
        numbers: invoice numbers, unique; typically one batch.
        seller: the issuing company from settings.
    """
    wanted = pl.Series("invoice_number", list(numbers), dtype=pl.String).implode()
    headers = bundle.invoices.filter(pl.col("invoice_number").is_in(wanted)).join(
        bundle.customers.rename({"country": "buyer_country"}), on="customer_id", how="left")
    lines = bundle.invoice_lines.filter(pl.col("invoice_number").is_in(wanted)).sort(
        "invoice_number", "line_no")
    dn_dates = (lines.select("invoice_number", "delivery_note_number").drop_nulls()
                .join(bundle.delivery_notes.select("delivery_note_number", "delivery_date"),
                      on="delivery_note_number")
                .group_by("invoice_number").agg(dn_date=pl.col("delivery_date").max()))
    headers = headers.join(dn_dates, on="invoice_number", how="left")

    lines_of: dict[str, list[Line]] = {}
    for row in lines.iter_rows(named=True):
        lines_of.setdefault(row["invoice_number"], []).append(Line(
            line_no=row["line_no"], sku=row["sku"], description=row["description"],
            quantity=row["quantity"], unit=row["unit"], unit_price=row["unit_price"],
            vat_rate=row["vat_rate"], vat_category=row["vat_category"],
            net=money.line_net(row["quantity"], row["unit_price"]),
            po_line_no=row["po_line_no"], delivery_note_number=row["delivery_note_number"]))

    seller_party = _seller_party(seller)
    by_number = {}
    for h in headers.iter_rows(named=True):
        doc_lines = tuple(lines_of.get(h["invoice_number"], ()))
        breakdown = tuple(VatRow(*row) for row in money.vat_breakdown(
            (ln.vat_category, ln.vat_rate, ln.net) for ln in doc_lines))
        total_net = sum((ln.net for ln in doc_lines), Decimal("0.00"))
        total_vat = sum((row.vat for row in breakdown), Decimal("0.00"))
        by_number[h["invoice_number"]] = InvoiceDocument(
            number=h["invoice_number"], invoice_type=h["invoice_type"],
            customer_id=h["customer_id"], issue_date=h["issue_date"],
            delivery_date=h["delivery_date"] or h["dn_date"], due_date=h["due_date"],
            currency=h["currency"], po_number=h["po_number"],
            delivery_notes=tuple(dict.fromkeys(
                ln.delivery_note_number for ln in doc_lines if ln.delivery_note_number)),
            credited_invoice_number=h["credited_invoice_number"],
            seller=seller_party, seller_legal=seller,
            buyer=Party(h["legal_name"], h["address_line1"], h["address_line2"], h["postcode"],
                        h["city"], h["buyer_country"], h["siren"], h["vat_id"]),
            channel=h["channel"], email=h["email"], gln=h["gln"], peppol_id=h["peppol_id"],
            language=h["language"], brand=h["brand"],
            payment_terms_days=h["payment_terms_days"], lines=doc_lines,
            vat_breakdown=breakdown, total_net=total_net, total_vat=total_vat,
            total_gross=total_net + total_vat)
    return [by_number[n] for n in numbers]
