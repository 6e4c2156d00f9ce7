"""The hostile-input corpus: one case per (table, field, hostile value), each with its outcome.

Every case gets an invoice of its own in one generated extract (its own customer, purchase
order and delivery note, so a case never touches another case's invoice), and states what
must happen to that invoice: ``rejected`` with a rule code, billed with a ``warning``, or
``billed`` as is. ``tests/test_hostile.py`` runs the extract end to end once and checks
every case, and that every invoice outside the corpus is still billed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
from stdnum import ean

from pipeline.ingest import ExtractBundle, load_extract
from pipeline.sample import generate_extract
from pipeline.schemas import TABLES
from pipeline.validate.integrity import KEYS

ALL_FORMATS = ("edifact", "x12", "ubl")
# X12 BIG02 and BIG04 hold 22 characters: longer references go to EDIFACT and UBL only.
NO_X12 = ("edifact", "ubl")


@dataclass(frozen=True)
class Case:
    """One hostile value in one field, and what must become of the invoice carrying it."""

    table: str
    field: str
    field_class: str
    value_class: str
    label: str
    value: object
    expect: str
    """``billed``, ``warning:<CODE>`` or a rule code the invoice must be rejected with."""
    channel: str = "edi"
    formats: tuple[str, ...] = ALL_FORMATS
    how: str = "set"
    """``set`` the field on the case's row, ``rename`` a key everywhere it is used, ``dup``
    append a copy of the row (``value``: the changes), ``amount`` change a line's price or
    quantity keeping the three-way match true."""

    @property
    def case_id(self) -> str:
        return f"{self.table}.{self.field} [{self.channel}] {self.value_class}: {self.label}"

    @property
    def outcome(self) -> str:
        if self.expect == "billed":
            return "billed"
        return "warning" if self.expect.startswith("warning:") else "rejected"

    @property
    def code(self) -> str | None:
        return None if self.expect == "billed" else self.expect.removeprefix("warning:")


# --- value sets per field class ---------------------------------------------------------

CONTROL = [("NUL", "Mar\x00tin"), ("BEL", "Mar\x07tin"), ("ESC", "\x1b[31mMartin"),
           ("DEL", "Mar\x7ftin"), ("C1 NEL", "Mar\x85tin"), ("U+FFFF", "Mar\uffffin")]
UNICODE = [("RTL Arabic", "شركة المثال للتجارة"),
           ("Hebrew", "חברה לדוגמה בע״מ"),
           ("combining", "Cafe\u0301 Z\u0336a\u0336l\u0336g\u0336o"),
           ("emoji", "Boulangerie 🥖😀👨‍👩‍👧"), ("CJK", "株式会社サンプル")]
PATHS = [("../", "../../etc/passwd"), ("/", "/etc/passwd"), ("\\", "C:\\Windows\\system32"),
         (".", "."), ("..", "..")]


def _text_cases(table: str, field: str, limit: int, missing: str | None,
                channel: str = "edi", edi_limits: tuple[int, int] | None = None) -> list[Case]:
    """Names and free text: ``missing`` is the code for an empty value (None: billed)."""
    empty = missing or "billed"
    values: list[tuple[str, str, object, str]] = [
        ("empty", "empty", "", empty), ("empty", "blank", "   ", empty),
        *[("control", label, v, "CONTROL_CHARACTER") for label, v in CONTROL],
        ("CR/LF", "CRLF header", "Martin\r\nBcc: evil@example.com", "billed"),
        ("CR/LF", "LF", "Martin\nSARL", "billed"),
        ("CR/LF", "tab", "Martin\tSARL", "billed"),
        ("HTML", "script", "<script>alert(1)</script> & Fils", "billed"),
        ("HTML", "img onerror", '<img src=x onerror="alert(1)">', "billed"),
        ("HTML", "entities", "&lt;b&gt; &amp; &#0; ]]>", "billed"),
        ("template", "jinja expression", "{{ 7*7 }} {{ config }} ${7*7}", "billed"),
        ("template", "jinja statement",
         "{% include '/etc/passwd' %}{{ ''.__class__.__mro__ }}", "billed"),
        ("long", f"{limit} characters, unbroken", "M" * limit, "billed"),
        ("long", f"{limit + 1} characters", "M" * (limit + 1), "TEXT_TOO_LONG"),
        ("long", "1 MB", "x" * 1_000_000, "TEXT_TOO_LONG"),
        *[("Unicode", label, v, "billed") for label, v in UNICODE],
        ("Unicode", "RTL override", "Martin \u202eLRAS\u202c", "CONTROL_CHARACTER"),
        ("Unicode", "line separator", "Martin\u2028SARL", "CONTROL_CHARACTER"),
        ("empty", "zero-width only", "\u200b\u200b", empty),
        ("empty", "combining marks only", "\u0301\u0336", empty),
        *[("path", label, v, "billed") for label, v in PATHS],
        ("separators", "EDIFACT all", "O'Neil + Fils: 50% ?", "billed"),
        ("separators", "X12 all", "A*B~C>D", "billed"),
        ("formula", "spreadsheet formula", '=HYPERLINK("http://evil.example")', "billed"),
    ]
    if edi_limits:  # every separator around each format's truncation boundary
        edifact_limit, x12_limit = edi_limits
        for sep in "?'+:":
            for pos in (0, edifact_limit - 2, edifact_limit - 1, edifact_limit,
                        edifact_limit + 1):
                values.append(("EDIFACT separator", f"{sep!r} at {pos}",
                               "A" * pos + sep + "B" * (edifact_limit + 5 - pos), "billed"))
        for sep in "*~>":
            for pos in (0, x12_limit - 1, x12_limit, x12_limit + 1):
                values.append(("X12 separator", f"{sep!r} at {pos}",
                               "A" * pos + sep + "B" * (x12_limit + 5 - pos), "billed"))
    if channel == "print":  # 38 characters per line of the address, postcode + city included
        window = 32 if field == "city" else 38
        values = [(vc, label, v, "POSTAL_LINE_TOO_LONG"
                   if expect == "billed" and isinstance(v, str) and len(v) > window else expect)
                  for vc, label, v, expect in values]
    return [Case(table, field, "names and free text", vc, label, v, expect, channel)
            for vc, label, v, expect in values]


def _postcode_cases() -> list[Case]:
    bad = "POSTCODE_INVALID"
    values = [("empty", "empty", "", "billed"), ("empty", "blank", "   ", "billed"),
              ("ordinary", "75004", "75004", "billed"), ("ordinary", "4 digits", "7500", bad),
              ("ordinary", "with CEDEX", "75004 CEDEX", bad),
              *[("control", label, v, "CONTROL_CHARACTER") for label, v in CONTROL[:3]],
              ("CR/LF", "CRLF", "75\r\n004", bad), ("HTML", "script", "<s>75004", bad),
              ("template", "jinja", "{{75004}}", bad), ("long", "10 characters", "7500475004", bad),
              ("long", "1 MB", "7" * 1_000_000, "TEXT_TOO_LONG"),
              *[("Unicode", label, v, bad) for label, v in UNICODE[:4]],
              *[("path", label, v, bad) for label, v in PATHS],
              ("separators", "EDIFACT", "75'+:?", bad), ("separators", "X12", "75*~>", bad)]
    cases = [Case("customers", "postcode", "names and free text", vc, label, v, expect)
             for vc, label, v, expect in values]
    abroad = [("DE", "10115", "billed"), ("GB", "SW1A 1AA", "billed"), ("NL", "1012 AB", "billed"),
              ("CA", "K1A 0B1", "billed"), ("GB", "SW1A-1AA-XYZ", bad)]
    return cases + [Case("customers", "postcode", "names and free text", f"foreign {country}",
                         v, {"postcode": v, "country": country}, expect)
                    for country, v, expect in abroad]


def _email_cases() -> list[Case]:
    values = [
        ("empty", "empty", "", "CHANNEL_ADDRESS_MISSING"),
        ("empty", "blank", "  ", "CHANNEL_ADDRESS_MISSING"),
        ("control", "NUL", "a\x00@client.example", "CONTROL_CHARACTER"),
        ("CR/LF", "header injection", "a@client.example\r\nBcc: x@evil.example",
         "EMAIL_INVALID"),
        ("CR/LF", "LF", "a@client.example\nb@client.example", "EMAIL_INVALID"),
        ("HTML", "script", "<script>@client.example", "EMAIL_INVALID"),
        ("HTML", "display name", "Evil <a@client.example>", "EMAIL_INVALID"),
        ("template", "jinja braces", "{{7*7}}@client.example", "billed"),
        ("long", "201 characters", "a" * 188 + "@client.example", "TEXT_TOO_LONG"),
        ("long", "1 MB", "a" * 1_000_000 + "@client.example", "TEXT_TOO_LONG"),
        ("Unicode", "accented", "josé@exemple.fr", "EMAIL_INVALID"),
        ("Unicode", "emoji", "😀@client.example", "EMAIL_INVALID"),
        ("Unicode", "RTL", "شركة@client.example", "EMAIL_INVALID"),
        ("path", "../ local part", "../x@client.example", "EMAIL_INVALID"),
        ("path", "dots inside", "a.b.c@client.example", "billed"),
        ("path", "no domain dot", "a@client", "EMAIL_INVALID"),
        ("separators", "quote and plus", "o'neil+fact@client.example", "billed"),
        ("list", "two addresses", "a@client.example, b@client.example", "billed"),
        ("list", "empty item", "a@client.example,,b@client.example", "EMAIL_INVALID"),
        ("list", "trailing spaces", "  a@client.example  ", "billed"),
    ]
    return [Case("customers", "email", "emails", vc, label, v, expect, "email")
            for vc, label, v, expect in values]


def _identifier_cases(table: str, field: str, rejected: str, *, number: bool = False,
                      credit: bool = False) -> list[Case]:
    """Keys and references; ``number``: invoice numbers (stricter characters)."""
    strict = "INVOICE_NUMBER_INVALID" if number else "billed"
    base = "CREDITED_INVOICE_UNKNOWN" if credit else None
    values = [
        ("empty", "empty", "", rejected),
        ("control", "NUL", "ID\x00001", "CONTROL_CHARACTER"),
        ("control", "BEL", "ID\x07001", "CONTROL_CHARACTER"),
        ("CR/LF", "CRLF", "ID\r\n001", rejected),
        ("HTML", "markup", "<b>ID-001</b>", strict),
        ("template", "jinja", "{{7*7}}", strict),
        ("long", "35 characters", "I" * 35, "billed"),
        ("long", "36 characters", "I" * 36, rejected),
        ("long", "300 characters", "FA" + "9" * 298, rejected),
        ("long", "1 MB", "I" * 1_000_000, rejected),
        ("Unicode", "accented", "FAÉ-001", rejected),
        ("Unicode", "emoji", "FA😀001", rejected),
        ("Unicode", "RTL", "FA\u202e100", rejected),
        ("path", "../", "../../x", strict),
        ("path", "/", "/", strict),
        ("path", "90 slashes", "/" * 90, rejected if number else "IDENTIFIER_INVALID"),
        ("path", "\\", "..\\..\\x", strict),
        ("path", ".", ".", strict),
        ("path", "..", "..", strict),
        ("spaces", "leading space", " ID-001", rejected),
        ("spaces", "inner space", "ID 001", strict),
        ("separators", "EDIFACT", "A'B+C:D?E", strict),
        ("separators", "X12", "A*B~C>D", strict),
        ("ordinary", "slashes and dots", "FA/2026.001-A_b", "billed"),
    ]
    if number:  # the 90 slashes: 270 characters once escaped, "File name too long"
        values = [(vc, label, v, rejected if expect == "IDENTIFIER_INVALID" else expect)
                  for vc, label, v, expect in values]
    cases = []
    for vc, label, v, expect in values:
        if base and v:  # a reference unlike any invoice number of the corpus, same length
            v = str(v)[0] + "Z" + str(v)[2:] if len(str(v)) > 1 else "Z"
        if base and expect == "billed":
            expect = base  # a credit note naming an invoice that does not exist
        cases.append(Case(table, field, "identifiers", vc, label, v, expect,
                          formats=NO_X12, how="set" if credit else "rename"))
    return cases


def _x12_reference_cases() -> list[Case]:
    """References of customers receiving X12, at and over their element's length."""
    unfit = "EDI_REFERENCE_UNFIT"
    values = [("invoices", "invoice_number", "FA" + "1" * 20, "billed"),
              ("invoices", "invoice_number", "FA" + "1" * 21, unfit),
              ("purchase_orders", "po_number", "PO" + "1" * 20, "billed"),
              ("purchase_orders", "po_number", "PO" + "1" * 21, unfit),
              ("delivery_notes", "delivery_note_number", "BL" + "1" * 29, unfit),
              ("invoice_lines", "sku", "S" * 48, "billed"),
              ("invoice_lines", "sku", "S" * 35, "billed"),
              ("invoice_lines", "sku", "ART*1", unfit),
              ("purchase_orders", "po_number", "PO~1", unfit),
              ("delivery_notes", "delivery_note_number", "BL>1", unfit)]
    return [Case(table, field, "identifiers", "X12 limits", f"{len(v)} characters: {v[:8]}",
                 v, "IDENTIFIER_INVALID" if len(v) > 35 else expect, how="rename")
            for table, field, v, expect in values]


def _amount_cases() -> list[Case]:
    q, p = "quantity", "unit_price"
    line = [  # (field, value class, label, quantity, unit price, expectation)
        (q, "zero", "zero", "0", None, "QUANTITY_ZERO"),
        (q, "negative", "negative", "-1", None, "NEGATIVE_QTY_ON_INVOICE"),
        (q, "small", "0.001", "0.001", None, "billed"),
        (q, "at limit", "999,999,999.999 at 0.0001", "999999999.999", "0.0001", "billed"),
        (q, "overflowing", "1,000,000,000 at 0.0001", "1000000000", "0.0001",
         "AMOUNT_OUT_OF_RANGE"),
        (q, "absurd", "999,999,999,999,999.999", "999999999999999.999", None,
         "AMOUNT_OUT_OF_RANGE"),
        (p, "zero", "zero", None, "0", "warning:UNIT_PRICE_ZERO"),
        (p, "negative", "negative", None, "-1", "UNIT_PRICE_NEGATIVE"),
        (p, "small", "0.0001", None, "0.0001", "billed"),
        (p, "at limit", "800,000,000.00 x 1 (960,000,000.00 with VAT)", "1", "800000000",
         "billed"),
        (p, "overflowing", "99,999,999,999,999.9999 x 500", "500", "99999999999999.9999",
         "AMOUNT_OUT_OF_RANGE"),
        (p, "absurd", "9,999,999,999,999.9999 x 1", "1", "9999999999999.9999",
         "AMOUNT_OUT_OF_RANGE"),
        (p, "just over", "999,999,999.9999 x 1", "1", "999999999.9999",
         "AMOUNT_OUT_OF_RANGE"),
    ]
    cases = [Case("invoice_lines", field, "amounts and quantities", vc, label,
                  (Decimal(qty) if qty else None, Decimal(price) if price else None),
                  expect, how="amount") for field, vc, label, qty, price, expect in line]
    d = Decimal
    sets = [
        ("invoices", "total_gross", "wrong", "0.01", d("0.01"), "TOTALS_MISMATCH"),
        ("invoices", "total_gross", "zero", "zero", d("0"), "TOTALS_MISMATCH"),
        ("invoices", "total_net", "negative", "negative", d("-100.00"), "TOTALS_MISMATCH"),
        ("invoices", "total_gross", "overflowing", "largest decimal(18,2)",
         d("9999999999999999.99"), "TOTALS_MISMATCH"),
        ("invoices", "total_gross", "empty", "null", None, "billed"),
        ("po_lines", "quantity_ordered", "zero", "zero", d("0"), "QTY_OVER_ORDERED"),
        ("po_lines", "quantity_ordered", "negative", "negative", d("-5"), "QTY_OVER_ORDERED"),
        ("po_lines", "quantity_ordered", "absurd", "largest decimal(18,3)",
         d("999999999999999.999"), "billed"),
        ("po_lines", "unit_price", "zero", "zero", d("0"), "PRICE_MISMATCH"),
        ("po_lines", "unit_price", "negative", "negative", d("-1"), "PRICE_MISMATCH"),
        ("po_lines", "unit_price", "overflowing", "99,999,999,999,999.9999",
         d("99999999999999.9999"), "PRICE_MISMATCH"),
        ("delivery_note_lines", "quantity_delivered", "zero", "zero", d("0"),
         "QTY_OVER_DELIVERED"),
        ("delivery_note_lines", "quantity_delivered", "negative", "negative", d("-5"),
         "QTY_OVER_DELIVERED"),
        ("delivery_note_lines", "quantity_delivered", "absurd", "largest decimal(18,3)",
         d("999999999999999.999"), "billed"),
        ("customers", "payment_terms_days", "negative", "-1", -1, "PAYMENT_TERMS_INVALID"),
        ("customers", "payment_terms_days", "zero", "zero", 0, "billed"),
        ("customers", "payment_terms_days", "absurd", "10^9", 10**9, "PAYMENT_TERMS_INVALID"),
        ("customers", "payment_terms_days", "overflowing", "2^62", 2**62,
         "PAYMENT_TERMS_INVALID"),
    ]
    cases += [Case(t, f, "amounts and quantities", vc, label, v, expect)
              for t, f, vc, label, v, expect in sets]
    rates = [("zero with category S", d("0"), "VAT_CATEGORY_INCONSISTENT"),
             ("negative", d("-20"), "VAT_RATE_NOT_ALLOWED"),
             ("absurd", d("999.99"), "VAT_RATE_NOT_ALLOWED"),
             ("old French rate", d("19.6"), "VAT_RATE_NOT_ALLOWED"),
             ("hundred", d("100"), "VAT_RATE_NOT_ALLOWED"),
             ("reduced", d("5.5"), "billed"), ("super-reduced", d("2.1"), "billed")]
    cases += [Case("invoice_lines", "vat_rate", "rates", label.split()[0], label, v, expect)
              for label, v, expect in rates]
    return cases


def _date_cases() -> list[Case]:
    year1, year9999 = date(1, 1, 1), date(9999, 12, 31)
    values = [
        ("invoices", "issue_date", year1, "DATE_OUT_OF_RANGE"),
        ("invoices", "issue_date", year9999, "DATE_OUT_OF_RANGE"),
        ("invoices", "issue_date", date(1999, 12, 31), "DATE_OUT_OF_RANGE"),
        ("invoices", "issue_date", "+1 day after today", "ISSUE_DATE_IN_FUTURE"),
        ("invoices", "due_date", year1, "DATE_OUT_OF_RANGE"),
        ("invoices", "due_date", year9999, "DATE_OUT_OF_RANGE"),
        ("invoices", "due_date", "+400 days", "DUE_DATE_TOO_FAR"),
        ("invoices", "due_date", "-1 day", "DUE_BEFORE_ISSUE"),
        ("invoices", "due_date", "+0 days", "billed"),
        ("invoices", "delivery_date", year1, "DATE_OUT_OF_RANGE"),
        ("invoices", "delivery_date", year9999, "DATE_OUT_OF_RANGE"),
        ("invoices", "delivery_date", "+1 day", "DELIVERY_DATE_IMPLAUSIBLE"),
        ("invoices", "delivery_date", "-400 days", "DELIVERY_DATE_IMPLAUSIBLE"),
        ("invoices", "delivery_date", "+0 days", "billed"),
        ("invoices", "delivery_date", None, "billed"),
        ("purchase_orders", "order_date", year1, "DATE_OUT_OF_RANGE"),
        ("purchase_orders", "order_date", year9999, "DATE_OUT_OF_RANGE"),
        ("delivery_notes", "delivery_date", year1, "DATE_OUT_OF_RANGE"),
        ("delivery_notes", "delivery_date", year9999, "DATE_OUT_OF_RANGE"),
        ("delivery_notes", "delivery_date", "-400 days", "DELIVERY_DATE_IMPLAUSIBLE"),
    ]
    return [Case(t, f, "dates", _date_class(v), str(v), v, expect) for t, f, v, expect in values]


def _date_class(value: object) -> str:
    if isinstance(value, date):
        return f"year {value.year}"
    return "relative" if value else "empty"


def _code_cases() -> list[Case]:
    values = [
        ("customers", "country", ["", "XX", "fr", "FRA", "<s>"], "COUNTRY_INVALID", "edi"),
        ("customers", "channel", ["", "fax", "EMAIL", "../edi"], "CHANNEL_UNKNOWN", "edi"),
        ("customers", "language", ["", "es", "FR", "../fr"], "LANGUAGE_UNKNOWN", "edi"),
        ("customers", "siren", ["", "732829321", "ABCDEFGHI", None], "SIREN_INVALID", "edi"),
        ("customers", "vat_id", ["", "FR00732829320", "<script>"], "VAT_ID_INVALID", "edi"),
        ("customers", "gln", ["3012345678901", "301234500000", "'+:?'+:?'+:?0"],
         "GLN_INVALID", "edi"),
        ("customers", "peppol_id", ["12345678900011", "0009:", "9:1'+:"],
         "PEPPOL_ID_INVALID", "peppol"),
        ("customers", "brand", ["B" * 36, "marque-été"], "IDENTIFIER_INVALID", "edi"),
        ("invoices", "currency", ["", "XXX", "XTS", "XAU", "EURO", "eur"], "CURRENCY_INVALID",
         "edi"),
        ("invoices", "currency", ["USD"], "CURRENCY_MISMATCH", "edi"),
        ("invoices", "invoice_type", ["", "proforma", "INVOICE"], "INVOICE_TYPE_UNKNOWN",
         "edi"),
        ("invoice_lines", "unit", ["", "PIECE", "c62", "C62 ", "<b>"], "UNIT_INVALID", "edi"),
        ("invoice_lines", "vat_category", ["", "Q", "s"], "VAT_CATEGORY_UNKNOWN", "edi"),
        ("purchase_orders", "status", ["", "closed", "OPEN"], "PO_CLOSED", "edi"),
        ("purchase_orders", "currency", ["USD", "XXX"], "CURRENCY_MISMATCH", "edi"),
    ]
    cases = [Case(t, f, "codes", "invalid", repr(v), v, code, channel)
             for t, f, vs, code, channel in values for v in vs]
    billed = [("customers", "gln", "", "CHANNEL_ADDRESS_MISSING", "edi"),
              ("customers", "peppol_id", "", "CHANNEL_ADDRESS_MISSING", "peppol"),
              ("customers", "peppol_id", "0009:73282932000074", "billed", "peppol"),
              ("customers", "brand", "../../etc", "billed", "edi"),
              ("customers", "brand", "no-such-brand", "billed", "edi"),
              ("customers", "vat_id", None, "billed", "edi"),
              ("invoice_lines", "unit", "KGM", "billed", "edi"),
              ("invoices", "currency", "EUR", "billed", "edi")]
    return cases + [Case(t, f, "codes", "valid" if e == "billed" else "empty", repr(v), v, e, c)
                    for t, f, v, e, c in billed]


def _null_cases() -> list[Case]:
    """A null where the format requires a value: that invoice is rejected, not the extract."""
    fields = [("customers", "language", "codes"),
              ("customers", "legal_name", "names and free text"),
              ("customers", "payment_terms_days", "amounts and quantities"),
              ("invoices", "due_date", "dates"), ("invoices", "currency", "codes"),
              ("invoice_lines", "description", "names and free text"),
              ("invoice_lines", "quantity", "amounts and quantities"),
              ("invoice_lines", "vat_rate", "rates"), ("invoice_lines", "sku", "identifiers"),
              ("purchase_orders", "status", "codes"),
              ("po_lines", "unit_price", "amounts and quantities"),
              ("delivery_notes", "delivery_date", "dates"),
              ("delivery_note_lines", "quantity_delivered", "amounts and quantities")]
    return [Case(t, f, fc, "null", "null", None, "REQUIRED_VALUE_MISSING") for t, f, fc in fields]


def _cross_row_cases() -> list[Case]:
    """References between rows: line numbers and what a credit note credits."""
    lines = [(v, "LINE_NO_INVALID") for v in (0, -5, 1_000_000, 2**62)] + [(999_999, "billed")]
    cases = [Case("invoice_lines", "line_no", "identifiers", "line number", str(v), v, expect)
             for v, expect in lines]
    credits = [("itself", "<self>"), ("a credit note", "<other credit note>"),
               ("an invoice of another customer", "<invoice of another customer>")]
    return cases + [Case("invoices", "credited_invoice_number", "identifiers", "credit chain",
                         label, v, "CREDIT_NOTE_REFERENCE_INVALID") for label, v in credits]


def _duplicate_cases() -> list[Case]:
    differing = {"customers": {"legal_name": "Autre SARL", "email": "x@evil.example"},
                 "purchase_orders": {"status": "closed"},
                 "po_lines": {"quantity_ordered": Decimal("1")},
                 "delivery_notes": {"delivery_date": date(2026, 1, 1)},
                 "delivery_note_lines": {"quantity_delivered": Decimal("1")},
                 "invoice_lines": {"description": "Autre ligne"},
                 "invoices": {"due_date": date(2026, 12, 31)}}
    codes = {"customers": "DUPLICATE_CUSTOMER", "purchase_orders": "DUPLICATE_PO",
             "po_lines": "DUPLICATE_PO_LINE", "delivery_notes": "DUPLICATE_DELIVERY_NOTE",
             "delivery_note_lines": "DUPLICATE_DELIVERY_NOTE_LINE",
             "invoice_lines": "DUPLICATE_LINE_NO", "invoices": "DUPLICATE_NUMBER"}
    return [Case(table, "+".join(KEYS.get(table, ("invoice_number",))), "keys", "duplicate",
                 label, changes, codes[table], how="dup")
            for table, changes in differing.items()
            for label, changes in (("identical row", {}), ("differing row", changes))]


def corpus() -> list[Case]:
    """Every case, in a stable order."""
    cases: list[Case] = []
    for channel in ("edi", "email", "print", "peppol"):
        cases += _text_cases("customers", "legal_name", 200, "NAME_OR_ADDRESS_MISSING",
                             channel, edi_limits=(35, 60) if channel == "edi" else None)
    cases += _text_cases("customers", "address_line1", 200, "NAME_OR_ADDRESS_MISSING",
                         edi_limits=(35, 60))
    cases += _text_cases("customers", "address_line2", 200, None)
    cases += _text_cases("customers", "city", 200, "NAME_OR_ADDRESS_MISSING",
                         edi_limits=(35, 60))
    cases += _postcode_cases()
    cases += _text_cases("invoice_lines", "description", 1000, "DESCRIPTION_MISSING",
                         edi_limits=(70, 80))
    cases += _text_cases("delivery_notes", "ship_to_city", 200, "SHIP_TO_INCOMPLETE")
    cases += _email_cases()
    cases += _identifier_cases("invoices", "invoice_number", "INVOICE_NUMBER_INVALID",
                               number=True)
    cases += _identifier_cases("customers", "customer_id", "IDENTIFIER_INVALID")
    cases += _identifier_cases("purchase_orders", "po_number", "IDENTIFIER_INVALID")
    cases += _identifier_cases("delivery_notes", "delivery_note_number", "IDENTIFIER_INVALID")
    cases += _identifier_cases("invoice_lines", "sku", "IDENTIFIER_INVALID")
    cases += _identifier_cases("invoices", "credited_invoice_number", "IDENTIFIER_INVALID",
                               credit=True)
    cases += _x12_reference_cases()
    cases += _amount_cases() + _date_cases() + _code_cases() + _duplicate_cases()
    cases += _null_cases() + _cross_row_cases()
    return cases


# --- building the extract ---------------------------------------------------------------


@dataclass(frozen=True)
class HostileExtract:
    """The extract on disk, which invoice carries which case, and the settings file."""

    path: Path
    config: Path
    victims: dict[str, Case]
    """Invoice number (as written to the extract) -> its case."""
    bystanders: frozenset[str]
    """Invoices outside the corpus: every one of them must be billed."""


def _set(frame: pl.DataFrame, where: pl.Expr, **values: object) -> pl.DataFrame:
    return frame.with_columns(**{k: pl.when(where).then(pl.lit(v, dtype=frame.schema[k]))
                                 .otherwise(pl.col(k)) for k, v in values.items()})


def _gln(i: int) -> str:
    payload = f"30299{i:07d}"
    return payload + ean.calc_check_digit(payload)


class _Builder:
    """Applies cases to a clean bundle, one victim invoice each."""

    def __init__(self, bundle: ExtractBundle) -> None:
        self.b = bundle
        self.templates = {ch: bundle.customers.filter(pl.col("channel") == ch).row(0, named=True)
                          for ch in ("edi", "email", "print", "peppol")}
        self.formats: dict[str, list[str]] = {}

    def frames(self) -> dict[str, pl.DataFrame]:
        return {t: getattr(self.b, t) for t in TABLES}

    def put(self, **frames: pl.DataFrame) -> None:
        self.b = replace(self.b, **frames)

    def own_customer(self, i: int, number: str, case: Case) -> str:
        """A customer of the case's channel for this invoice alone (and its PO)."""
        row = dict(self.templates[case.channel], customer_id=f"HX{i:04d}")
        if case.channel == "edi":
            row["gln"] = _gln(i)
            self.formats[row["customer_id"]] = list(case.formats)
        inv = self.b.invoices.filter(pl.col("invoice_number") == number).row(0, named=True)
        customers = pl.concat([self.b.customers,
                               pl.DataFrame([row], schema=self.b.customers.schema)])
        self.put(customers=customers,
                 invoices=_set(self.b.invoices, pl.col("invoice_number") == number,
                               customer_id=row["customer_id"]))
        if inv["po_number"] is not None:
            self.put(purchase_orders=_set(self.b.purchase_orders,
                                          pl.col("po_number") == inv["po_number"],
                                          customer_id=row["customer_id"]))
        return row["customer_id"]

    def rows(self, number: str) -> dict[str, pl.Expr]:
        """Per table, the rows this invoice relies on (line 1 for line-level tables)."""
        inv = self.b.invoices.filter(pl.col("invoice_number") == number).row(0, named=True)
        line = self.b.invoice_lines.filter((pl.col("invoice_number") == number)
                                           & (pl.col("line_no") == 1)).row(0, named=True)
        po, dn, po_line = inv["po_number"], line["delivery_note_number"], line["po_line_no"]

        def eq(column: str, value: object) -> pl.Expr:  # a credit note has no PO: no row
            return pl.lit(False) if value is None else pl.col(column) == value

        return {
            "customers": pl.col("customer_id") == inv["customer_id"],
            "invoices": pl.col("invoice_number") == number,
            "invoice_lines": (pl.col("invoice_number") == number) & (pl.col("line_no") == 1),
            "purchase_orders": eq("po_number", po),
            "po_lines": eq("po_number", po) & eq("po_line_no", po_line),
            "delivery_notes": eq("delivery_note_number", dn),
            "delivery_note_lines": eq("delivery_note_number", dn) & eq("po_line_no", po_line),
        }

    def apply(self, number: str, case: Case) -> str:
        """Apply one case to invoice ``number``; returns the invoice's number afterwards."""
        where = self.rows(number)
        frames = self.frames()
        if case.how == "set":
            value = _resolve(case.value, self.b.invoices.filter(where["invoices"]))
            if case.field == "credited_invoice_number" and isinstance(value, str):
                value = self._credited(number, value)
            changes: dict[str, object] = (dict(value) if isinstance(value, dict)
                                          else {case.field: value})
            if case.field == "vat_exemption_reason":
                changes |= {"vat_category": "E", "vat_rate": Decimal("0")}
            if case.field == "ship_to_city":  # a delivery address is taken whole or not at all
                changes |= {"ship_to_address_line1": "Zone artisanale, lot 7",
                            "ship_to_postcode": "69800", "ship_to_country": "FR"}
            frames[case.table] = _set(frames[case.table], where[case.table], **changes)
            if case.table == "invoice_lines" or case.field in ("total_net", "total_gross"):
                frames["invoices"] = _set(frames["invoices"], where["invoices"],
                                          total_net=None, total_vat=None, total_gross=None)
                if case.field in ("total_net", "total_gross"):
                    frames["invoices"] = _set(frames["invoices"], where["invoices"],
                                              **{case.field: value})
        elif case.how == "dup":
            frame = frames[case.table]
            copy = _set(frame.filter(where[case.table]), pl.lit(True), **case.value)
            frames[case.table] = pl.concat([frame, copy])
        elif case.how == "amount":
            quantity, price = case.value
            line = frames["invoice_lines"].filter(where["invoice_lines"]).row(0, named=True)
            quantity = line["quantity"] if quantity is None else quantity
            price = line["unit_price"] if price is None else price
            frames["invoice_lines"] = _set(frames["invoice_lines"], where["invoice_lines"],
                                           quantity=quantity, unit_price=price)
            frames["po_lines"] = _set(frames["po_lines"], where["po_lines"], unit_price=price,
                                      quantity_ordered=max(quantity, Decimal(1)))
            frames["delivery_note_lines"] = _set(
                frames["delivery_note_lines"], where["delivery_note_lines"],
                quantity_delivered=max(quantity, Decimal(1)))
            if "at limit" in case.value_class:  # one line, so the invoice total fits too
                frames["invoice_lines"] = frames["invoice_lines"].filter(
                    (pl.col("invoice_number") != number) | (pl.col("line_no") == 1))
            frames["invoices"] = _set(frames["invoices"], where["invoices"], total_net=None,
                                      total_vat=None, total_gross=None)
        elif case.how == "rename":
            number = self._rename(frames, where, number, case)
        self.put(**frames)
        return number

    def _credited(self, number: str, value: str) -> str:
        """The number a credit-chain case points its credit note at."""
        invoices = self.b.invoices
        if value == "<self>":
            return number
        if value == "<other credit note>":
            return invoices.filter((pl.col("invoice_type") == "credit_note")
                                   & (pl.col("invoice_number") != number))["invoice_number"][-1]
        if value == "<invoice of another customer>":
            credited = invoices.filter(pl.col("invoice_number") == number)[
                "credited_invoice_number"][0]
            customer = invoices.filter(pl.col("invoice_number") == credited)["customer_id"][0]
            return invoices.filter((pl.col("invoice_type") == "invoice")
                                   & (pl.col("customer_id") != customer))["invoice_number"][0]
        return value

    def _rename(self, frames: dict[str, pl.DataFrame], where: dict[str, pl.Expr], number: str,
                case: Case) -> str:
        """Give a key a hostile value everywhere it is used, so only the value is at fault."""
        field, new = case.field, case.value
        old = frames[case.table].filter(where[case.table]).row(0, named=True)[field]
        uses = {"invoice_number": ("invoices", "invoice_lines"),
                "customer_id": ("customers", "invoices", "purchase_orders"),
                "po_number": ("invoices", "purchase_orders", "po_lines", "delivery_notes"),
                "delivery_note_number": ("invoice_lines", "delivery_notes",
                                         "delivery_note_lines"),
                "sku": ("invoice_lines", "po_lines", "delivery_note_lines")}[field]
        for table in uses:
            scope = pl.col(field) == old
            if field == "sku":
                scope = scope & where[table]
            frames[table] = _set(frames[table], scope, **{field: new})
        if field == "customer_id" and case.channel == "edi":
            formats = self.formats.pop(str(old))
            if len(str(new)) <= 100:  # longer ids are rejected; keep the settings file small
                self.formats[str(new)] = formats
        return str(new) if field == "invoice_number" else number


def _resolve(value: object, header: pl.DataFrame) -> object:
    """Dates given relative to the invoice ('+400 days') or to today."""
    if not isinstance(value, str) or not value.startswith(("+", "-")) or "day" not in value:
        return value
    days = int(value.split()[0])
    if "today" in value:
        return date.today() + timedelta(days=days)
    return header["issue_date"][0] + timedelta(days=days)


def _victims(bundle: ExtractBundle, n_invoices: int, n_credits: int) -> tuple[list[str], ...]:
    """Invoices that no credit note corrects, and credit notes."""
    credited = bundle.invoices["credited_invoice_number"].drop_nulls().implode()
    invoices = (bundle.invoices.filter((pl.col("invoice_type") == "invoice")
                                       & ~pl.col("invoice_number").is_in(credited))
                .sort("invoice_number")["invoice_number"].to_list())
    credits = bundle.invoices.filter(pl.col("invoice_type") == "credit_note").sort(
        "invoice_number")["invoice_number"].to_list()
    if len(invoices) < n_invoices or len(credits) < n_credits:
        raise ValueError("the generated extract is too small for the corpus")
    return invoices[:n_invoices], credits[:n_credits]


def build(out: Path, cases: list[Case], spare: int = 40, seed: int = 2609) -> HostileExtract:
    """Generate a clean extract, give each case its own invoice, write extract and settings.

    Victims keep at most three lines (and no header totals), so that rendering the corpus
    costs little; the invoices left over are the bystanders.
    """
    clean = out / "clean"
    n_credit = sum(1 for c in cases if c.field == "credited_invoice_number")
    generate_extract(clean, max(len(cases) + spare, n_credit * 30), seed=seed)
    builder = _Builder(load_extract(clean))
    invoices, credits = _victims(builder.b, len(cases) - n_credit, n_credit)
    chosen = pl.Series(invoices + credits).implode()
    builder.put(
        invoice_lines=builder.b.invoice_lines.filter(
            ~pl.col("invoice_number").is_in(chosen) | (pl.col("line_no") <= 3)),
        invoices=_set(builder.b.invoices, pl.col("invoice_number").is_in(chosen),
                      total_net=None, total_vat=None, total_gross=None))
    pool_inv, pool_credit = iter(invoices), iter(credits)
    victims: dict[str, Case] = {}
    for i, case in enumerate(cases):
        number = next(pool_credit if case.field == "credited_invoice_number" else pool_inv)
        builder.own_customer(i, number, case)
        victims[builder.apply(number, case)] = case
    extract = out / "extract"
    extract.mkdir(parents=True)
    for table, frame in builder.frames().items():
        frame.write_parquet(extract / f"{table}.parquet")
    untouched = set(builder.b.invoices["invoice_number"]) - set(victims)
    config = out / "hostile.toml"
    config.write_text("[edi.customers]\n" + "".join(
        f"{json.dumps(customer, ensure_ascii=False)} = {json.dumps(formats)}\n"
        for customer, formats in sorted(builder.formats.items())))
    return HostileExtract(extract, config, victims, frozenset(untouched))


def by_class(cases: list[Case]) -> Iterator[tuple[str, list[Case]]]:
    """Cases grouped by field class, in corpus order."""
    seen: dict[str, list[Case]] = {}
    for case in cases:
        seen.setdefault(case.field_class, []).append(case)
    yield from seen.items()

