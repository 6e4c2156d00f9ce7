"""Cross-check before delivery: totals read back from the artifact actually produced.

A PDF whose embedded Factur-X XML does not carry, to the cent, the totals of
the document model (net, VAT per rate, gross, amount due) fails that invoice
with the differing values; it is never sent. The extract's own header totals
were already compared with the model by validation (TOTALS_MISMATCH).

An EDI interchange is also read back whole by a receiver's parser (pydifact,
pyx12) and compared with the segments the writer intended, value for value,
with the parser's own envelope checks (segment, message and group counts,
control numbers): totals alone would not notice a name that swallowed the
next element (issue 9).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from decimal import Decimal

from lxml import etree

from pipeline.documents import InvoiceDocument
from pipeline.einvoice.cii import NS
from pipeline.einvoice.facturx import FILENAME
from pipeline.einvoice.segments import Element, Reading, Segment
from pipeline.einvoice.ubl import CAC, CBC

__all__ = ["Totals", "expected_totals", "cii_totals", "embedded_xml", "check_pdf", "ubl_totals",
           "edifact_totals", "x12_totals", "totals_read_back", "differences", "by_rate",
           "interchange_differences", "MESSAGE_TAGS"]

Totals = dict[str, Decimal]


def expected_totals(doc: InvoiceDocument) -> Totals:
    """The model's totals, keyed like ``cii_totals``."""
    totals = {"net": doc.total_net, "vat": doc.total_vat, "gross": doc.total_gross,
              "due": doc.total_gross}
    for row in doc.vat_breakdown:
        totals[f"vat {row.category} {row.rate.normalize()}%"] = row.vat
    return totals


def cii_totals(xml: bytes) -> Totals:
    """Totals as a receiver reads them from CII XML."""
    root = etree.fromstring(xml)
    summary = root.find(".//ram:SpecifiedTradeSettlementHeaderMonetarySummation", NS)

    def read(tag: str) -> Decimal:
        return Decimal(summary.findtext(f"ram:{tag}", namespaces=NS) or "NaN")

    totals = {"net": read("TaxBasisTotalAmount"), "vat": read("TaxTotalAmount"),
              "gross": read("GrandTotalAmount"), "due": read("DuePayableAmount")}
    for tax in root.iterfind(".//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax",
                             NS):
        rate = Decimal(tax.findtext("ram:RateApplicablePercent", namespaces=NS)).normalize()
        key = f"vat {tax.findtext('ram:CategoryCode', namespaces=NS)} {rate}%"
        totals[key] = Decimal(tax.findtext("ram:CalculatedAmount", namespaces=NS))
    return totals


def ubl_totals(xml: bytes) -> Totals:
    """Totals as a receiver reads them from UBL XML."""
    root = etree.fromstring(xml)
    ns = {"cac": CAC, "cbc": CBC}
    legal = root.find("cac:LegalMonetaryTotal", ns)

    def read(tag: str) -> Decimal:
        return Decimal(legal.findtext(f"cbc:{tag}", namespaces=ns) or "NaN")

    totals = {"net": read("TaxExclusiveAmount"), "gross": read("TaxInclusiveAmount"),
              "due": read("PayableAmount"),
              "vat": Decimal(root.findtext("cac:TaxTotal/cbc:TaxAmount", namespaces=ns))}
    for sub in root.iterfind("cac:TaxTotal/cac:TaxSubtotal", ns):
        rate = Decimal(sub.findtext("cac:TaxCategory/cbc:Percent", namespaces=ns)).normalize()
        key = f"vat {sub.findtext('cac:TaxCategory/cbc:ID', namespaces=ns)} {rate}%"
        totals[key] = Decimal(sub.findtext("cbc:TaxAmount", namespaces=ns))
    return totals


# What one message is called, and the segments that open and close it.
MESSAGE_TAGS = {"edifact": ("message", "UNH", "UNT"), "x12": ("transaction set", "ST", "SE")}
_SHOWN = 5  # differences listed per message; a shifted segment makes every later one differ


def _split(segments: Sequence[Segment], start: str, end: str
           ) -> tuple[list[Segment], list[list[tuple[int, Segment]]]]:
    """Segments outside any message, and each message with every segment's index."""
    outside: list[Segment] = []
    messages: list[list[tuple[int, Segment]]] = []
    current: list[tuple[int, Segment]] | None = None
    for index, seg in enumerate(segments):
        if seg.tag == start:
            current = []
            messages.append(current)
        if current is None:
            outside.append(seg)
        else:
            current.append((index, seg))
        if seg.tag == end:
            current = None
    return outside, messages


def _show(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _element_differences(name: str, tag: str, written: tuple[Element, ...],
                         read: tuple[Element, ...]) -> list[str]:
    found = []
    for position in range(max(len(written), len(read))):
        mine = written[position] if position < len(written) else ()
        theirs = read[position] if position < len(read) else ()
        for part in range(max(len(mine), len(theirs))):
            want = mine[part] if part < len(mine) else None
            got = theirs[part] if part < len(theirs) else None
            if want != got:
                ref = f"{tag}{position + 1:02d}" + (
                    f"-{part + 1}" if max(len(mine), len(theirs)) > 1 else "")
                found.append(f"{name} {ref}: expected {_show(want)}, read back {_show(got)}")
    return found


def _segment_differences(where: str, written: Sequence[Segment], read: Sequence[Segment]
                         ) -> list[str]:
    found = []
    if len(written) != len(read):
        found.append(f"{where}: {len(written)} segments written, {len(read)} read back")
    for number, (mine, theirs) in enumerate(zip(written, read, strict=False), start=1):
        name = f"{where} segment {number}"
        if mine.tag != theirs.tag:
            found.append(f"{name}: expected {mine.tag}, read back {theirs.tag}")
        else:
            found += _element_differences(name, mine.tag, mine.elements, theirs.elements)
    if len(found) > _SHOWN:
        found[_SHOWN:] = [f"{where}: {len(found) - _SHOWN} more differences"]
    return found


def interchange_differences(syntax: str, written: Sequence[Segment], reading: Reading
                            ) -> list[list[str]]:
    """Per message written, how the interchange read back differs from what was meant.

    Each message's list holds the differences in its own segments (tag, element and
    component, expected and read-back values), the parser's errors at those
    segments, and whatever concerns the whole interchange (envelope segments, the
    number of messages, errors outside any message), since none of its messages
    can go without the others. All lists empty: the interchange reads back as meant.

    Args:
        syntax: ``edifact`` or ``x12`` (``MESSAGE_TAGS``).
        written: the segments given to the serializer, UNA aside.
        reading: the serialized bytes as read back (``edifact.read``, ``x12.read``).
    """
    label, start, end = MESSAGE_TAGS[syntax]
    outside, messages = _split(written, start, end)
    outside_read, messages_read = _split(reading.segments, start, end)
    owner = {index: n for n, message in enumerate(messages_read) for index, _ in message}
    common: list[str] = []
    own: list[list[str]] = [[] for _ in messages]
    for index, error in reading.errors:
        n = owner.get(index)
        (own[n] if n is not None and n < len(own) else common).append(error)
    if len(messages_read) != len(messages):
        common.append(f"{len(messages)} {label}s written, {len(messages_read)} read back")
    common += _segment_differences("envelope", outside, outside_read)
    for n, message in enumerate(messages):
        theirs = messages_read[n] if n < len(messages_read) else []
        own[n] += _segment_differences(f"{label} {n + 1}", [s for _, s in message],
                                       [s for _, s in theirs])
    return [common + found for found in own]


def totals_read_back(syntax: str, reading: Reading) -> dict[str, Totals]:
    """Per invoice number (BGM 1004, BIG02), the totals a receiver reads from an
    interchange already read back (``edifact.read``, ``x12.read``): one parse serves
    both this and ``interchange_differences``."""
    from pipeline.einvoice.edifact import totals_from_message
    from pipeline.einvoice.x12 import totals_from_transaction

    _, start, end = MESSAGE_TAGS[syntax]
    found = {}
    for message in _split(reading.segments, start, end)[1]:
        segments = [seg for _, seg in message]
        if syntax == "edifact":
            number = next(s.elements[1][0] for s in segments if s.tag == "BGM")
            found[number] = totals_from_message([(s.tag, [list(e) for e in s.elements])
                                                 for s in segments])
        else:
            number = next(s.elements[1][0] for s in segments if s.tag == "BIG")
            found[number] = totals_from_transaction([[s.tag, *(">".join(e) for e in s.elements)]
                                                     for s in segments])
    return found


def edifact_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number (BGM), the totals a receiver parses from an EDIFACT interchange."""
    from pipeline.einvoice.edifact import read

    return totals_read_back("edifact", read(data))


def x12_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number (BIG02), the totals a receiver parses from an X12 interchange."""
    from pipeline.einvoice.x12 import read

    return totals_read_back("x12", read(data))


def by_rate(totals: Totals) -> Totals:
    """Per-rate VAT keyed by rate only (X12 TXI carries no VAT category)."""
    return {(f"vat {k.split()[-1]}" if k.startswith("vat ") else k): v
            for k, v in totals.items()}


_EMBEDDED = re.compile(
    rb"<</Type /EmbeddedFile/Subtype /text#2fxml/Params <</CheckSum <([0-9a-f]{32})>"
    rb"[^>]*>>/Filter /FlateDecode/Length (\d+)>>\nstream\n")


def embedded_xml(pdf: bytes) -> bytes:
    """The XML file embedded in the PDF, read from the PDF bytes themselves.

    Our PDFs embed exactly one file (``factur-x.xml``, checked with pypdf and the
    factur-x library in the tests); reading its stream directly costs a fraction of
    a full PDF parse, which matters at one call per invoice.
    """
    found = list(_EMBEDDED.finditer(pdf))
    if len(found) != 1:
        raise ValueError(f"expected one embedded {FILENAME}, found {len(found)}")
    checksum, length = found[0].group(1).decode(), int(found[0].group(2))
    start = found[0].end()
    xml = zlib.decompress(pdf[start:start + length])
    if hashlib.md5(xml).hexdigest() != checksum:  # noqa: S324 (PDF's own checksum)
        raise ValueError(f"embedded {FILENAME} does not match its checksum")
    return xml


def differences(expected: Totals, actual: Totals) -> list[str]:
    """Every total that differs, with both values."""
    keys = sorted(set(expected) | set(actual))
    return [f"{k}: document {expected.get(k)} != artifact {actual.get(k)}"
            for k in keys if expected.get(k) != actual.get(k)]


def check_pdf(doc: InvoiceDocument, pdf: bytes) -> list[str]:
    """Differences between the model and the Factur-X XML inside ``pdf`` (empty: all agree)."""
    try:
        actual = cii_totals(embedded_xml(pdf))
    except (ValueError, etree.XMLSyntaxError, AttributeError) as exc:
        return [f"cannot read totals back from the PDF: {exc}"]
    return differences(expected_totals(doc), actual)
