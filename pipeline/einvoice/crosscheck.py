"""Cross-check before delivery: totals read back from the artifact actually produced.

A PDF whose embedded Factur-X XML does not carry, to the cent, the totals of
the document model (net, VAT per rate, gross, amount due) fails that invoice
with the differing values; it is never sent. The extract's own header totals
were already compared with the model by validation (TOTALS_MISMATCH).
"""

from __future__ import annotations

import hashlib
import re
import warnings
import zlib
from decimal import Decimal

from lxml import etree

from pipeline.documents import InvoiceDocument
from pipeline.einvoice.cii import NS
from pipeline.einvoice.facturx import FILENAME
from pipeline.einvoice.ubl import CAC, CBC

__all__ = ["Totals", "expected_totals", "cii_totals", "embedded_xml", "check_pdf", "ubl_totals",
           "edifact_totals", "x12_totals", "differences", "by_rate"]

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


def edifact_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number (BGM), the totals a receiver parses from an EDIFACT interchange."""
    from pydifact.segmentcollection import Interchange

    from pipeline.einvoice.edifact import totals_from_message

    found = {}
    with warnings.catch_warnings():  # pydifact has no D.96A directory to validate against
        warnings.simplefilter("ignore")
        interchange = Interchange.from_str(data.decode("latin-1"))
        for message in interchange.get_messages():
            segments = [(seg.tag, [e if isinstance(e, list) else [e] for e in seg.elements])
                        for seg in message.segments]
            number = next(e[1][0] for tag, e in segments if tag == "BGM")
            found[number] = totals_from_message(segments)
    return found


def x12_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number (BIG02), the totals a receiver parses from an X12 interchange."""
    from pipeline.einvoice.x12 import parse, totals_from_transaction

    found: dict[str, Totals] = {}
    current: list[list[str]] = []
    for segment in parse(data):
        if segment[0] == "ST":
            current = []
        current.append(segment)
        if segment[0] == "SE":
            number = next(s[2] for s in current if s[0] == "BIG")
            found[number] = totals_from_transaction(current)
    return found


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
