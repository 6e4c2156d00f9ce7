"""Integrity of the extract: unique keys, characters and lengths every output can carry.

These rules are *fixed* (their severity cannot be lowered): rendering, the e-invoice
formats, file names and the archive rely on what they guarantee. A finding in a
reference table (a customer, a purchase order, a delivery note...) rejects every
invoice that depends on the offending row, and names the table, field and row.
Row numbers are 0-based positions in the table as read, like ingest's errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl

from pipeline.einvoice.x12 import REFERENCE_LIMITS, SEPARATORS
from pipeline.schemas import IDENTIFYING, TABLES
from pipeline.validate.registry import RuleInput, rule

__all__ = ["dependents", "flagged", "CONTROL_CHARACTERS", "BLANK", "IDENTIFIERS", "NAMES",
           "DESCRIPTIONS"]

# Characters XML 1.0 cannot hold, DEL and the C1 controls (no output format carries them),
# and the bidirectional overrides and isolates and line/paragraph separators, which make a
# PDF show text in another order than the data says ("Trojan Source").
CONTROL_CHARACTERS = (r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\x{FFFE}\x{FFFF}"
                      r"\x{202A}-\x{202E}\x{2066}-\x{2069}\x{2028}\x{2029}]")
# Nothing visible: whitespace, format characters (zero-width spaces...) and lone combining marks.
BLANK = r"^[\s\p{Cf}\p{M}]*$"

# (table, column) of identifiers other than the invoice number (INVOICE_NUMBER_INVALID).
IDENTIFIERS = (
    ("customers", "customer_id"), ("customers", "brand"),
    ("invoices", "customer_id"), ("invoices", "po_number"),
    ("invoices", "credited_invoice_number"),
    ("invoice_lines", "sku"), ("invoice_lines", "delivery_note_number"),
    ("purchase_orders", "po_number"), ("purchase_orders", "customer_id"),
    ("po_lines", "po_number"), ("po_lines", "sku"),
    ("delivery_notes", "delivery_note_number"), ("delivery_notes", "po_number"),
    ("delivery_note_lines", "delivery_note_number"), ("delivery_note_lines", "sku"),
)
NAMES = (
    ("customers", "legal_name"), ("customers", "address_line1"), ("customers", "address_line2"),
    ("customers", "postcode"), ("customers", "city"), ("customers", "email"),
    ("delivery_notes", "ship_to_address_line1"), ("delivery_notes", "ship_to_postcode"),
    ("delivery_notes", "ship_to_city"),
    ("invoices", "ship_to_address_line1"), ("invoices", "ship_to_postcode"),
    ("invoices", "ship_to_city"),
)
DESCRIPTIONS = (("invoice_lines", "description"), ("invoice_lines", "vat_exemption_reason"))

# Each table's key, as EXTRACT_FORMAT.md defines it.
KEYS = {
    "customers": ("customer_id",),
    "invoice_lines": ("invoice_number", "line_no"),
    "purchase_orders": ("po_number",),
    "po_lines": ("po_number", "po_line_no"),
    "delivery_notes": ("delivery_note_number",),
    "delivery_note_lines": ("delivery_note_number", "po_line_no"),
}


def dependents(x: RuleInput, table: str, bad: pl.DataFrame) -> pl.DataFrame:
    """The invoices (and lines) that rely on ``bad`` rows of ``table``.

    Args:
        x: the rule input.
        table: the extract table the rows come from.
        bad: offending rows, with the table's key columns and ``detail``, ``actual``.

    Returns:
        ``invoice_number``, ``line_no``, ``detail``, ``actual`` per dependent invoice or line.
    """
    found = bad.select(*KEYS.get(table, ("invoice_number",)), "detail", "actual")
    lines = x.lines.select("invoice_number", "line_no", "po_number", "po_line_no",
                           "delivery_note_number")
    if table == "invoices":
        joined = found.with_columns(line_no=pl.lit(None, dtype=pl.Int64))
    elif table == "invoice_lines":
        joined = found
    elif table in ("customers", "purchase_orders"):
        key = KEYS[table][0]
        joined = x.invoices.select("invoice_number", key).join(found, on=key).with_columns(
            line_no=pl.lit(None, dtype=pl.Int64))
    else:
        joined = lines.join(found, on=list(KEYS[table]))
    return joined.select("invoice_number", "line_no", "detail", "actual")


def _rows(x: RuleInput, table: str) -> pl.DataFrame:
    return getattr(x.bundle, table).with_row_index("row")


def flagged(x: RuleInput, table: str, column: str, where: pl.Expr, actual: pl.Expr,
            problem: str = "") -> pl.DataFrame:
    """The dependents of the rows of ``table`` matching ``where``, each finding naming
    ``<table>.<column> row <n>`` (and ``problem``); ``actual`` is the value shown."""
    rows = _rows(x, table).filter(where)
    return dependents(x, table, rows.with_columns(
        detail=pl.format(f"{table}.{column} row {{}}{': ' + problem if problem else ''}",
                         "row"),
        actual=actual))


def _duplicates(x: RuleInput, table: str) -> pl.DataFrame:
    """Every group of rows sharing a key, named by their rows and the fields that differ."""
    key = list(KEYS[table])
    others = [c.name for c in TABLES[table] if c.name not in key]
    rows = _rows(x, table)
    groups = rows.group_by(key).agg(
        rows=pl.col("row").sort(), n=pl.len(),
        **{f"_{c}": pl.col(c).n_unique() for c in others}).filter(pl.col("n") > 1)
    if groups.is_empty():
        return dependents(x, table, groups.select(key).with_columns(
            detail=pl.lit(None, dtype=pl.String), actual=pl.lit(None, dtype=pl.String)))
    details, actuals = [], []
    for group in groups.iter_rows(named=True):
        differ = [c for c in others if group[f"_{c}"] > 1]
        shown = ", ".join(str(r) for r in group["rows"])
        details.append(f"{table} rows {shown} share {'/'.join(key)} "
                       + "/".join(str(group[k]) for k in key)
                       + (f"; they differ in {', '.join(differ)}" if differ
                          else "; the rows are identical"))
        actuals.append(f"{group['n']} rows")
    return dependents(x, table, groups.select(key).with_columns(
        detail=pl.Series(details, dtype=pl.String), actual=pl.Series(actuals, dtype=pl.String)))


def _duplicate_rule(table: str) -> Callable[[RuleInput], pl.DataFrame]:
    def check(x: RuleInput) -> pl.DataFrame:
        return _duplicates(x, table)
    check.__name__ = f"duplicate_{table}"
    return check


for _code, _table, _explanation in (
        ("DUPLICATE_CUSTOMER", "customers",
         "customer_id appears on several rows of customers: which name, address or email is "
         "right cannot be guessed, so the customer's invoices are held back."),
        ("DUPLICATE_PO", "purchase_orders",
         "po_number appears on several rows of purchase_orders; its invoices are held back."),
        ("DUPLICATE_PO_LINE", "po_lines",
         "(po_number, po_line_no) appears on several rows of po_lines; the invoice lines "
         "billing it are held back."),
        ("DUPLICATE_DELIVERY_NOTE", "delivery_notes",
         "delivery_note_number appears on several rows of delivery_notes."),
        ("DUPLICATE_DELIVERY_NOTE_LINE", "delivery_note_lines",
         "(delivery_note_number, po_line_no) appears on several rows of delivery_note_lines."),
        ("DUPLICATE_LINE_NO", "invoice_lines",
         "(invoice_number, line_no) appears on several rows of invoice_lines.")):
    rule(_code, "error", _explanation, fixed=True)(_duplicate_rule(_table))


def _string_fields() -> tuple[tuple[str, str], ...]:
    return tuple((t, c.name) for t, cols in TABLES.items() for c in cols if c.kind == "string")


@rule("CONTROL_CHARACTER", "error",
      "A text holds a control character (NUL, BEL, ESC...) that no invoice format can carry, "
      "or a bidirectional override that would make the PDF show another text than the data; "
      "the field and row are named.", fixed=True)
def control_character(x: RuleInput) -> pl.DataFrame:
    found = []
    for table, column in _string_fields():
        rows = _rows(x, table)
        bad = rows.filter(pl.col(column).str.contains(CONTROL_CHARACTERS))
        if bad.is_empty():
            continue
        codes = [f"U+{ord(c):04X}" for c in bad[column].str.extract(
            f"({CONTROL_CHARACTERS})").to_list()]
        found.append(dependents(x, table, bad.with_columns(
            detail=pl.format(f"{table}.{column} row {{}}: control character {{}}", "row",
                             pl.Series(codes, dtype=pl.String)),
            actual=pl.col(column).str.replace_all(CONTROL_CHARACTERS, "\u2400")
            .str.slice(0, 60))))
    if not found:
        return x.invoices.select("invoice_number").clear()
    return pl.concat(found)


@rule("IDENTIFIER_INVALID", "error",
      "An identifier (customer id, PO, delivery note, credited invoice, SKU, brand) is empty, "
      "longer than the limit (35, the EDIFACT an..35), has leading or trailing spaces, or "
      "holds characters outside printable ASCII.", fixed=True)
def identifier_invalid(x: RuleInput) -> pl.DataFrame:
    limit = x.config.limits.identifier_length
    found = []
    for table, column in IDENTIFIERS:
        value = pl.col(column)
        reason = (pl.when(value == "").then(pl.lit("empty"))
                  .when(value.str.len_chars() > limit)
                  .then(pl.format(f"{{}} characters, more than {limit}", value.str.len_chars()))
                  .when(value != value.str.strip_chars(" "))
                  .then(pl.lit("leading or trailing space"))
                  .when(~value.str.contains(r"^[\x20-\x7E]*$"))
                  .then(pl.lit("characters outside printable ASCII")))
        rows = _rows(x, table).with_columns(reason=reason).filter(pl.col("reason").is_not_null())
        found.append(dependents(x, table, rows.with_columns(
            detail=pl.format(f"{table}.{column} row {{}}: {{}}", "row", "reason"),
            actual=value.str.slice(0, 60))))
    return pl.concat(found)


@rule("TEXT_TOO_LONG", "error",
      "A name, address, email list or description is longer than its limit (200 and 1,000 "
      "characters by default, [validation.limits]).", fixed=True)
def text_too_long(x: RuleInput) -> pl.DataFrame:
    limits = x.config.limits
    found = []
    for fields, limit in ((NAMES, limits.name_length), (DESCRIPTIONS, limits.description_length)):
        for table, column in fields:
            length = pl.col(column).str.len_chars()
            rows = _rows(x, table).filter(length > limit)
            found.append(dependents(x, table, rows.with_columns(
                detail=pl.format(f"{table}.{column} row {{}}: {{}} characters, more than {limit}",
                                 "row", length),
                actual=pl.col(column).str.slice(0, 60) + pl.lit("…"))))
    return pl.concat(found)


@rule("NAME_OR_ADDRESS_MISSING", "error",
      "The buyer's legal name, street or city is empty (EN 16931 BT-44, and the buyer's "
      "address the French mentions require).")
def name_or_address_missing(x: RuleInput) -> pl.DataFrame:
    found = []
    for column in ("legal_name", "address_line1", "city"):
        found.append(flagged(x, "customers", column, pl.col(column).str.contains(BLANK),
                             pl.col("customer_id"), "empty"))
    return pl.concat(found)


def _x12_customers(x: RuleInput) -> pl.DataFrame:
    """Customers who receive X12 810 interchanges (by channel or by their own setting)."""
    customers = x.customers.select("customer_id", "channel").unique("customer_id")
    receives = ["x12" in x.edi.formats_for(channel, customer)
                for customer, channel in customers.iter_rows()]
    return customers.filter(pl.Series(receives, dtype=pl.Boolean)).select("customer_id")


@rule("EDI_REFERENCE_UNFIT", "error",
      "A customer receiving X12 810 has a reference its element cannot carry whole: invoice or "
      "PO number over 22 characters, delivery note or credited invoice over 30, SKU over 48, "
      "or one holding * ~ > (X12 separators). Cutting it would name another document.")
def edi_reference_unfit(x: RuleInput) -> pl.DataFrame:
    receivers = _x12_customers(x)
    invoices = x.invoices.join(receivers, on="customer_id", how="semi")
    lines = x.lines.join(receivers, on="customer_id", how="semi")
    found = []
    for frame, column in ((invoices, "invoice_number"), (invoices, "po_number"),
                          (invoices, "credited_invoice_number"),
                          (lines, "delivery_note_number"), (lines, "sku")):
        limit = REFERENCE_LIMITS[column]
        value = pl.col(column)
        found.append(frame.filter(
            (value.str.len_chars() > limit)
            | value.str.contains(f"[{re.escape(SEPARATORS)}]")).select(
            "invoice_number", *(["line_no"] if "line_no" in frame.columns else []),
            detail=pl.lit(f"{column} in X12 (at most {limit} characters, no {SEPARATORS})"),
            actual=value.str.slice(0, 60)))
    return pl.concat(found, how="diagonal")


@rule("REQUIRED_VALUE_MISSING", "error",
      "A column the extract format requires is null on a row this invoice relies on; the "
      "table, column and row are named.", fixed=True)
def required_value_missing(x: RuleInput) -> pl.DataFrame:
    found = []
    for table, columns in TABLES.items():
        for column in columns:
            if not column.required or column.name in IDENTIFYING.get(table, ()):
                continue
            found.append(flagged(x, table, column.name, pl.col(column.name).is_null(),
                                 pl.lit("(null)"), "null"))
    return pl.concat(found)


@rule("LINE_NO_INVALID", "error",
      "A line number is below 1 or above 999999 (EDIFACT LIN an..6).", fixed=True)
def line_no_invalid(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter((pl.col("line_no") < 1) | (pl.col("line_no") > 999_999)).select(
        "invoice_number", actual=pl.col("line_no").cast(pl.String))


@rule("LINE_WITHOUT_INVOICE", "warning",
      "invoice_lines holds lines of an invoice number that is not in invoices; they are "
      "ignored.")
def line_without_invoice(x: RuleInput) -> pl.DataFrame:
    return x.bundle.invoice_lines.join(x.invoices, on="invoice_number", how="anti").group_by(
        "invoice_number").len().select(
        "invoice_number", detail=pl.format("{} line(s) without an invoice header", "len"))
