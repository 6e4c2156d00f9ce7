"""UBL 2.1: XSD and EN 16931 UBL schematron, all fatal-free; a domestic French invoice
passes the French 2026 rules (BR-FR), any other Peppol BIS 3."""

from dataclasses import replace
from decimal import Decimal

from lxml import etree

from pipeline.einvoice.en16931 import to_en16931
from pipeline.einvoice.ubl import is_french, to_ubl
from tests.standards import check_documents, schematron_failures


def _check_all(docs) -> tuple[int, float, list[str]]:
    return check_documents(
        docs, lambda d: to_ubl(to_en16931(d)),
        lambda d: "ubl-creditnote" if d.is_credit_note else "ubl-invoice",
        lambda d: ("ubl", "br-fr-ubl" if is_french(to_en16931(d)) else "peppol"))


def test_sample_extract_passes_ubl_xsd_en16931_and_french_or_peppol_rules(sample_docs) -> None:
    checked, per_invoice, problems = _check_all(sample_docs)
    assert checked == 290 and problems == []
    french = sum(is_french(to_en16931(d)) for d in sample_docs)
    assert 0 < french < checked  # both profiles are exercised
    print(f"{checked} invoices, {per_invoice * 1000:.1f} ms each (XSD + 2 schematrons)")


def test_1000_generated_invoices_pass(generated_docs) -> None:
    checked, per_invoice, problems = _check_all(generated_docs)
    assert checked == 1000 and problems == []
    print(f"{checked} invoices, {per_invoice * 1000:.1f} ms each (XSD + 2 schematrons)")


def test_endpoints(sample_docs) -> None:
    """A French buyer is addressed by its SIREN in the reform's directory (scheme 0225,
    BR-FR-21), even when it also has a Peppol id; a buyer abroad by its GLN."""
    ns = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
    doc = next(d for d in sample_docs if d.peppol_id)
    seller, buyer = etree.fromstring(to_ubl(to_en16931(doc))).findall(".//cbc:EndpointID", ns)
    assert (seller.get("schemeID"), seller.text) == ("0002", doc.seller.siren)
    assert (buyer.get("schemeID"), buyer.text) == ("0225", doc.buyer.siren)
    abroad = next(d for d in sample_docs if d.buyer.country != "FR")
    buyer = etree.fromstring(to_ubl(to_en16931(abroad))).findall(".//cbc:EndpointID", ns)[1]
    assert (buyer.get("schemeID"), buyer.text) == ("0088", abroad.gln)


def test_rules_catch_a_broken_invoice(sample_docs) -> None:
    doc = next(d for d in sample_docs if not d.is_credit_note)
    line = doc.lines[0]
    broken = replace(doc, lines=(replace(line, net=line.net + Decimal("100.00")),
                                 *doc.lines[1:]))
    xml = to_ubl(to_en16931(broken))
    assert "BR-CO-10" in {r for r, _ in schematron_failures("ubl", xml)}
    assert "PEPPOL-EN16931-R120" in {r for r, _ in schematron_failures("peppol", xml)}
