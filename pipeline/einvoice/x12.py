"""ANSI X12 810 (004010) invoices: one interchange per partner and batch.

Separators are ``*`` (element), ``>`` (component) and ``~`` (segment); they are
removed from every data value, so they never appear inside data. Control
numbers come from the caller (stored per partner in the ledger).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from pipeline.einvoice.cii import number
from pipeline.einvoice.en16931 import Invoice

__all__ = ["clean", "interchange", "UNITS", "parse", "totals_from_transaction"]

UNITS = {"C62": "EA", "KGM": "KG", "HUR": "HR", "DAY": "DA", "LTR": "LT", "MTR": "MR"}
_SEPARATORS = str.maketrans({"*": " ", "~": " ", ">": " ", "\n": " ", "\r": " "})


def clean(value: str, limit: int = 60) -> str:
    """A data value with no separator in it, ASCII only, within the element's size."""
    return value.translate(_SEPARATORS).encode("ascii", "replace").decode()[:limit].strip()


def _seg(*elements: str) -> str:
    parts = list(elements)
    while parts and parts[-1] == "":
        parts.pop()
    return "*".join(parts) + "~"


def _cents(value: Decimal) -> str:
    """TDS amounts carry two implied decimals: 1234.50 -> 123450."""
    return str(int((value * 100).to_integral_value()))


def transaction(inv: Invoice, control: str, seller_id: str, buyer_gln: str) -> list[str]:
    """ST ... SE of one invoice or credit note."""
    segments = [
        _seg("ST", "810", control),
        _seg("BIG", inv.issue_date.strftime("%Y%m%d"), clean(inv.number, 22), "",
             clean(inv.order_reference or "", 22), "", "", "CR" if inv.is_credit_note else "DI"),
    ]
    if inv.despatch_reference:
        segments.append(_seg("REF", "DQ", clean(inv.despatch_reference, 30)))
    if inv.preceding_invoice:
        segments.append(_seg("REF", "IV", clean(inv.preceding_invoice, 30)))
    segments += [
        _seg("N1", "SE", clean(inv.seller.name), "92", clean(seller_id, 80)),
        _seg("N1", "BY", clean(inv.buyer.name), "UL", clean(buyer_gln, 80)),
        _seg("ITD", "01", "3", "", "", "", inv.due_date.strftime("%Y%m%d"),
             str((inv.due_date - inv.issue_date).days)),
    ]
    if inv.delivery_date:
        segments.append(_seg("DTM", "011", inv.delivery_date.strftime("%Y%m%d")))
    for line in inv.lines:
        segments += [
            _seg("IT1", clean(line.line_id, 20), number(line.quantity),
                 UNITS.get(line.unit_code, "EA"), number(line.net_price), "", "VP",
                 clean(line.seller_item_id, 48)),
            _seg("PID", "F", "", "", "", clean(line.item_name, 80)),
        ]
    segments.append(_seg("TDS", _cents(inv.payable), _cents(inv.tax_exclusive)))
    for vat in inv.vat:
        segments.append(_seg("TXI", "VA", f"{vat.tax_amount:.2f}", number(vat.rate), "", "", "",
                             "", f"{vat.taxable_amount:.2f}"))
    segments.append(_seg("CTT", str(len(inv.lines))))
    segments.append(_seg("SE", str(len(segments) + 1), control))
    return segments


def interchange(invoices: Sequence[Invoice], control: int, seller_id: str, buyer_gln: str,
                prepared: date) -> bytes:
    """ISA ... IEA with one functional group (GS ... GE) of 810 transactions."""
    isa_date, gs_date = prepared.strftime("%y%m%d"), prepared.strftime("%Y%m%d")
    lines = [
        _seg("ISA", "00", " " * 10, "00", " " * 10, "ZZ", f"{clean(seller_id, 15):<15}", "ZZ",
             f"{clean(buyer_gln, 15):<15}", isa_date, "0000", "U", "00401", f"{control:09d}",
             "0", "P", ">"),
        _seg("GS", "IN", clean(seller_id, 15), clean(buyer_gln, 15), gs_date, "0000",
             str(control), "X", "004010"),
    ]
    for index, inv in enumerate(invoices, start=1):
        lines += transaction(inv, f"{index:04d}", seller_id, buyer_gln)
    lines += [_seg("GE", str(len(invoices)), str(control)), _seg("IEA", "1", f"{control:09d}")]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse(data: bytes) -> list[list[str]]:
    """Segments as element lists (the separators never occur inside data)."""
    return [segment.strip().split("*") for segment in data.decode("ascii").split("~")
            if segment.strip()]


def totals_from_transaction(segments: list[list[str]]) -> dict[str, Decimal]:
    """Totals a receiver reads from one ST ... SE transaction."""
    totals: dict[str, Decimal] = {}
    for segment in segments:
        if segment[0] == "TDS":
            totals["due"] = totals["gross"] = Decimal(segment[1]) / 100
            totals["net"] = Decimal(segment[2]) / 100
        elif segment[0] == "TXI":
            totals[f"vat S {Decimal(segment[3]).normalize()}%"] = Decimal(segment[2])
    totals["vat"] = totals["gross"] - totals["net"]
    return totals
