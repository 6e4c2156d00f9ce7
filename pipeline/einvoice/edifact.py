"""UN/EDIFACT INVOIC D.96A (EANCOM 2002 subset): one interchange per partner and batch.

Segments are built as structured data (``segments.Segment``) from values that
are transliterated to the UNOC (ISO 8859-1) repertoire and cut to their
element's size first; ``serialize`` is the only place text is escaped with the
release character (``? ' + :`` become ``?? ?' ?+ ?:``). Cutting after escaping
could leave a lone ``?`` at the end of an element and release the separator
after it, shifting every following element (issue 9). Identifiers (invoice
number, references, GLNs, item ids) are never cut: one that does not fit fails
its invoice with ``FieldError``. Segment counts (UNT) and message counts (UNZ)
are computed, never written by hand.

A receiver's totals are read from the summary after UNS: MOA 9 (amount due),
77 (invoice amount), 79 (line items), 125 (taxable), 176 (VAT), then after each
TAX its MOA 124 (VAT) and 125 (taxable); any other MOA there is reported too, so
a total written without a reader cannot go unchecked.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from pydifact.parser import Parser
from pydifact.segmentcollection import Interchange

from pipeline.codes import amount, number
from pipeline.einvoice.en16931 import Invoice, Party
from pipeline.einvoice.registry import BuildContext, EInvoiceFormat, Totals, register, total_key
from pipeline.einvoice.segments import FieldError, Reading, Segment, segment, split_messages

__all__ = ["escape", "body", "envelope", "serialize", "interchange", "read", "totals",
           "read_totals", "build", "FORMAT", "MESSAGE", "SERVICE_STRING", "TEXT_LIMITS"]

SERVICE_STRING = "UNA:+.? '"
MESSAGE = ("message", "UNH", "UNT")
# D.96A sizes of the free-text elements we fill: NAD C080 3036, C059 3042, 3164 (an..35);
# the item description is one component of IMD C273, 70 characters in this layout.
TEXT_LIMITS = {"name": 35, "street": 35, "city": 35, "description": 70}
_TRANSLIT = str.maketrans({"–": "-", "—": "-", "×": "x", "’": "'", "‘": "'", "“": '"',
                           "”": '"', "…": "...", "€": "EUR", "\n": " ", "\r": " "})


def _unoc(text: str) -> str:
    return text.translate(_TRANSLIT).encode("latin-1", errors="replace").decode("latin-1")


def escape(text: str) -> str:
    """Text safe inside an element: UNOC repertoire, separators released."""
    return "".join(f"?{c}" if c in "?'+:" else c for c in _unoc(text))


def _text(value: str, limit: int) -> str:
    """Free text cut to its element's size before escaping (release characters do not
    count towards the size, ISO 9735)."""
    return _unoc(value)[:limit]


def _ident(value: str, limit: int, field_name: str) -> str:
    """An identifier as it is, or ``FieldError``: cutting it would name another document."""
    if _unoc(value) != value:
        raise FieldError("EDIFACT", field_name, value,
                         "has characters outside the UNOC repertoire (ISO 8859-1)")
    if len(value) > limit:
        raise FieldError("EDIFACT", field_name, value,
                         f"has {len(value)} characters, the element allows at most {limit} "
                         f"(an..{limit})")
    return value


def _d(value: date) -> str:
    return value.strftime("%Y%m%d")


def _nad(qualifier: str, gln: str, party: Party) -> Segment:
    return segment("NAD", qualifier, (_ident(gln, 35, "NAD 3039 (party GLN)"), "", "9"), "",
                   _text(party.name, TEXT_LIMITS["name"]),
                   _text(party.line1, TEXT_LIMITS["street"]),
                   _text(party.city, TEXT_LIMITS["city"]), "",
                   _ident(party.postcode, 9, "NAD 3251 (postcode)"),
                   _ident(party.country, 3, "NAD 3207 (country)"))


def body(inv: Invoice, seller_gln: str, buyer_gln: str) -> list[Segment]:
    """BGM ... the last MOA of one invoice or credit note; ``envelope`` adds UNH and UNT.

    Raises:
        FieldError: an identifier does not fit its element or is not in UNOC.
    """
    segments = [
        segment("BGM", inv.type_code, _ident(inv.number, 35, "BGM 1004 (invoice number)"), "9"),
        segment("DTM", ("137", _d(inv.issue_date), "102")),
    ]
    if inv.delivery_date:
        segments.append(segment("DTM", ("35", _d(inv.delivery_date), "102")))
    for qualifier, reference, what in (("ON", inv.order_reference, "order reference"),
                                       ("DQ", inv.despatch_reference, "despatch reference"),
                                       ("IV", inv.preceding_invoice, "preceding invoice")):
        if reference:
            segments.append(segment("RFF", (qualifier, _ident(reference, 35,
                                                              f"RFF+{qualifier} 1154 ({what})"))))
    for qualifier, gln, party in (("SU", seller_gln, inv.seller), ("BY", buyer_gln, inv.buyer),
                                  ("DP", buyer_gln, inv.buyer), ("IV", buyer_gln, inv.buyer)):
        segments.append(_nad(qualifier, gln, party))
        if qualifier in ("SU", "BY") and party.vat_id:
            segments.append(segment("RFF", ("VA", _ident(party.vat_id, 35,
                                                         "RFF+VA 1154 (VAT number)"))))
    segments += [
        segment("CUX", ("2", _ident(inv.currency, 3, "CUX 6345 (currency)"), "4")),
        segment("PAT", "1", "", ("5", "3", "D", str((inv.due_date - inv.issue_date).days))),
        segment("DTM", ("13", _d(inv.due_date), "102")),
    ]
    for line in inv.lines:
        segments += [
            segment("LIN", _ident(line.line_id, 6, "LIN 1082 (line number)")),
            segment("PIA", "5", (_ident(line.seller_item_id, 35, "PIA 7140 (item number)"),
                                 "SA")),
            segment("IMD", "F", "", ("", "", "", _text(line.item_name,
                                                       TEXT_LIMITS["description"]))),
            segment("QTY", ("47", number(line.quantity),
                            _ident(line.unit_code, 3, "QTY 6411 (unit)"))),
            segment("MOA", ("203", amount(line.net_amount))),
            segment("PRI", ("AAA", number(line.net_price))),
            segment("TAX", "7", "VAT", "", "", ("", "", "", number(line.vat_rate)),
                    _ident(line.vat_category, 3, "TAX 5305 (VAT category)")),
        ]
    segments += [
        segment("UNS", "S"),
        segment("MOA", ("9", amount(inv.payable))),
        segment("MOA", ("77", amount(inv.tax_inclusive))),
        segment("MOA", ("79", amount(inv.line_total))),
        segment("MOA", ("125", amount(inv.tax_exclusive))),
        segment("MOA", ("176", amount(inv.tax_total))),
    ]
    for vat in inv.vat:
        segments += [
            segment("TAX", "7", "VAT", "", "", ("", "", "", number(vat.rate)),
                    _ident(vat.category, 3, "TAX 5305 (VAT category)")),
            segment("MOA", ("124", amount(vat.tax_amount))),
            segment("MOA", ("125", amount(vat.taxable_amount))),
        ]
    return segments


def envelope(bodies: Sequence[Sequence[Segment]], control: int, seller_gln: str,
             buyer_gln: str, prepared: date) -> list[Segment]:
    """UNB, one UNH ... UNT message per body, UNZ: the whole interchange but its UNA.

    Raises:
        FieldError: a GLN or the control reference does not fit its element.
    """
    reference = _ident(str(control), 14, "UNB 0020 (control reference)")
    segments = [segment("UNB", ("UNOC", "3"),
                        (_ident(seller_gln, 35, "UNB 0004 (sender)"), "14"),
                        (_ident(buyer_gln, 35, "UNB 0010 (recipient)"), "14"),
                        (prepared.strftime("%y%m%d"), "0000"), reference)]
    for index, message in enumerate(bodies, start=1):
        ref = _ident(f"{control}-{index}", 14, "UNH 0062 (message reference)")
        segments += [segment("UNH", ref, ("INVOIC", "D", "96A", "UN", "EAN008")), *message,
                     segment("UNT", str(len(message) + 2), ref)]
    segments.append(segment("UNZ", str(len(bodies)), reference))
    return segments


def serialize(segments: Sequence[Segment]) -> bytes:
    """UNA, then one segment per line, ISO 8859-1: the one place values are escaped."""
    lines = [SERVICE_STRING]
    lines += ["+".join([s.tag, *(":".join(escape(c) for c in e) for e in s.elements)]) + "'"
              for s in segments]
    return ("\n".join(lines) + "\n").encode("latin-1")


def interchange(invoices: Sequence[Invoice], control: int, seller_gln: str, buyer_gln: str,
                prepared: date) -> bytes:
    """One UNB ... UNZ interchange (ISO 8859-1 bytes) holding one message per invoice.

    Raises:
        FieldError: an identifier of one of the invoices does not fit its element.
    """
    return serialize(envelope([body(inv, seller_gln, buyer_gln) for inv in invoices], control,
                              seller_gln, buyer_gln, prepared))


def _value(seg: Segment, index: int) -> str:
    return ":".join(seg.elements[index]) if index < len(seg.elements) else ""


def _count_errors(segments: list[Segment]) -> list[tuple[int, str]]:
    """UNT and UNZ counts and references against what was actually read (pydifact
    does not check them)."""
    errors: list[tuple[int, str]] = []
    start, messages = None, 0
    for index, seg in enumerate(segments):
        if seg.tag == "UNH":
            start, messages = index, messages + 1
        elif seg.tag == "UNT" and start is not None:
            actual, head = index - start + 1, segments[start]
            if _value(seg, 0) != str(actual):
                errors.append((index, f"UNT01 says {_value(seg, 0)!r} segments, the message "
                                      f"has {actual}"))
            if _value(seg, 1) != _value(head, 0):
                errors.append((index, f"UNT02 {_value(seg, 1)!r} differs from UNH01 "
                                      f"{_value(head, 0)!r}"))
            start = None
    if not segments or segments[0].tag != "UNB" or segments[-1].tag != "UNZ":
        errors.append((len(segments), "the interchange does not run from UNB to UNZ"))
        return errors
    unz = len(segments) - 1
    if _value(segments[unz], 0) != str(messages):
        errors.append((unz, f"UNZ01 says {_value(segments[unz], 0)!r} messages, the "
                            f"interchange has {messages}"))
    if _value(segments[unz], 1) != _value(segments[0], 4):
        errors.append((unz, f"UNZ02 {_value(segments[unz], 1)!r} differs from UNB05 "
                            f"{_value(segments[0], 4)!r}"))
    return errors


def read(data: bytes) -> Reading:
    """The interchange as a receiver's parser (pydifact) reads it, UNA left out.

    Whatever pydifact raises is reported as an error, never raised: a receiver
    could not read the interchange, so it must not be sent.
    """
    segments: list[Segment] = []
    errors: list[tuple[int, str]] = []
    with warnings.catch_warnings():  # pydifact has no D.96A directory to validate against
        warnings.simplefilter("ignore")
        try:
            parsed = list(Parser().parse(data.decode("latin-1")))
            if not parsed or parsed[0].tag != "UNA" or parsed[0].elements != [SERVICE_STRING[3:]]:
                errors.append((0, f"the interchange does not start with {SERVICE_STRING}"))
            segments = [segment(s.tag, *s.elements) for s in parsed if s.tag != "UNA"]
            list(Interchange.from_segments(parsed).get_messages())
        except Exception as exc:  # any parser failure means a receiver cannot read it
            errors.append((len(segments), f"pydifact cannot read it: {exc}"))
    return Reading(segments, errors + _count_errors(segments))


_SUMMARY = {"9": "due", "77": "gross", "79": "lines", "125": "net", "176": "vat"}
_PER_RATE = {"124": "vat", "125": "base"}


def _message_totals(segments: list[Segment]) -> Totals:
    """The totals of one message's summary section (after UNS)."""
    found: Totals = {}
    summary, rate = False, None
    for seg in segments:
        if seg.tag == "UNS":
            summary = True
        elif summary and seg.tag == "TAX":
            rate = (Decimal(seg.elements[4][3]), seg.elements[5][0])
        elif summary and seg.tag == "MOA":
            qualifier, value = seg.elements[0][0], Decimal(seg.elements[0][1])
            if rate is None:
                key = _SUMMARY.get(qualifier, f"MOA {qualifier}")
            elif qualifier in _PER_RATE:
                key = total_key(_PER_RATE[qualifier], *rate)
            else:
                key = f"MOA {qualifier} after TAX {rate[1]} {number(rate[0])}%"
            if key in found:
                raise ValueError(f"{key} is given twice (MOA {qualifier})")
            found[key] = value
    return found


def totals(reading: Reading) -> dict[str, Totals]:
    """Per invoice number (BGM 1004), the totals of each message of an interchange read."""
    found = {}
    for n, message in enumerate(split_messages(reading.segments, *MESSAGE[1:])[1], start=1):
        segments = [seg for _, seg in message]
        bgm = next((seg for seg in segments if seg.tag == "BGM"), None)
        if bgm is None or len(bgm.elements) < 2:
            raise ValueError(f"message {n} has no invoice number (BGM 1004)")
        found[bgm.elements[1][0]] = _message_totals(segments)
    return found


def read_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number, the totals a receiver's parser (pydifact) reads from the bytes."""
    return totals(read(data))


def build(invoices: Sequence[Invoice], context: BuildContext) -> bytes:
    """The interchange of one partner's invoices (``interchange``).

    Raises:
        FieldError: an identifier does not fit its element or is not in UNOC.
    """
    if context.prepared is None:
        raise ValueError("an EDIFACT interchange needs its preparation date")
    return interchange(invoices, context.control, context.sender, context.receiver,
                       context.prepared)


import pipeline.einvoice.edifact as _syntax  # noqa: E402 (this module, as a Syntax)

FORMAT = register(EInvoiceFormat(
    name="edifact", title="EDIFACT", grouping="partner", media_type="application/EDIFACT",
    suffix=".edi", build=build, read_totals=read_totals, sender="gln", syntax=_syntax))
