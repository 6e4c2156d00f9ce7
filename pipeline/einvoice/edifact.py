"""UN/EDIFACT INVOIC D.96A (EANCOM 2002 subset): one interchange per partner and batch.

Text is escaped with the release character (``? ' + :`` become ``?? ?' ?+ ?:``) and
transliterated to the UNOC (ISO 8859-1) repertoire; segment counts (UNT) and
message counts (UNZ) are computed, never written by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from pipeline.einvoice.cii import amount, number
from pipeline.einvoice.en16931 import Invoice

__all__ = ["escape", "interchange", "message_segments", "SERVICE_STRING"]

SERVICE_STRING = "UNA:+.? '"
_TRANSLIT = str.maketrans({"–": "-", "—": "-", "×": "x", "’": "'", "‘": "'", "“": '"',
                           "”": '"', "…": "...", "€": "EUR", "\n": " ", "\r": " "})


def escape(text: str) -> str:
    """Text safe inside an element: UNOC repertoire, separators released."""
    latin1 = text.translate(_TRANSLIT).encode("latin-1", errors="replace").decode("latin-1")
    return "".join(f"?{c}" if c in "?'+:" else c for c in latin1)


def _seg(*elements: str | Sequence[str]) -> str:
    parts = [":".join(e) if not isinstance(e, str) else e for e in elements]
    while parts and parts[-1] == "":  # drop trailing empty elements, never an escaped "+"
        parts.pop()
    return "+".join(parts) + "'"


def _d(value: date) -> str:
    return value.strftime("%Y%m%d")


def message_segments(inv: Invoice, reference: str, seller_gln: str, buyer_gln: str
                     ) -> list[str]:
    """UNH ... UNT of one invoice or credit note."""
    segments = [
        _seg("UNH", escape(reference), ("INVOIC", "D", "96A", "UN", "EAN008")),
        _seg("BGM", inv.type_code, escape(inv.number), "9"),
        _seg("DTM", ("137", _d(inv.issue_date), "102")),
    ]
    if inv.delivery_date:
        segments.append(_seg("DTM", ("35", _d(inv.delivery_date), "102")))
    if inv.order_reference:
        segments.append(_seg("RFF", ("ON", escape(inv.order_reference))))
    if inv.despatch_reference:
        segments.append(_seg("RFF", ("DQ", escape(inv.despatch_reference))))
    if inv.preceding_invoice:
        segments.append(_seg("RFF", ("IV", escape(inv.preceding_invoice))))
    for qualifier, gln, party in (("SU", seller_gln, inv.seller), ("BY", buyer_gln, inv.buyer),
                                  ("DP", buyer_gln, inv.buyer), ("IV", buyer_gln, inv.buyer)):
        segments.append(_seg("NAD", qualifier, (gln, "", "9"), "", escape(party.name)[:35],
                             escape(party.line1)[:35], escape(party.city)[:35], "",
                             escape(party.postcode), party.country))
        if qualifier in ("SU", "BY") and party.vat_id:
            segments.append(_seg("RFF", ("VA", escape(party.vat_id))))
    segments += [
        _seg("CUX", ("2", inv.currency, "4")),
        _seg("PAT", "1", "", ("5", "3", "D", str((inv.due_date - inv.issue_date).days))),
        _seg("DTM", ("13", _d(inv.due_date), "102")),
    ]
    for line in inv.lines:
        segments += [
            _seg("LIN", line.line_id),
            _seg("PIA", "5", (escape(line.seller_item_id), "SA")),
            _seg("IMD", "F", "", ("", "", "", escape(line.item_name)[:70])),
            _seg("QTY", ("47", number(line.quantity), line.unit_code)),
            _seg("MOA", ("203", amount(line.net_amount))),
            _seg("PRI", ("AAA", number(line.net_price))),
            _seg("TAX", "7", "VAT", "", "", ("", "", "", number(line.vat_rate)),
                 line.vat_category),
        ]
    segments += [
        _seg("UNS", "S"),
        _seg("MOA", ("86", amount(inv.payable))),
        _seg("MOA", ("79", amount(inv.line_total))),
        _seg("MOA", ("125", amount(inv.tax_exclusive))),
        _seg("MOA", ("176", amount(inv.tax_total))),
    ]
    for vat in inv.vat:
        segments += [
            _seg("TAX", "7", "VAT", "", "", ("", "", "", number(vat.rate)), vat.category),
            _seg("MOA", ("124", amount(vat.tax_amount))),
            _seg("MOA", ("125", amount(vat.taxable_amount))),
        ]
    segments.append(_seg("UNT", str(len(segments) + 1), escape(reference)))
    return segments


def interchange(invoices: Sequence[Invoice], control: int, seller_gln: str, buyer_gln: str,
                prepared: date) -> bytes:
    """One UNB ... UNZ interchange (ISO 8859-1 bytes) holding one message per invoice."""
    lines = [SERVICE_STRING,
             _seg("UNB", ("UNOC", "3"), (seller_gln, "14"), (buyer_gln, "14"),
                  (prepared.strftime("%y%m%d"), "0000"), str(control))]
    for index, inv in enumerate(invoices, start=1):
        lines += message_segments(inv, f"{control}-{index}", seller_gln, buyer_gln)
    lines.append(_seg("UNZ", str(len(invoices)), str(control)))
    return "\n".join(lines).encode("latin-1") + b"\n"


def totals_from_message(segments: list[tuple[str, list[list[str]]]]) -> dict[str, Decimal]:
    """Totals a receiver reads from one parsed message (MOA after UNS)."""
    totals: dict[str, Decimal] = {}
    after_uns, rate = False, None
    for tag, elements in segments:
        if tag == "UNS":
            after_uns = True
        elif after_uns and tag == "TAX":
            rate = elements[4][3] if len(elements) > 4 else None
            category = elements[5][0] if len(elements) > 5 else ""
        elif after_uns and tag == "MOA":
            qualifier, value = elements[0][0], Decimal(elements[0][1])
            if qualifier == "124" and rate is not None:
                totals[f"vat {category} {Decimal(rate).normalize()}%"] = value
            elif rate is None:
                totals[{"86": "due", "79": "lines", "125": "net", "176": "vat"}[qualifier]] = value
    totals["gross"] = totals["due"]
    return totals
