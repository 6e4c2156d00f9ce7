"""ANSI X12 810 (004010) invoices: one interchange per partner and batch.

Separators are ``*`` (element), ``>`` (component) and ``~`` (segment). X12 has
no release character, so free text is cleaned first (ASCII, separators
replaced) and then cut to its element's size; identifiers (invoice and order
numbers, references, ids) are never cut or altered: one that does not fit fails
its invoice with ``FieldError``. Segments are built as structured data and
serialized in one place; control numbers come from the caller (stored per
partner in the ledger).
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from pyx12.x12file import X12Reader

from pipeline.einvoice.cii import number
from pipeline.einvoice.en16931 import Invoice
from pipeline.einvoice.segments import FieldError, Reading, Segment, segment

__all__ = ["clean", "body", "envelope", "serialize", "interchange", "read", "parse", "UNITS",
           "REFERENCE_LIMITS", "SEPARATORS",
           "totals_from_transaction"]

UNITS = {"C62": "EA", "KGM": "KG", "HUR": "HR", "DAY": "DA", "LTR": "LT", "MTR": "MR"}
SEPARATORS = "*~>"
_BLANKED = str.maketrans({"*": " ", "~": " ", ">": " ", "\n": " ", "\r": " ", "\t": " "})


def clean(value: str, limit: int = 60) -> str:
    """Free text an element can carry: ASCII (accents dropped), no separator, then cut
    to the element's size."""
    decomposed = unicodedata.normalize("NFKD", value)  # may turn e.g. a full-width "＊" into "*"
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_BLANKED)
    return plain.encode("ascii", "replace").decode()[:limit].strip()


# Extract fields that become X12 identifiers, with the 004010 maximum length of their
# element; validation rejects what would not fit (EDI_REFERENCE_UNFIT) before rendering.
REFERENCE_LIMITS = {"invoice_number": 22, "po_number": 22, "delivery_note_number": 30,
                    "credited_invoice_number": 30, "sku": 48}


def _ident(value: str, limit: int, field_name: str) -> str:
    """An identifier as it is, or ``FieldError``: cutting it would name another document."""
    if any(not " " <= c <= "~" or c in SEPARATORS for c in value):
        raise FieldError("X12", field_name, value,
                         f"has characters X12 cannot carry (non-ASCII or a separator "
                         f"{SEPARATORS})")
    if len(value) > limit:
        raise FieldError("X12", field_name, value,
                         f"has {len(value)} characters, the element allows at most {limit} "
                         f"(AN 1/{limit} in 004010)")
    return value


def _cents(value: Decimal) -> str:
    """TDS amounts carry two implied decimals: 1234.50 -> 123450."""
    return str(int((value * 100).to_integral_value()))


def body(inv: Invoice, seller_id: str, buyer_gln: str) -> list[Segment]:
    """BIG ... CTT of one invoice or credit note; ``envelope`` adds ST and SE.

    Raises:
        FieldError: an identifier does not fit its element or has a separator in it.
    """
    limit = REFERENCE_LIMITS
    segments = [
        segment("BIG", inv.issue_date.strftime("%Y%m%d"),
                _ident(inv.number, limit["invoice_number"], "BIG02 (invoice number)"), "",
                _ident(inv.order_reference or "", limit["po_number"],
                       "BIG04 (purchase order number)"), "", "",
                "CR" if inv.is_credit_note else "DI"),
    ]
    if inv.despatch_reference:
        segments.append(segment("REF", "DQ", _ident(inv.despatch_reference,
                                                    limit["delivery_note_number"],
                                                    "REF02 (despatch reference)")))
    if inv.preceding_invoice:
        segments.append(segment("REF", "IV", _ident(inv.preceding_invoice,
                                                    limit["credited_invoice_number"],
                                                    "REF02 (preceding invoice)")))
    segments += [
        segment("N1", "SE", clean(inv.seller.name), "92",
                _ident(seller_id, 80, "N104 (seller id)")),
        segment("N1", "BY", clean(inv.buyer.name), "UL", _ident(buyer_gln, 80, "N104 (GLN)")),
        segment("ITD", "01", "3", "", "", "", inv.due_date.strftime("%Y%m%d"),
                str((inv.due_date - inv.issue_date).days)),
    ]
    if inv.delivery_date:
        segments.append(segment("DTM", "011", inv.delivery_date.strftime("%Y%m%d")))
    for line in inv.lines:
        segments += [
            segment("IT1", _ident(line.line_id, 20, "IT101 (line number)"),
                    number(line.quantity), UNITS.get(line.unit_code, "EA"),
                    number(line.net_price), "", "VP",
                    _ident(line.seller_item_id, limit["sku"], "IT107 (item number)")),
            segment("PID", "F", "", "", "", clean(line.item_name, 80)),
        ]
    segments.append(segment("TDS", _cents(inv.payable), _cents(inv.tax_exclusive)))
    for vat in inv.vat:
        segments.append(segment("TXI", "VA", f"{vat.tax_amount:.2f}", number(vat.rate), "", "",
                                "", "", f"{vat.taxable_amount:.2f}"))
    segments.append(segment("CTT", str(len(inv.lines))))
    return segments


def envelope(bodies: Sequence[Sequence[Segment]], control: int, seller_id: str,
             buyer_gln: str, prepared: date) -> list[Segment]:
    """ISA, GS, one ST ... SE transaction per body, GE, IEA.

    Raises:
        FieldError: the sender or receiver id does not fit ISA06/ISA08 (15 characters).
    """
    sender = _ident(seller_id, 15, "ISA06 (sender id)")
    receiver = _ident(buyer_gln, 15, "ISA08 (receiver id)")
    segments = [
        segment("ISA", "00", " " * 10, "00", " " * 10, "ZZ", f"{sender:<15}", "ZZ",
                f"{receiver:<15}", prepared.strftime("%y%m%d"), "0000", "U", "00401",
                f"{control:09d}", "0", "P", ">"),
        segment("GS", "IN", sender, receiver, prepared.strftime("%Y%m%d"), "0000", str(control),
                "X", "004010"),
    ]
    for index, transaction in enumerate(bodies, start=1):
        st02 = f"{index:04d}"
        segments += [segment("ST", "810", st02), *transaction,
                     segment("SE", str(len(transaction) + 2), st02)]
    segments += [segment("GE", str(len(bodies)), str(control)),
                 segment("IEA", "1", f"{control:09d}")]
    return segments


def serialize(segments: Sequence[Segment]) -> bytes:
    """One segment per line, ASCII: the one place values are joined by separators."""
    lines = ["*".join([s.tag, *(">".join(e) for e in s.elements)]) + "~" for s in segments]
    return ("\n".join(lines) + "\n").encode("ascii", "replace")


def interchange(invoices: Sequence[Invoice], control: int, seller_id: str, buyer_gln: str,
                prepared: date) -> bytes:
    """ISA ... IEA with one functional group (GS ... GE) of 810 transactions.

    Raises:
        FieldError: an identifier of one of the invoices does not fit its element.
    """
    return serialize(envelope([body(inv, seller_id, buyer_gln) for inv in invoices], control,
                              seller_id, buyer_gln, prepared))


def read(data: bytes) -> Reading:
    """The interchange as a receiver's parser (pyx12) reads it, with the envelope errors
    pyx12 reports (SE, GE and IEA counts, ST/SE, GS/GE and ISA/IEA control numbers).

    Whatever pyx12 raises is reported as an error, never raised: a receiver could
    not read the interchange, so it must not be sent.
    """
    segments: list[Segment] = []
    errors: list[tuple[int, str]] = []
    try:
        reader = X12Reader(io.StringIO(data.decode("ascii", "replace")))
        for seg in reader:
            segments.append(segment(seg.get_seg_id() or "",
                                    *[[e.value for e in c.elements] for c in seg.elements]))
            errors += [(len(segments) - 1, f"pyx12: {e[2]}") for e in reader.pop_errors()]
        reader.cleanup()  # trailers still missing at the end
        errors += [(len(segments), f"pyx12: {e[2]}") for e in reader.pop_errors()]
    except Exception as exc:  # any parser failure means a receiver cannot read it
        errors.append((len(segments), f"pyx12 cannot read it: {exc}"))
    return Reading(segments, errors)


def parse(data: bytes) -> list[list[str]]:
    """Segments as pyx12 reads them: the tag, then each element's value."""
    return [[s.tag, *(">".join(e) for e in s.elements)] for s in read(data).segments]


def totals_from_transaction(segments: list[list[str]]) -> dict[str, Decimal]:
    """Totals a receiver reads from one ST ... SE transaction."""
    totals: dict[str, Decimal] = {}
    for seg in segments:
        if seg[0] == "TDS":
            totals["due"] = totals["gross"] = Decimal(seg[1]) / 100
            totals["net"] = Decimal(seg[2]) / 100
        elif seg[0] == "TXI":
            totals[f"vat S {Decimal(seg[3]).normalize()}%"] = Decimal(seg[2])
    totals["vat"] = totals["gross"] - totals["net"]
    return totals
