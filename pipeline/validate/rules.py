"""The validation rules, first cut: references, three-way match, parties, channels.

Every rule is a Polars query over whole frames; Python-level checks
(python-stdnum) run once per distinct value, never per invoice line.
"""

from __future__ import annotations

import re

import polars as pl
from stdnum import ean
from stdnum.eu import vat
from stdnum.fr import siren

from pipeline.schemas import CHANNELS, INVOICE_TYPES
from pipeline.validate.registry import RuleInput, rule

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


def _valid(values: pl.Series, check: object) -> pl.Series:
    """Apply a python-stdnum ``is_valid`` to distinct values only."""
    distinct = values.drop_nulls().unique()
    good = distinct.filter(distinct.map_elements(check, return_dtype=pl.Boolean))  # type: ignore[arg-type]
    return values.is_in(good.implode())


def valid_email_list(value: str) -> bool:
    """Every comma-separated address is one plain, header-safe address."""
    parts = [p.strip() for p in value.split(",")]
    return bool(parts) and all(_EMAIL.fullmatch(p) for p in parts) and "\n" not in value \
        and "\r" not in value


def _invoices_of(x: RuleInput, customers: pl.DataFrame, detail: pl.Expr) -> pl.DataFrame:
    return x.invoices.join(customers, on="customer_id").select("invoice_number", detail=detail)


def _only_invoices(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(pl.col("invoice_type") == "invoice")


@rule("INVOICE_TYPE_UNKNOWN", "error", "invoice_type is neither 'invoice' nor 'credit_note'.")
def invoice_type_unknown(x: RuleInput) -> pl.DataFrame:
    return x.invoices.filter(~pl.col("invoice_type").is_in(INVOICE_TYPES)).select(
        "invoice_number", detail=pl.format("invoice_type '{}'", "invoice_type"))


@rule("DUPLICATE_NUMBER", "error",
      "The invoice number appears more than once in the extract; every copy is held back.")
def duplicate_number(x: RuleInput) -> pl.DataFrame:
    return (x.invoices.group_by("invoice_number").len().filter(pl.col("len") > 1)
            .select("invoice_number", detail=pl.format("{} invoices share this number", "len")))


@rule("NO_LINES", "error", "The invoice has no lines in invoice_lines.")
def no_lines(x: RuleInput) -> pl.DataFrame:
    return x.invoices.join(x.bundle.invoice_lines, on="invoice_number", how="anti").select(
        "invoice_number", detail=pl.lit("no line refers to this invoice"))


@rule("CUSTOMER_UNKNOWN", "error", "The invoice's customer_id is not in customers.")
def customer_unknown(x: RuleInput) -> pl.DataFrame:
    return x.invoices.join(x.customers, on="customer_id", how="anti").select(
        "invoice_number", detail=pl.format("customer '{}' not found", "customer_id"))


@rule("SIREN_INVALID", "error",
      "A French buyer has no SIREN, or its SIREN fails the Luhn check digit.")
def siren_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers
    bad = c.filter((pl.col("country") == "FR") & ~_valid(c["siren"], siren.is_valid))
    return _invoices_of(x, bad, pl.format("SIREN '{}' of customer {}",
                                          pl.col("siren").fill_null(""), "customer_id"))


@rule("VAT_ID_INVALID", "error", "The buyer's intra-EU VAT number fails its check digits.")
def vat_id_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers
    bad = c.filter(pl.col("vat_id").is_not_null() & ~_valid(c["vat_id"], vat.is_valid))
    return _invoices_of(x, bad, pl.format("VAT id '{}' of customer {}", "vat_id", "customer_id"))


@rule("CHANNEL_UNKNOWN", "error", "The customer's channel is not email, edi, print or peppol.")
def channel_unknown(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter(~pl.col("channel").is_in(CHANNELS))
    return _invoices_of(x, bad, pl.format("channel '{}'", "channel"))


@rule("CHANNEL_ADDRESS_MISSING", "error",
      "The customer's channel lacks what it needs: an email, a GLN (edi) or a Peppol id.")
def channel_address_missing(x: RuleInput) -> pl.DataFrame:
    def blank(column: str) -> pl.Expr:
        return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")
    bad = x.customers.filter(
        ((pl.col("channel") == "email") & blank("email"))
        | ((pl.col("channel") == "edi") & blank("gln"))
        | ((pl.col("channel") == "peppol") & blank("peppol_id")))
    return _invoices_of(x, bad, pl.format("channel {} without its address for customer {}",
                                          "channel", "customer_id"))


@rule("EMAIL_INVALID", "error",
      "An email customer's address is not a plain address (or holds a line break).")
def email_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers.filter((pl.col("channel") == "email") & pl.col("email").is_not_null()
                           & (pl.col("email").str.strip_chars() != ""))
    bad = c.filter(~_valid(c["email"], valid_email_list))
    return _invoices_of(x, bad, pl.format("email {} of customer {}",
                                          pl.col("email").str.replace_all("\n", "\\n", literal=True)
                                          .str.replace_all("\r", "\\r", literal=True), "customer_id"))


@rule("GLN_INVALID", "error", "An EDI customer's GLN is not 13 digits with a valid check digit.")
def gln_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers.filter((pl.col("channel") == "edi") & pl.col("gln").is_not_null())
    bad = c.filter(~_valid(c["gln"], lambda v: len(v) == 13 and ean.is_valid(v)))
    return _invoices_of(x, bad, pl.format("GLN '{}' of customer {}", "gln", "customer_id"))


@rule("PO_UNKNOWN", "error", "An invoice has no purchase order, or its PO is not in the extract.")
def po_unknown(x: RuleInput) -> pl.DataFrame:
    invoices = x.invoices.filter(pl.col("invoice_type") == "invoice")
    return invoices.join(x.bundle.purchase_orders.select("po_number"), on="po_number",
                         how="anti").select(
        "invoice_number", detail=pl.format("PO '{}' not found", pl.col("po_number")
                                           .fill_null("(none)")))


@rule("PO_OTHER_CUSTOMER", "error", "The purchase order belongs to another customer.")
def po_other_customer(x: RuleInput) -> pl.DataFrame:
    return (x.invoices.join(x.bundle.purchase_orders.select("po_number", po_customer="customer_id"),
                            on="po_number")
            .filter(pl.col("po_customer") != pl.col("customer_id"))
            .select("invoice_number", detail=pl.format("PO {} belongs to {}", "po_number",
                                                       "po_customer")))


@rule("PO_LINE_UNKNOWN", "error", "An invoice line refers to no line of its purchase order.")
def po_line_unknown(x: RuleInput) -> pl.DataFrame:
    lines = _only_invoices(x).join(x.bundle.purchase_orders.select("po_number"), on="po_number")
    return lines.join(x.bundle.po_lines, on=["po_number", "po_line_no"], how="anti").select(
        "invoice_number", "line_no",
        detail=pl.format("PO {} has no line {}", "po_number",
                         pl.col("po_line_no").cast(pl.String).fill_null("(none)")))


@rule("PRICE_MISMATCH", "error", "The unit price differs from the price agreed on the PO line.")
def price_mismatch(x: RuleInput) -> pl.DataFrame:
    joined = _only_invoices(x).join(
        x.bundle.po_lines.select("po_number", "po_line_no", po_price="unit_price"),
        on=["po_number", "po_line_no"])
    return joined.filter(pl.col("unit_price") != pl.col("po_price")).select(
        "invoice_number", "line_no",
        detail=pl.format("unit price {} but PO {} line {} agreed {}", "unit_price", "po_number",
                         "po_line_no", "po_price"))


@rule("DELIVERY_NOTE_UNKNOWN", "error",
      "An invoice line has no delivery note, or its delivery note is not in the extract.")
def delivery_note_unknown(x: RuleInput) -> pl.DataFrame:
    return _only_invoices(x).join(x.bundle.delivery_notes.select("delivery_note_number"),
                                  on="delivery_note_number", how="anti").select(
        "invoice_number", "line_no",
        detail=pl.format("delivery note '{}' not found",
                         pl.col("delivery_note_number").fill_null("(none)")))


@rule("DELIVERY_NOTE_OTHER_PO", "error", "The delivery note was issued for another PO.")
def delivery_note_other_po(x: RuleInput) -> pl.DataFrame:
    # Only for a known PO: an unknown PO is reported once by PO_UNKNOWN, not on every line.
    joined = (_only_invoices(x).join(x.bundle.purchase_orders.select("po_number"), on="po_number")
              .join(x.bundle.delivery_notes.select("delivery_note_number", dn_po="po_number"),
                    on="delivery_note_number"))
    return joined.filter(pl.col("dn_po") != pl.col("po_number")).select(
        "invoice_number", "line_no",
        detail=pl.format("delivery note {} belongs to PO {}, not {}", "delivery_note_number",
                         "dn_po", "po_number"))


@rule("QTY_OVER_DELIVERED", "error",
      "The quantity invoiced is above the quantity delivered on the referenced delivery note.")
def qty_over_delivered(x: RuleInput) -> pl.DataFrame:
    delivered = x.bundle.delivery_note_lines.group_by("delivery_note_number", "po_line_no").agg(
        delivered=pl.col("quantity_delivered").sum())
    joined = _only_invoices(x).join(delivered, on=["delivery_note_number", "po_line_no"],
                                    how="left")
    return joined.filter(pl.col("quantity") > pl.col("delivered").fill_null(0)).select(
        "invoice_number", "line_no",
        detail=pl.format("invoiced {} but delivered {} (delivery note {})", "quantity",
                         pl.col("delivered").cast(pl.String).fill_null("0"),
                         "delivery_note_number"))


@rule("CREDITED_INVOICE_UNKNOWN", "error",
      "A credit note names no invoice, or one found neither in the extract nor in the archive.")
def credited_invoice_unknown(x: RuleInput) -> pl.DataFrame:
    known = pl.concat([x.invoices["invoice_number"], x.archived_numbers]).implode()
    return x.invoices.filter(
        (pl.col("invoice_type") == "credit_note")
        & (pl.col("credited_invoice_number").is_null()
           | ~pl.col("credited_invoice_number").is_in(known))
    ).select("invoice_number", detail=pl.format(
        "credits '{}'", pl.col("credited_invoice_number").fill_null("(none)")))
