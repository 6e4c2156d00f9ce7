"""ANSI X12 810 (004010) invoices: one interchange per partner and batch.

Separators are ``*`` (element), ``>`` (component) and ``~`` (segment). X12 has
no release character, so free text is cleaned first (ASCII, separators
replaced) and then cut to its element's size; identifiers (invoice and order
numbers, references, ids) are never cut or altered: one that does not fit fails
its invoice with ``FieldError``. Segments are built as structured data and
serialized in one place; control numbers come from the caller (stored per
partner in the ledger).

A receiver's totals are read from each transaction: TDS01 (total invoice amount,
the gross and the amount due), TDS02 (the net) and every TXI (VAT and taxable
amount per rate; their sum is the VAT). TXI carries no VAT category, so totals
are compared per rate.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from pyx12.x12file import X12Reader

from pipeline.codes import X12_UNITS, amount, cents, number
from pipeline.einvoice.en16931 import Invoice
from pipeline.einvoice.registry import (
    COMMON_TOTALS,
    BuildContext,
    EInvoiceFormat,
    Totals,
    register,
    total_key,
)
from pipeline.einvoice.segments import FieldError, Reading, Segment, segment, split_messages

__all__ = ["clean", "body", "envelope", "serialize", "interchange", "read", "parse", "totals",
           "read_totals", "build", "FORMAT", "MESSAGE", "REFERENCE_LIMITS", "SEPARATORS"]

MESSAGE = ("transaction set", "ST", "SE")
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
                    number(line.quantity), X12_UNITS.get(line.unit_code, "EA"),
                    number(line.net_price), "", "VP",
                    _ident(line.seller_item_id, limit["sku"], "IT107 (item number)")),
            segment("PID", "F", "", "", "", clean(line.item_name, 80)),
        ]
    segments.append(segment("TDS", cents(inv.payable), cents(inv.tax_exclusive)))
    for vat in inv.vat:
        segments.append(segment("TXI", "VA", amount(vat.tax_amount), number(vat.rate), "", "",
                                "", "", amount(vat.taxable_amount)))
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


def _transaction_totals(segments: list[Segment]) -> Totals:
    """The totals of one transaction: TDS, and VAT from its TXI segments."""
    found: Totals = {}
    for seg in segments:
        if seg.tag == "TDS":
            if "due" in found:
                raise ValueError("TDS is given twice")
            found["due"] = found["gross"] = Decimal(seg.elements[0][0]) / 100
            if len(seg.elements) > 1:
                found["net"] = Decimal(seg.elements[1][0]) / 100
        elif seg.tag == "TXI":
            vat, rate = Decimal(seg.elements[1][0]), Decimal(seg.elements[2][0])
            found["vat"] = found.get("vat", Decimal(0)) + vat
            for kind, value in (("vat", vat), ("base", Decimal(seg.elements[7][0]))):
                key = total_key(kind, rate)  # two categories may share a rate
                found[key] = found.get(key, Decimal(0)) + value
    return found


def totals(reading: Reading) -> dict[str, Totals]:
    """Per invoice number (BIG02), the totals of each transaction of an interchange read."""
    found = {}
    for n, transaction in enumerate(split_messages(reading.segments, *MESSAGE[1:])[1], start=1):
        segments = [seg for _, seg in transaction]
        big = next((seg for seg in segments if seg.tag == "BIG"), None)
        if big is None or len(big.elements) < 2:
            raise ValueError(f"transaction set {n} has no invoice number (BIG02)")
        found[big.elements[1][0]] = _transaction_totals(segments)
    return found


def read_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number, the totals a receiver's parser (pyx12) reads from the bytes."""
    return totals(read(data))


def build(invoices: Sequence[Invoice], context: BuildContext) -> bytes:
    """The interchange of one partner's invoices (``interchange``).

    Raises:
        FieldError: an identifier does not fit its element or has a separator in it.
    """
    if context.prepared is None:
        raise ValueError("an X12 interchange needs its preparation date")
    return interchange(invoices, context.control, context.sender, context.receiver,
                       context.prepared)


import pipeline.einvoice.x12 as _syntax  # noqa: E402 (this module, as a Syntax)

FORMAT = register(EInvoiceFormat(
    name="x12", title="X12", grouping="partner", media_type="application/EDI-X12",
    suffix=".x12", build=build, read_totals=read_totals, totals=COMMON_TOTALS,
    vat_by="rate", sender="siren", syntax=_syntax))
