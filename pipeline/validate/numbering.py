"""Numbering and dates: unique numbers, unbroken sequences, coherent dates."""

from __future__ import annotations

import polars as pl

from pipeline.schemas import INVOICE_TYPES
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
                             n=pl.col("invoice_number").str.extract(r"(\d+)$").cast(pl.Int64))
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
