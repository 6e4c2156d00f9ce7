"""Numbering and dates: unique numbers, unbroken sequences, coherent dates."""

from __future__ import annotations

import polars as pl

from pipeline.schemas import INVOICE_TYPES
from pipeline.validate.integrity import flagged
from pipeline.validate.registry import RuleInput, rule


@rule("INVOICE_TYPE_UNKNOWN", "error", "invoice_type is neither 'invoice' nor 'credit_note'.")
def invoice_type_unknown(x: RuleInput) -> pl.DataFrame:
    return x.invoices.filter(~pl.col("invoice_type").is_in(INVOICE_TYPES)).select(
        "invoice_number", actual="invoice_type", expected=pl.lit("invoice or credit_note"))


@rule("DUPLICATE_NUMBER", "error",
      "The invoice number appears more than once in the extract; every copy is held back.")
def duplicate_number(x: RuleInput) -> pl.DataFrame:
    return (x.invoices.group_by("invoice_number").len().filter(pl.col("len") > 1)
            .select("invoice_number", detail=pl.format("{} invoices share this number", "len")))


@rule("DUPLICATE_OF_ARCHIVED", "error",
      "An invoice with this number was already issued (archive) with other content.")
def duplicate_of_archived(x: RuleInput) -> pl.DataFrame:
    archived = x.history.invoices.select("invoice_number", archived_customer="customer_id",
                                         archived_issue="issue_date")
    return x.invoices.join(archived, on="invoice_number").select(
        "invoice_number",
        detail=pl.format("issued on {} to {}", "archived_issue", "archived_customer"))


@rule("SEQUENCE_GAP", "warning",
      "Numbers are missing in a series before this invoice (extract and archive together).")
def sequence_gap(x: RuleInput) -> pl.DataFrame:
    numbers = (pl.concat([x.invoices.select("invoice_number"),
                          x.history.invoices.select("invoice_number")]).unique()
               .with_columns(series=pl.col("invoice_number").str.replace(r"\d+$", ""),
                             n=pl.col("invoice_number").str.extract(r"(\d{1,18})$").cast(pl.Int64))
               .drop_nulls("n").sort("series", "n"))
    gaps = numbers.with_columns(previous=pl.col("n").shift(1).over("series")).filter(
        pl.col("n") - pl.col("previous") > 1)
    return gaps.join(x.invoices.select("invoice_number").unique(), on="invoice_number").select(
        "invoice_number",
        detail=pl.format("{} number(s) missing in series '{}' since counter {}",
                         pl.col("n") - pl.col("previous") - 1, "series", "previous"))


@rule("DUE_BEFORE_ISSUE", "error", "The due date is before the issue date.")
def due_before_issue(x: RuleInput) -> pl.DataFrame:
    return x.invoices.filter(pl.col("due_date") < pl.col("issue_date")).select(
        "invoice_number", expected=pl.format(">= {}", "issue_date"),
        actual=pl.col("due_date").cast(pl.String))


@rule("ISSUE_DATE_IN_FUTURE", "error", "The issue date is after the day of the run.")
def issue_date_in_future(x: RuleInput) -> pl.DataFrame:
    return x.invoices.filter(pl.col("issue_date") > x.today).select(
        "invoice_number", expected=pl.lit(f"<= {x.today}"),
        actual=pl.col("issue_date").cast(pl.String))


# Starts and ends with a letter or digit; inside, only . _ / - : the number names files,
# EDI references and archive keys, so ``..``, ``/x`` or spaces can never reach them.
INVOICE_NUMBER = r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?$"


@rule("INVOICE_NUMBER_INVALID", "error",
      "The invoice number is longer than the limit (35) or uses other characters than letters, "
      "digits and . _ / - inside (it must start and end with a letter or digit).", fixed=True)
def invoice_number_invalid(x: RuleInput) -> pl.DataFrame:
    limit = x.config.limits.identifier_length
    number = pl.col("invoice_number")
    return x.invoices.with_columns(reason=(
        pl.when(number.str.len_chars() > limit)
        .then(pl.format(f"{{}} characters, more than {limit}", number.str.len_chars()))
        .when(~number.str.contains(INVOICE_NUMBER))
        .then(pl.lit("characters other than letters, digits and . _ / - inside")))
    ).filter(pl.col("reason").is_not_null()).select(
        "invoice_number", detail="reason", expected=pl.lit(f"1-{limit} of [A-Za-z0-9._/-]"))


def _out_of_range(table: str, column: str, x: RuleInput) -> pl.DataFrame:
    limits = x.config.limits
    return flagged(x, table, column,
                   (pl.col(column) < limits.earliest_date) | (pl.col(column) > limits.latest_date),
                   pl.col(column).cast(pl.String))


@rule("DATE_OUT_OF_RANGE", "error",
      "A date of the invoice, its purchase order or its delivery note is outside "
      "[validation.limits] earliest_date..latest_date (2000-01-01..2099-12-31).", fixed=True)
def date_out_of_range(x: RuleInput) -> pl.DataFrame:
    return pl.concat([_out_of_range(table, column, x) for table, column in (
        ("invoices", "issue_date"), ("invoices", "due_date"), ("invoices", "delivery_date"),
        ("purchase_orders", "order_date"), ("delivery_notes", "delivery_date"))])


@rule("DUE_DATE_TOO_FAR", "error",
      "The due date is further from the issue date than [validation.limits] max_payment_days "
      "(366).")
def due_date_too_far(x: RuleInput) -> pl.DataFrame:
    days = x.config.limits.max_payment_days
    span = (pl.col("due_date") - pl.col("issue_date")).dt.total_days()
    return x.invoices.filter(span > days).select(
        "invoice_number", expected=pl.lit(f"<= {days} days after issue"),
        actual=pl.col("due_date").cast(pl.String))


@rule("PAYMENT_TERMS_INVALID", "error",
      "The customer's payment_terms_days is negative or above max_payment_days (366).")
def payment_terms_invalid(x: RuleInput) -> pl.DataFrame:
    days = x.config.limits.max_payment_days
    terms = pl.col("payment_terms_days")
    return flagged(x, "customers", "payment_terms_days", (terms < 0) | (terms > days),
                   terms.cast(pl.String))


@rule("DELIVERY_DATE_IMPLAUSIBLE", "error",
      "The invoice's delivery date is after its issue date, or a delivery (invoice or delivery "
      "note) is older than max_delivery_age_days (366) at the issue date.")
def delivery_date_implausible(x: RuleInput) -> pl.DataFrame:
    days = x.config.limits.max_delivery_age_days
    age = (pl.col("issue_date") - pl.col("delivery_date")).dt.total_days()
    headers = x.invoices.filter((age < 0) | (age > days)).select(
        "invoice_number", expected=pl.format(f"between {{}} - {days} days and {{}}",
                                             "issue_date", "issue_date"),
        actual=pl.col("delivery_date").cast(pl.String))
    notes = x.lines.join(x.bundle.delivery_notes.select("delivery_note_number",
                                                         dn_date="delivery_date"),
                         on="delivery_note_number").filter(
        (pl.col("issue_date") - pl.col("dn_date")).dt.total_days() > days).select(
        "invoice_number", "line_no", "delivery_note_number",
        expected=pl.lit(f"delivered at most {days} days before the issue date"),
        actual=pl.col("dn_date").cast(pl.String))
    return pl.concat([headers, notes], how="diagonal")
