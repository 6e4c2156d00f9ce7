"""Factur-X: the CII XML passes the official XSD, the EN 16931 schematron and the French
2026 rules (BR-FR); the PDF is a PDF/A-3b carrying it as factur-x.xml, accepted by the
factur-x library."""

import io
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import facturx
import pytest
from lxml import etree
from pypdf import PdfReader

from pipeline.einvoice.cii import to_cii
from pipeline.einvoice.en16931 import to_en16931
from pipeline.render.engine import WeasyPrintEngine
from pipeline.settings import PROJECT_ROOT
from tests.standards import check_documents, schematron_failures


def _check_all(docs) -> tuple[int, float, list[str]]:
    return check_documents(docs, lambda d: to_cii(to_en16931(d)), lambda d: "cii",
                           ("cii", "br-fr-cii"))


def test_sample_extract_passes_xsd_en16931_and_french_rules(sample_docs) -> None:
    checked, per_invoice, problems = _check_all(sample_docs)
    assert checked == 290 and any(d.is_credit_note for d in sample_docs)
    assert problems == []
    print(f"{checked} invoices, {per_invoice * 1000:.1f} ms each (XSD + 2 schematrons)")


def test_1000_generated_invoices_of_every_kind_pass(generated_docs) -> None:
    checked, per_invoice, problems = _check_all(generated_docs)
    assert checked == 1000 and problems == []
    assert {d.operation for d in generated_docs} == {"goods", "services", "mixed"}
    assert {r.category for d in generated_docs for r in d.vat_breakdown} == {
        "S", "E", "AE", "K", "G"}
    print(f"{checked} invoices, {per_invoice * 1000:.1f} ms each (XSD + 2 schematrons)")


def test_schematron_catches_totals_that_do_not_match_the_lines(sample_docs) -> None:
    doc = next(d for d in sample_docs if not d.is_credit_note)
    line = doc.lines[0]
    broken = replace(doc, lines=(replace(line, net=line.net + Decimal("100.00")),
                                 *doc.lines[1:]))
    rules = {rule for rule, _ in schematron_failures("cii", to_cii(to_en16931(broken)))}
    assert "BR-CO-10" in rules  # sum of line nets != BT-106


@pytest.fixture(scope="module")
def pdfs(sample_docs):
    engine = WeasyPrintEngine(PROJECT_ROOT / "templates")
    chosen = [next(d for d in sample_docs if not d.is_credit_note),
              next(d for d in sample_docs if d.is_credit_note)]
    return [(doc, engine.render(doc)) for doc in chosen]


def test_pdf_is_pdfa3b_with_factur_x_attachment(pdfs) -> None:
    for doc, pdf in pdfs:
        reader = PdfReader(io.BytesIO(pdf))
        root = reader.trailer["/Root"]
        xmp = root["/Metadata"].get_object().get_data().decode()
        assert re.search(r"pdfaid:part[^>]*>\s*3|pdfaid:part=\"3\"", xmp), xmp[:500]
        assert re.search(r"pdfaid:conformance[^>]*>\s*B|pdfaid:conformance=\"B\"", xmp)
        assert "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
        # WeasyPrint lists the one file specification twice in /AF; it is a single file.
        [number] = {a.idnum for a in root["/AF"]}
        spec = reader.get_object(number)
        assert spec["/F"] == "factur-x.xml" and spec["/AFRelationship"] == "/Alternative"
        embedded = spec["/EF"]["/F"].get_object().get_data()
        assert embedded == to_cii(to_en16931(doc))


def test_factur_x_library_accepts_the_pdf(pdfs) -> None:
    for doc, pdf in pdfs:
        name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=True)
        assert name == "factur-x.xml"
        tree = etree.fromstring(xml)
        assert facturx.get_flavor(tree) == "factur-x"
        assert facturx.get_level(tree) == "en16931"
        assert tree.findtext(".//{*}ExchangedDocument/{*}TypeCode") == (
            "381" if doc.is_credit_note else "380")


def test_write_factur_x_example(pdfs, tmp_path: Path) -> None:
    """The file a reviewer can open: written where a failing run leaves its artifacts."""
    doc, pdf = pdfs[0]
    (tmp_path / f"{doc.number}.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF-1.7") or pdf.startswith(b"%PDF-1.6")


class OffByOneCentEngine(WeasyPrintEngine):
    """A faulty engine (injected for the test): its XML says 0.01 more is due."""

    def factur_x(self, doc):
        from weasyprint import Attachment
        xml = to_cii(to_en16931(doc)).replace(
            f"<ram:DuePayableAmount>{doc.total_gross:.2f}<".encode(),
            f"<ram:DuePayableAmount>{doc.total_gross + Decimal('0.01'):.2f}<".encode())
        return Attachment(string=xml.decode(), name="factur-x.xml", relationship="Alternative")


def test_cross_check_stops_an_artifact_one_cent_off(sample_docs, tmp_path) -> None:
    from pipeline.render.worker import render_documents
    good, bad = sample_docs[10], sample_docs[11]
    engine = OffByOneCentEngine(PROJECT_ROOT / "templates")
    [faulty] = render_documents(engine, [bad])
    assert faulty.pdf is None and faulty.sha256 is None
    expected = f"due: document {bad.total_gross} != artifact {bad.total_gross + Decimal('0.01')}"
    assert "not delivered" in faulty.error and expected in faulty.error
    [ok] = render_documents(WeasyPrintEngine(PROJECT_ROOT / "templates"), [good])
    assert ok.pdf is not None and ok.error is None
