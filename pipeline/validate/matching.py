"""Three-way match, per invoice line: purchase order <-> delivery note <-> invoice.

Quantities are cumulative: what a line invoices, plus what earlier invoices
already billed on the same PO line (this extract in issue-date order, and the
archive), must not exceed what was delivered, nor what was ordered.
"""

from __future__ import annotations

import polars as pl

from pipeline import money
from pipeline.validate.registry import RuleInput, rule


def _lines_with_po(x: RuleInput) -> pl.DataFrame:
    """Invoice lines whose PO exists (an unknown PO is reported once, by PO_UNKNOWN), with
    the PO's ``status, po_customer, po_currency`` and the PO line's ``po_sku, po_price,
    ordered`` (null when the PO has no such line)."""
    b = x.bundle
    return x.invoice_lines_only.join(
        b.purchase_orders.select("po_number", "status", po_customer="customer_id",
                                 po_currency="currency"), on="po_number"
    ).join(b.po_lines.select("po_number", "po_line_no", po_sku="sku", po_price="unit_price",
                             ordered="quantity_ordered"),
           on=["po_number", "po_line_no"], how="left")


@rule("PO_UNKNOWN", "error", "An invoice has no purchase order, or its PO is not in the extract.")
def po_unknown(x: RuleInput) -> pl.DataFrame:
    invoices = x.invoices.filter(pl.col("invoice_type") == "invoice")
    return invoices.join(x.bundle.purchase_orders.select("po_number"), on="po_number",
                         how="anti").select("invoice_number",
                                            actual=pl.col("po_number").fill_null("(none)"))


@rule("PO_CLOSED", "error", "The purchase order is closed.")
def po_closed(x: RuleInput) -> pl.DataFrame:
    return (x.shared(_lines_with_po).filter(pl.col("status") != "open").unique("invoice_number")
            .select("invoice_number", expected=pl.lit("open"), actual="status"))


@rule("PO_OTHER_CUSTOMER", "error", "The purchase order belongs to another customer.")
def po_other_customer(x: RuleInput) -> pl.DataFrame:
    return (x.shared(_lines_with_po).filter(pl.col("po_customer") != pl.col("customer_id"))
            .unique("invoice_number")
            .select("invoice_number", expected="customer_id", actual="po_customer"))


@rule("CURRENCY_MISMATCH", "error", "The invoice's currency differs from its PO's.")
def currency_mismatch(x: RuleInput) -> pl.DataFrame:
    return (x.shared(_lines_with_po).filter(pl.col("po_currency") != pl.col("currency"))
            .unique("invoice_number")
            .select("invoice_number", expected="po_currency", actual="currency"))


@rule("PO_LINE_UNKNOWN", "error", "An invoice line refers to no line of its purchase order.")
def po_line_unknown(x: RuleInput) -> pl.DataFrame:
    return x.shared(_lines_with_po).filter(pl.col("po_sku").is_null()).select(
        "invoice_number", "line_no",
        actual=pl.col("po_line_no").cast(pl.String).fill_null("(none)"))


@rule("PO_LINE_SKU_MISMATCH", "error", "The invoice line's SKU differs from its PO line's.")
def po_line_sku_mismatch(x: RuleInput) -> pl.DataFrame:
    return x.shared(_lines_with_po).filter(pl.col("po_sku") != pl.col("sku")).select(
        "invoice_number", "line_no", expected="po_sku", actual="sku")


def _tolerances(x: RuleInput) -> pl.DataFrame:
    """Per customer of the extract: allowed absolute and percent price deviation, scaled 1e-4."""
    config = x.config
    custom = config.customer_tolerances
    default = config.price_tolerance
    customers = x.customers.select("customer_id").unique()
    return customers.with_columns(
        abs_tol=pl.col("customer_id").replace_strict(
            {c: int(t.absolute * 10_000) for c, t in custom.items()},
            default=int(default.absolute * 10_000), return_dtype=pl.Int128),
        pct_tol=pl.col("customer_id").replace_strict(
            {c: int(t.percent * 10_000) for c, t in custom.items()},
            default=int(default.percent * 10_000), return_dtype=pl.Int128))


@rule("PRICE_MISMATCH", "error",
      "The unit price differs from the PO line's beyond the customer's tolerance (default 0).")
def price_mismatch(x: RuleInput) -> pl.DataFrame:
    lines = x.shared(_lines_with_po).filter(pl.col("unit_price") != pl.col("po_price"))
    priced = lines.join(_tolerances(x), on="customer_id", how="left").with_columns(
        diff=(money.scaled("unit_price") - money.scaled("po_price")).abs(),
        # allowed, in 1e-4 currency units: the larger of the absolute and percent tolerances
        allowed=pl.max_horizontal(
            pl.col("abs_tol").fill_null(0),
            pl.col("pct_tol").fill_null(0) * money.scaled("po_price").abs() // 1_000_000))
    return priced.filter(pl.col("diff") > pl.col("allowed")).select(
        "invoice_number", "line_no", expected=pl.col("po_price").cast(pl.String),
        actual=pl.col("unit_price").cast(pl.String),
        detail=pl.format("PO line {}", "po_line_no"))


def _lines_with_delivery_note(x: RuleInput) -> pl.DataFrame:
    """Lines with a known PO and their delivery note's ``dn_po, dn_date`` (null if unknown)."""
    return x.shared(_lines_with_po).join(
        x.bundle.delivery_notes.select("delivery_note_number", dn_po="po_number",
                                       dn_date="delivery_date"),
        on="delivery_note_number", how="left")


@rule("DELIVERY_NOTE_UNKNOWN", "error",
      "An invoice line has no delivery note, or its delivery note is not in the extract.")
def delivery_note_unknown(x: RuleInput) -> pl.DataFrame:
    return x.shared(_lines_with_delivery_note).filter(pl.col("dn_po").is_null()).select(
        "invoice_number", "line_no",
        actual=pl.col("delivery_note_number").fill_null("(none)"))


@rule("DELIVERY_NOTE_OTHER_PO", "error", "The delivery note was issued for another PO.")
def delivery_note_other_po(x: RuleInput) -> pl.DataFrame:
    lines = x.shared(_lines_with_delivery_note)
    return lines.filter(pl.col("dn_po") != pl.col("po_number")).select(
        "invoice_number", "line_no", "delivery_note_number", expected="po_number",
        actual="dn_po")


@rule("DELIVERED_AFTER_INVOICE", "error",
      "The delivery note is dated after the invoice: goods are billed before delivery.")
def delivered_after_invoice(x: RuleInput) -> pl.DataFrame:
    lines = x.shared(_lines_with_delivery_note)
    return lines.filter(pl.col("dn_date") > pl.col("issue_date")).select(
        "invoice_number", "line_no", "delivery_note_number",
        expected=pl.format("<= {}", "issue_date"), actual=pl.col("dn_date").cast(pl.String))


def _cumulative_billing(x: RuleInput) -> pl.DataFrame:
    """Each PO-line invoice line with the quantity billed on its PO line up to and including it.

    Most PO lines are billed once; only those billed several times (or already in the
    archive) are sorted by issue date to accumulate, which keeps this cheap at 1M lines.
    """
    earlier = x.history.billed.group_by("po_number", "po_line_no").agg(
        archived=money.scaled("quantity").sum())
    lines = (x.shared(_lines_with_po).filter(pl.col("po_sku").is_not_null())
             .select("invoice_number", "line_no", "issue_date", "po_number", "po_line_no",
                     "delivery_note_number", "ordered", qty=money.scaled("quantity"))
             .join(earlier, on=["po_number", "po_line_no"], how="left")
             .with_columns(times=pl.len().over("po_number", "po_line_no")))
    single = lines.filter((pl.col("times") == 1) & pl.col("archived").is_null()).with_columns(
        billed=pl.col("qty"))
    several = lines.filter((pl.col("times") > 1) | pl.col("archived").is_not_null()).sort(
        "issue_date", "invoice_number", "line_no").with_columns(
        billed=pl.col("qty").cum_sum().over("po_number", "po_line_no")
        + pl.col("archived").fill_null(0))
    return pl.concat([single, several])


def _milli_to_text(value: pl.Expr) -> pl.Expr:
    return (value.cast(pl.Decimal(38, 0)) / 1000).cast(pl.Decimal(38, 3)).cast(pl.String)


@rule("QTY_OVER_DELIVERED", "error",
      "Billed quantity on a PO line (earlier invoices included) exceeds what was delivered.")
def qty_over_delivered(x: RuleInput) -> pl.DataFrame:
    delivered = (x.bundle.delivery_note_lines
                 .join(x.bundle.delivery_notes.select("delivery_note_number", "po_number"),
                       on="delivery_note_number")
                 .group_by("po_number", "po_line_no")
                 .agg(delivered=money.scaled("quantity_delivered").sum()))
    billed = x.shared(_cumulative_billing).join(delivered, on=["po_number", "po_line_no"],
                                                how="left")
    return billed.filter(pl.col("billed") > pl.col("delivered").fill_null(0)).select(
        "invoice_number", "line_no", "delivery_note_number",
        expected=pl.format("<= {} delivered", _milli_to_text(pl.col("delivered").fill_null(0))),
        actual=pl.format("{} billed", _milli_to_text(pl.col("billed"))))


@rule("QTY_OVER_ORDERED", "error",
      "Billed quantity on a PO line (earlier invoices included) exceeds what was ordered.")
def qty_over_ordered(x: RuleInput) -> pl.DataFrame:
    billed = x.shared(_cumulative_billing).with_columns(ordered=money.scaled("ordered"))
    return billed.filter(pl.col("billed") > pl.col("ordered")).select(
        "invoice_number", "line_no",
        expected=pl.format("<= {} ordered", _milli_to_text(pl.col("ordered"))),
        actual=pl.format("{} billed", _milli_to_text(pl.col("billed"))))
