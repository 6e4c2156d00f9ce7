"""The official EN 16931 / Peppol validators of ../shared/standards, run for real.

XSD with lxml, compiled schematron (XSLT 2.0 -> SVRL) with Saxon (saxonche).
Each stylesheet is compiled once per test session.
"""

from __future__ import annotations

from functools import cache

from lxml import etree
from saxonche import PySaxonProcessor

from pipeline.settings import SHARED_DIR

STANDARDS = SHARED_DIR / "standards"
FR_RULES = STANDARDS / "fr-reform/schematron"
SVRL = {"svrl": "http://purl.oclc.org/dsdl/svrl"}
XSD = {
    "cii": STANDARDS / "cii/xsd/facturx-en16931/Factur-X_EN16931.xsd",
    "ubl-invoice": STANDARDS / "ubl/xsd/maindoc/UBL-Invoice-2.1.xsd",
    "ubl-creditnote": STANDARDS / "ubl/xsd/maindoc/UBL-CreditNote-2.1.xsd",
    "cdar": STANDARDS / "fr-reform/cdar-xsd/CrossDomainAcknowledgementAndResponse_100pD22B.xsd",
}
SCHEMATRON = {
    "cii": STANDARDS / "cii/EN16931-CII-validation.xslt",
    "ubl": STANDARDS / "ubl/EN16931-UBL-validation.xslt",
    "peppol": STANDARDS / "ubl/peppol/PEPPOL-EN16931-UBL.xslt",
    # The French 2026 rules (FNFE-MPE CTC FR), on top of EN 16931.
    "br-fr-cii": FR_RULES / "20260804_BR-FR-Flux2-Schematron-CII_V1.4.0.03.xslt",
    "br-fr-ubl": FR_RULES / "20260804_BR-FR-Flux2-Schematron-UBL_V1.4.0.03.xslt",
    "br-fr-cdv": FR_RULES / "20260804_BR-FR-CDV-Schematron-CDAR_V1.4.0.03.xslt",
}

_processor = PySaxonProcessor(license=False)


@cache
def xsd(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD[name])))


@cache
def _stylesheet(name: str):  # type: ignore[no-untyped-def]
    return _processor.new_xslt30_processor().compile_stylesheet(
        stylesheet_file=str(SCHEMATRON[name]))


def xsd_errors(name: str, xml: bytes) -> list[str]:
    schema = xsd(name)
    if schema.validate(etree.fromstring(xml)):
        return []
    return [str(e) for e in schema.error_log]


def schematron_failures(name: str, xml: bytes, flag: str = "fatal") -> list[tuple[str, str]]:
    """(rule id, text) of every failed assertion of that flag."""
    node = _processor.parse_xml(xml_text=xml.decode("utf-8-sig"))
    svrl = etree.fromstring(_stylesheet(name).transform_to_string(xdm_node=node).encode())
    return [(f.get("id"), " ".join(f.findtext("svrl:text", "", SVRL).split()))
            for f in svrl.xpath(f'//svrl:failed-assert[@flag="{flag}"]', namespaces=SVRL)]


def check_documents(docs, build, schema_for, layers) -> tuple[int, float, list[str]]:  # type: ignore[no-untyped-def]
    """Build each document's XML and run the XSD and schematron layers on it
    (``layers``: names, or a function of the document giving them).

    Returns (documents checked, seconds per document, problems naming invoice and rule).
    """
    import time

    problems, start = [], time.perf_counter()
    for doc in docs:
        xml = build(doc)
        problems += [f"{doc.number} XSD: {e}" for e in xsd_errors(schema_for(doc), xml)]
        for layer in (layers(doc) if callable(layers) else layers):
            problems += [f"{doc.number} {rule}: {text}"
                         for rule, text in schematron_failures(layer, xml)]
    return len(docs), (time.perf_counter() - start) / len(docs), problems
