"""THE column names and dtypes: the extract contract, rejections and the archive index.

The extract tables follow ``EXTRACT_FORMAT.md`` exactly. ``required`` means
"never null" and is checked at ingest; requirements that depend on other
values (SIREN for French buyers, email for email customers...) are validation
rules, because a row breaking them is a rejected invoice, not an unusable file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from pipeline import money

__all__ = ["Column", "TABLES", "TABLE_NAMES", "polars_schema", "REJECTIONS", "INDEX", "ARTIFACTS",
           "BILLED_LINES", "IDENTIFYING",
           "Kind", "CHANNELS", "INVOICE_TYPES", "ITEM_NATURES"]

Kind = Literal["string", "int", "date", "amount", "unit_price", "quantity", "rate"]

CHANNELS = ("email", "edi", "print", "peppol", "pa")
INVOICE_TYPES = ("invoice", "credit_note")
ITEM_NATURES = ("goods", "services")

_DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "date": pl.Date(),
    "amount": money.AMOUNT,
    "unit_price": money.UNIT_PRICE,
    "quantity": money.QUANTITY,
    "rate": money.RATE,
}


@dataclass(frozen=True)
class Column:
    """One column of the contract."""

    name: str
    kind: Kind
    required: bool
    meaning: str = ""
    example: str = ""

    @property
    def dtype(self) -> pl.DataType:
        """The canonical Polars dtype every reader casts to."""
        return _DTYPES[self.kind]


def _c(name: str, kind: Kind, required: bool, meaning: str = "", example: str = "") -> Column:
    return Column(name, kind, required, meaning, example)


TABLES: dict[str, tuple[Column, ...]] = {
    "customers": (
        _c("customer_id", "string", True, "ERP customer key", "C00042"),
        _c("legal_name", "string", True, "registered name", "Boulangerie Martin SARL"),
        _c("siren", "string", False, "9-digit SIREN, required for FR buyers", "732829320"),
        _c("vat_id", "string", False, "intra-EU VAT number", "FR44732829320"),
        _c("address_line1", "string", True, "street address", "4 rue Victor Hugo"),
        _c("address_line2", "string", False, "complement", "Bâtiment B"),
        _c("postcode", "string", True, "postcode", "69002"),
        _c("city", "string", True, "city", "Lyon"),
        _c("country", "string", True, "ISO 3166-1 alpha-2", "FR"),
        _c("email", "string", False, "invoice recipients, comma-separated; required for "
           "channel email", "compta@martin.example"),
        _c("channel", "string", True, "email, edi, print or peppol", "email"),
        _c("gln", "string", False, "13-digit GLN; required for channel edi", "3012345000019"),
        _c("peppol_id", "string", False, "scheme:identifier; required for channel peppol",
           "0009:73282932000074"),
        _c("language", "string", True, "fr, en or de", "fr"),
        _c("payment_terms_days", "int", True, "days from issue date to due date", "30"),
        _c("brand", "string", False, "template brand override", "atelier"),
    ),
    "invoices": (
        _c("invoice_number", "string", True, "unique, one sequence per series", "FA2026-000123"),
        _c("invoice_type", "string", True, "invoice or credit_note", "invoice"),
        _c("customer_id", "string", True, "-> customers", "C00042"),
        _c("issue_date", "date", True, "issue date", "2026-11-26"),
        _c("delivery_date", "date", False, "date of supply (defaults to the delivery notes')",
           "2026-11-24"),
        _c("due_date", "date", True, "due date", "2026-12-26"),
        _c("currency", "string", True, "ISO 4217", "EUR"),
        _c("po_number", "string", False, "-> purchase_orders; required for invoices",
           "PO-C00042-0007"),
        _c("credited_invoice_number", "string", False,
           "the invoice a credit note corrects; required for credit notes", "FA2026-000101"),
        _c("total_net", "amount", False, "if given, must equal the recomputed total", "1250.00"),
        _c("total_vat", "amount", False, "idem", "250.00"),
        _c("total_gross", "amount", False, "idem", "1500.00"),
        _c("ship_to_address_line1", "string", False, "where the goods or services were "
           "delivered, if it differs from the customer's address (EN 16931 BG-15); defaults to "
           "the delivery notes'", "Zone artisanale, lot 7"),
        _c("ship_to_postcode", "string", False, "idem", "69800"),
        _c("ship_to_city", "string", False, "idem", "Saint-Priest"),
        _c("ship_to_country", "string", False, "idem", "FR"),
    ),
    "invoice_lines": (
        _c("invoice_number", "string", True, "-> invoices", "FA2026-000123"),
        _c("line_no", "int", True, "1..n within the invoice", "1"),
        _c("sku", "string", True, "article reference", "ART-1042"),
        _c("description", "string", True, "line text", "Farine T65 – sac 25 kg"),
        _c("quantity", "quantity", True, "negative only on credit notes", "12.000"),
        _c("unit", "string", True, "UN/ECE Rec 20 code", "C62"),
        _c("unit_price", "unit_price", True, "net unit price excluding VAT", "18.5000"),
        _c("vat_rate", "rate", True, "percent", "5.50"),
        _c("vat_category", "string", True, "EN 16931 code S, Z, E, AE, K, G, O", "S"),
        _c("vat_exemption_reason", "string", False, "when category is not S", "VATEX-EU-IC"),
        _c("po_line_no", "int", False, "-> po_lines of the invoice's PO; required for invoices",
           "1"),
        _c("delivery_note_number", "string", False,
           "-> delivery_notes; required for invoices", "BL-0000123"),
        _c("item_nature", "string", False, "goods or services: the billing mode (BT-23) and "
           "the operation category printed; default [seller] default_item_nature", "goods"),
    ),
    "purchase_orders": (
        _c("po_number", "string", True, "the customer's order reference", "PO-C00042-0007"),
        _c("customer_id", "string", True, "-> customers", "C00042"),
        _c("order_date", "date", True, "order date", "2026-11-02"),
        _c("status", "string", True, "open or closed", "open"),
        _c("currency", "string", True, "ISO 4217", "EUR"),
    ),
    "po_lines": (
        _c("po_number", "string", True, "-> purchase_orders", "PO-C00042-0007"),
        _c("po_line_no", "int", True, "line within the order", "1"),
        _c("sku", "string", True, "article reference", "ART-1042"),
        _c("quantity_ordered", "quantity", True, "ordered quantity", "12.000"),
        _c("unit_price", "unit_price", True, "agreed net unit price", "18.5000"),
    ),
    "delivery_notes": (
        _c("delivery_note_number", "string", True, "delivery note id", "BL-0000123"),
        _c("po_number", "string", True, "-> purchase_orders", "PO-C00042-0007"),
        _c("delivery_date", "date", True, "date delivered", "2026-11-24"),
        _c("ship_to_address_line1", "string", False, "delivery address if it differs",
           "Zone artisanale, lot 7"),
        _c("ship_to_postcode", "string", False, "idem", "69800"),
        _c("ship_to_city", "string", False, "idem", "Saint-Priest"),
        _c("ship_to_country", "string", False, "idem", "FR"),
    ),
    "delivery_note_lines": (
        _c("delivery_note_number", "string", True, "-> delivery_notes", "BL-0000123"),
        _c("po_line_no", "int", True, "-> po_lines", "1"),
        _c("sku", "string", True, "article reference", "ART-1042"),
        _c("quantity_delivered", "quantity", True, "delivered quantity", "12.000"),
    ),
}

TABLE_NAMES = tuple(TABLES)

# A null here leaves a row that belongs to no invoice: the extract is refused at ingest.
# A null in any other required column rejects only the invoices relying on that row
# (validation rule REQUIRED_VALUE_MISSING), so one bad row never stops the night.
IDENTIFYING = {"invoices": ("invoice_number",), "invoice_lines": ("invoice_number",)}


def polars_schema(table: str) -> pl.Schema:
    """The canonical Polars schema of one extract table."""
    return pl.Schema({c.name: c.dtype for c in TABLES[table]})


# One row per finding of a validation rule (several per invoice possible).
REJECTIONS = pl.Schema({
    "invoice_number": pl.String(),
    "customer_id": pl.String(),
    "line_no": pl.Int64(),
    "code": pl.String(),
    "severity": pl.String(),
    "detail": pl.String(),
    "expected": pl.String(),
    "actual": pl.String(),
    "po_number": pl.String(),
    "delivery_note_number": pl.String(),
    "amount_at_stake": money.AMOUNT,
})

# One row per delivered invoice and channel; ``status`` is how it went out (sent, deposited,
# written).
INDEX = pl.Schema({
    "invoice_number": pl.String(),
    "customer_id": pl.String(),
    "invoice_type": pl.String(),
    "issue_date": pl.Date(),
    "due_date": pl.Date(),
    "total_net": money.AMOUNT,
    "total_vat": money.AMOUNT,
    "total_gross": money.AMOUNT,
    "currency": pl.String(),
    "credited_invoice_number": pl.String(),
    "channel": pl.String(),
    "status": pl.String(),
    "storage_key": pl.String(),
    "sha256": pl.String(),
    "bytes": pl.Int64(),
    "delivered_keys": pl.List(pl.String()),
    "period": pl.String(),
    "run_id": pl.String(),
})

# One row per archived object (a PDF, a delivered file), for ``invoices archive verify``.
ARTIFACTS = pl.Schema({
    "storage_key": pl.String(),
    "sha256": pl.String(),
    "bytes": pl.Int64(),
    "kind": pl.String(),
    "invoice_numbers": pl.List(pl.String()),
    "period": pl.String(),
    "run_id": pl.String(),
})

# One row per archived invoice line that billed a PO line (for cumulative quantity checks).
BILLED_LINES = pl.Schema({
    "invoice_number": pl.String(),
    "line_no": pl.Int64(),
    "po_number": pl.String(),
    "po_line_no": pl.Int64(),
    "quantity": money.QUANTITY,
})
