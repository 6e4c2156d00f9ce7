"""Factur-X: the CII XML embedded in a PDF/A-3b, with the Factur-X XMP metadata.

WeasyPrint writes the final file in one pass (``pdf_variant="pdf/a-3b"``, the XML
as an ``Attachment`` with AFRelationship ``Alternative``, the XMP extension
schema through ``xmp_metadata``), with fixed dates so the bytes stay
deterministic; the ``factur-x`` library is only used to check the result.

The registered format builds the XML; its totals are read back from the PDF
(or from the XML alone) by ``xml_totals.cii_totals``, which shares nothing with the writer.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from datetime import datetime, time
from typing import TYPE_CHECKING

from pipeline.einvoice.cii import to_cii
from pipeline.einvoice.en16931 import Invoice
from pipeline.einvoice.registry import BuildContext, EInvoiceFormat, Totals, one, register
from pipeline.einvoice.xml_totals import cii_totals

if TYPE_CHECKING:
    from weasyprint import Attachment

__all__ = ["FILENAME", "PDF_VARIANT", "XMP", "attachment", "embedded_xml", "read_totals",
           "build", "FORMAT"]

FILENAME = "factur-x.xml"
PDF_VARIANT = "pdf/a-3b"
_FX = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
_PROPERTIES = {
    "DocumentFileName": "The name of the embedded XML document",
    "DocumentType": "The type of the hybrid document in capital letters, e.g. INVOICE or ORDER",
    "Version": "The actual version of the standard applying to the embedded XML document",
    "ConformanceLevel": "The conformance level of the embedded XML document",
}

XMP = (
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" '
    'xmlns:pdfaExtension="http://www.aiim.org/pdfa/ns/extension/" '
    'xmlns:pdfaSchema="http://www.aiim.org/pdfa/ns/schema#" '
    'xmlns:pdfaProperty="http://www.aiim.org/pdfa/ns/property#">'
    '<pdfaExtension:schemas><rdf:Bag><rdf:li rdf:parseType="Resource">'
    '<pdfaSchema:schema>Factur-X PDFA Extension Schema</pdfaSchema:schema>'
    f'<pdfaSchema:namespaceURI>{_FX}</pdfaSchema:namespaceURI>'
    '<pdfaSchema:prefix>fx</pdfaSchema:prefix>'
    '<pdfaSchema:property><rdf:Seq>'
    + "".join('<rdf:li rdf:parseType="Resource">'
              f'<pdfaProperty:name>{name}</pdfaProperty:name>'
              '<pdfaProperty:valueType>Text</pdfaProperty:valueType>'
              '<pdfaProperty:category>external</pdfaProperty:category>'
              f'<pdfaProperty:description>{text}</pdfaProperty:description></rdf:li>'
              for name, text in _PROPERTIES.items())
    + '</rdf:Seq></pdfaSchema:property></rdf:li></rdf:Bag></pdfaExtension:schemas>'
    '</rdf:Description>'
    f'<rdf:Description rdf:about="" xmlns:fx="{_FX}">'
    '<fx:DocumentType>INVOICE</fx:DocumentType>'
    f'<fx:DocumentFileName>{FILENAME}</fx:DocumentFileName>'
    '<fx:Version>1.0</fx:Version>'
    '<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>'
    '</rdf:Description></rdf:RDF>'
).encode()


def attachment(invoice: Invoice) -> tuple[Attachment, bytes]:
    """The ``factur-x.xml`` attachment of an invoice, and the XML bytes it carries."""
    from weasyprint import Attachment  # only the renderer needs WeasyPrint

    xml = to_cii(invoice)
    stamp = datetime.combine(invoice.issue_date, time(0, 0))
    return Attachment(string=xml.decode(), name=FILENAME, description="Factur-X invoice data",
                      created=stamp, modified=stamp, relationship="Alternative"), xml


_EMBEDDED = re.compile(
    rb"<</Type /EmbeddedFile/Subtype /text#2fxml/Params <</CheckSum <([0-9a-f]{32})>"
    rb"[^>]*>>/Filter /FlateDecode/Length (\d+)>>\nstream\n")


def embedded_xml(pdf: bytes) -> bytes:
    """The XML file embedded in the PDF, read from the PDF bytes themselves.

    Our PDFs embed exactly one file (``factur-x.xml``, checked with pypdf and the
    factur-x library in the tests); reading its stream directly costs a fraction of
    a full PDF parse, which matters at one call per invoice.

    Raises:
        ValueError: there is not exactly one embedded XML file, or it fails its checksum.
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


def read_totals(data: bytes) -> dict[str, Totals]:
    """Per invoice number, the totals in a Factur-X PDF's ``factur-x.xml`` (or in the XML)."""
    return cii_totals(embedded_xml(data) if data.startswith(b"%PDF") else data)


def build(invoices: Sequence[Invoice], context: BuildContext) -> bytes:
    """The ``factur-x.xml`` of one invoice, which the renderer embeds in its PDF."""
    return to_cii(one(invoices))


FORMAT = register(EInvoiceFormat(
    name="facturx", title="Factur-X", grouping="invoice", media_type="text/xml",
    suffix=".xml", build=build, read_totals=read_totals, selectable=False))
