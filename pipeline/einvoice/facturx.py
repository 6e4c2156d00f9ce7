"""Factur-X: the CII XML embedded in a PDF/A-3b, with the Factur-X XMP metadata.

WeasyPrint writes the final file in one pass (``pdf_variant="pdf/a-3b"``, the XML
as an ``Attachment`` with AFRelationship ``Alternative``, the XMP extension
schema through ``xmp_metadata``), with fixed dates so the bytes stay
deterministic; the ``factur-x`` library is only used to check the result.
"""

from __future__ import annotations

from datetime import datetime, time

from weasyprint import Attachment

from pipeline.einvoice.cii import to_cii
from pipeline.einvoice.en16931 import Invoice

__all__ = ["FILENAME", "PDF_VARIANT", "XMP", "attachment"]

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
    xml = to_cii(invoice)
    stamp = datetime.combine(invoice.issue_date, time(0, 0))
    return Attachment(string=xml.decode(), name=FILENAME, description="Factur-X invoice data",
                      created=stamp, modified=stamp, relationship="Alternative"), xml
