"""Rendered PDFs say what an invoice must say, and templates cannot misbehave."""

import html
import re
import shutil
import subprocess
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from babel.numbers import format_currency

from pipeline.documents import InvoiceDocument, VatRow, build_documents
from pipeline.errors import RenderError, TemplateError
from pipeline.executor import ProcessExecutor
from pipeline.ingest import ExtractBundle
from pipeline.render.engine import WeasyPrintEngine
from pipeline.render.worker import w_render_batch
from pipeline.settings import PROJECT_ROOT, Settings

TEMPLATES = PROJECT_ROOT / "templates"
INVOICE_HEADING = '{% block heading %}{{ _("Invoice") }}{% endblock %}'


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout
    return text


def squash(text: str) -> str:
    """Collapse every kind of space (Babel uses narrow no-break spaces)."""
    return re.sub(r"[\s\u202f\u00a0]+", " ", text)


def eur(value: Decimal) -> str:
    return squash(format_currency(value, "EUR", locale="fr_FR"))


@pytest.fixture(scope="module")
def docs(clean_bundle: ExtractBundle) -> list[InvoiceDocument]:
    numbers = clean_bundle.invoices["invoice_number"].to_list()
    return build_documents(clean_bundle, numbers, Settings().seller)


@pytest.fixture(scope="module")
def renderer() -> WeasyPrintEngine:
    return WeasyPrintEngine(TEMPLATES)


def test_invoice_text_has_every_line_totals_and_legal_mentions(docs, renderer, tmp_path) -> None:
    doc = next(d for d in docs if not d.is_credit_note and 5 <= len(d.lines) <= 15)
    text = squash(pdf_text(renderer.render(doc), tmp_path))
    assert f"Facture {doc.number}" in text
    assert f"SIREN {doc.buyer.siren}" in text and doc.buyer.name in text
    assert f"SIREN {doc.seller.siren}" in text and doc.seller.vat_id in text
    for line in doc.lines:
        assert squash(line.description) in text and line.sku in text
        assert eur(line.net) in text
    for row in doc.vat_breakdown:
        assert eur(row.base) in text and eur(row.vat) in text
    assert f"Total HT {eur(doc.total_net)}" in text
    assert f"Total TVA {eur(doc.total_vat)}" in text
    assert f"Net à payer TTC {eur(doc.total_gross)}" in text
    assert doc.po_number in text and all(dn in text for dn in doc.delivery_notes)
    assert f"{doc.issue_date:%d/%m/%Y}" in text and f"{doc.due_date:%d/%m/%Y}" in text
    for mention in ("indemnité forfaitaire pour frais de recouvrement de 40,00 €",
                    "L441-10", "pénalités égales à", "IBAN", "RCS Paris", "Page 1 / 1"):
        assert mention in text, mention


def test_credit_note_names_the_invoice_it_corrects(docs, renderer, tmp_path) -> None:
    doc = next(d for d in docs if d.is_credit_note)
    text = squash(pdf_text(renderer.render(doc), tmp_path))
    assert f"Avoir {doc.number}" in text
    assert f"Facture d'origine {doc.credited_invoice_number}" in text


def test_150_lines_paginate_with_repeated_header_and_page_numbers(docs, renderer,
                                                                    tmp_path) -> None:
    base = next(d for d in docs if not d.is_credit_note)
    lines = tuple(replace(base.lines[i % len(base.lines)], line_no=i + 1,
                          description=f"Article numéro {i + 1:03d}") for i in range(150))
    doc = replace(base, lines=lines)
    text = pdf_text(renderer.render(doc), tmp_path)
    pages = text.split("\f")[:-1]
    assert len(pages) >= 3
    for i, page in enumerate(pages, start=1):
        assert f"Page {i} / {len(pages)}" in page
        if "Article numéro" in page:  # every page holding lines repeats the table header
            assert "Désignation" in page and "P.U. HT" in page
    assert all(f"Article numéro {i:03d}" in text for i in range(1, 151))
    assert sum("Article numéro" in page for page in pages) >= 3


# The largest values validation lets through (issue 9): the layout must hold them.
MAX_AMOUNT = Decimal("9999999999999.99")
MAX_UNIT_PRICE = Decimal("9999999999999.9999")
MAX_QUANTITY = Decimal("999999999.999")
LOCALES = {"fr": "fr_FR", "en": "en_GB", "de": "de_DE"}
GROSS_LABELS = {"fr": ("Net à payer TTC", "Montant de l'avoir TTC"),
                "en": ("Total due incl. VAT", "Credit note total incl. VAT"),
                "de": ("Zahlbetrag brutto", "Gutschriftsbetrag brutto")}
MM = 72 / 25.4  # PDF points per millimetre
PAGE_MARGIN_X = 14 * MM  # left and right page margins of invoice.css
PAGE_MARGIN_TOP = 16 * MM
# One unbroken word per field, each in a letter no label uses, so it can be counted.
DESCRIPTION_WORD, NAME_WORD, ADDRESS_WORD, CITY_WORD, SELLER_WORD = "Ж", "Ш", "Щ", "Ю", "Ф"
WORD = re.compile(r'<word xMin="([-\d.]+)" yMin="([-\d.]+)" xMax="([-\d.]+)" yMax="([-\d.]+)">'
                  r"(.*?)</word>")
PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', re.S)


def pdf_pages(pdf: bytes, tmp_path: Path) -> list[tuple[float, float, list[tuple]]]:
    """Per page: width, height and words as (x_min, y_min, x_max, y_max, text) in points."""
    path = tmp_path / "bbox.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", "-bbox", str(path), "-"], capture_output=True,
                         text=True, check=True).stdout
    return [(float(w), float(h), [(*map(float, m.groups()[:4]), html.unescape(m.group(5)))
                                  for m in WORD.finditer(body)])
            for w, h, body in PAGE.findall(out)]


def extreme(doc: InvoiceDocument) -> InvoiceDocument:
    """The document with every amount, quantity and text at the largest size validation
    accepts (negative amounts on a credit note)."""
    sign = -1 if doc.is_credit_note else 1
    amount = sign * MAX_AMOUNT
    descriptions = (DESCRIPTION_WORD * 1000,
                    ("Désignation très longue, sur plusieurs lignes " * 25)[:1000],
                    # right-to-left, combining marks, emoji (no glyph: a box, but no overflow)
                    ("שלום עולם مرحبا بالعالم Cafe\u0301 n\u0303a\u0308\u0301 "
                     "👩\u200d👩\u200d👧 🎉 " * 25)[:1000],
                    "Café en grains – arabica")
    lines = tuple(replace(doc.lines[0], line_no=i + 1, description=text,
                          quantity=sign * MAX_QUANTITY, unit_price=MAX_UNIT_PRICE,
                          vat_rate=Decimal(100) if i % 2 else Decimal("5.5"), net=amount)
                  for i, text in enumerate(descriptions))
    buyer = replace(doc.buyer, name=NAME_WORD * 200, address_line1=ADDRESS_WORD * 200,
                    address_line2=("Zone d'activités du Grand Ouest, bâtiment " * 5)[:200],
                    city=CITY_WORD * 200)
    seller = replace(doc.seller, name=SELLER_WORD * 200, address_line1="Rue " * 50)
    return replace(doc, lines=lines, buyer=buyer, seller=seller,
                   vat_breakdown=tuple(VatRow("S", rate, amount, amount)
                                       for rate in (Decimal(100), Decimal("5.5"), Decimal(20))),
                   total_net=amount, total_vat=amount, total_gross=amount)


def _overlap(a: tuple, b: tuple) -> bool:
    """Two words on the same line (their heights overlap) that overlap horizontally."""
    return (min(a[3], b[3]) - max(a[1], b[1]) > 1.0
            and min(a[2], b[2]) - max(a[0], b[0]) > 0.3)


@pytest.mark.parametrize("lang", ["fr", "en", "de"])
def test_largest_values_stay_inside_the_page_in_full(docs, renderer, tmp_path, lang) -> None:
    """Issue 9: 13-digit amounts, 4-decimal unit prices, 200-character unbroken names and
    1,000-character descriptions neither overflow a column or the page nor get clipped."""
    for doc in (extreme(next(d for d in docs if not d.is_credit_note)),
                extreme(next(d for d in docs if d.is_credit_note))):
        pdf = renderer.render(doc, lang)
        pages = pdf_pages(pdf, tmp_path)
        assert 1 < len(pages) <= 6, f"{doc.number}: {len(pages)} pages"
        for number, (width, height, words) in enumerate(pages, start=1):
            for x_min, y_min, x_max, y_max, text in words:
                where = f"{doc.number} {lang} page {number}: {text[:30]!r}"
                assert x_min >= PAGE_MARGIN_X - 0.5, f"{where} starts in the left margin"
                assert x_max <= width - PAGE_MARGIN_X + 0.5, f"{where} runs into the right margin"
                assert PAGE_MARGIN_TOP - 0.5 <= y_min and y_max <= height, f"{where} off the page"
            figures = [w for w in words if re.search(r"[\d€%]", w[4])]
            for a in figures:
                for b in words:
                    assert b is a or not _overlap(a, b), (
                        f"{doc.number} {lang} page {number}: {a[4]!r} overlaps {b[4]!r}")
        text = squash(pdf_text(pdf, tmp_path))
        # every character of the unbroken words is on a page (nothing clipped off an edge)
        assert text.count(DESCRIPTION_WORD) == 1000
        assert text.count(NAME_WORD) == 2 * 200  # address window and customer line
        assert text.count(ADDRESS_WORD) == 200 and text.count(CITY_WORD) == 200
        assert text.count(SELLER_WORD) == 200 * (1 + len(pages))  # header and every footer
        # every amount in full: 4 line nets, 3 bases, 3 VAT amounts, 3 totals; the amount due
        # after its label
        locale = LOCALES[lang]
        amount = squash(format_currency(doc.total_gross, doc.currency, locale=locale))
        assert len(re.findall(re.escape(amount) + r"(?!\d)", text)) == 13, amount
        assert f"{GROSS_LABELS[lang][doc.is_credit_note]} {amount}" in text
        price = squash(format_currency(MAX_UNIT_PRICE, doc.currency, locale=locale,
                                       decimal_quantization=False))
        assert text.count(price) == 4, price


def test_long_description_costs_at_most_a_page(docs, renderer, tmp_path) -> None:
    doc = next(d for d in docs if not d.is_credit_note and 10 <= len(d.lines) <= 12)
    assert len(pdf_pages(renderer.render(doc), tmp_path)) == 1
    words = ("Prestation de maintenance préventive et corrective des équipements, "
             "déplacements et rapport d'intervention compris. ") * 10
    long = replace(doc, lines=(replace(doc.lines[0], description=words[:1000]), *doc.lines[1:]))
    assert len(pdf_pages(renderer.render(long), tmp_path)) <= 2


def test_customer_data_is_escaped(docs, renderer, tmp_path) -> None:
    evil = "<script>alert(1)</script> & Fils"
    doc = replace(docs[0], buyer=replace(docs[0].buyer, name=evil))
    html = renderer.html(doc)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Fils" in html
    assert evil in pdf_text(renderer.render(doc), tmp_path)


def test_same_document_same_bytes_in_any_process(docs, renderer) -> None:
    doc = docs[3]
    local = renderer.render(doc)
    assert renderer.render(doc) == local
    executor = ProcessExecutor(1)
    try:
        [remote] = executor.submit(w_render_batch, [doc], str(TEMPLATES)).result()
    finally:
        executor.shutdown()
    assert remote.pdf == local


@pytest.fixture()
def editable_templates(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def _edit(templates: Path, name: str, old: str, new: str) -> None:
    path = templates / name
    path.write_text(path.read_text().replace(old, new, 1))


def test_undefined_variable_names_template_and_line(docs, editable_templates) -> None:
    _edit(editable_templates, "invoice.html", INVOICE_HEADING,
          "{% block heading %}{{ doc.purchase_ref }}{% endblock %}")
    with pytest.raises(TemplateError, match=r"invoice\.html:2: .*purchase_ref"):
        WeasyPrintEngine(editable_templates).render(next(d for d in docs if not d.is_credit_note))


def test_sandbox_blocks_python_internals(docs, editable_templates) -> None:
    _edit(editable_templates, "invoice.html", INVOICE_HEADING,
          "{% block heading %}{{ doc.__class__.__mro__[1].__subclasses__() }}{% endblock %}")
    with pytest.raises(TemplateError):
        WeasyPrintEngine(editable_templates).render(next(d for d in docs if not d.is_credit_note))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://127.0.0.1:9/logo.png",
                                 "../../../../etc/hostname"])
def test_only_template_assets_may_load(docs, editable_templates, url) -> None:
    _edit(editable_templates, "base.html", '<img class="logo" src="logo.svg" alt="">',
          f'<img class="logo" src="{url}" alt="">')
    with pytest.raises(RenderError, match="resource refused") as err:
        WeasyPrintEngine(editable_templates).render(docs[0])
    assert url.lstrip("./") in str(err.value)


def test_worker_reports_a_failing_document_and_renders_the_others(docs,
                                                                   editable_templates) -> None:
    _edit(editable_templates, "credit_note.html",
          '{% block heading %}{{ _("Credit note") }}{% endblock %}',
          "{% block heading %}{{ missing_name }}{% endblock %}")
    batch = [next(d for d in docs if d.is_credit_note), next(d for d in docs
                                                             if not d.is_credit_note)]
    failed, ok = w_render_batch(batch, str(editable_templates))
    assert failed.pdf is None and "missing_name" in (failed.error or "")
    assert ok.pdf is not None and ok.error is None


def test_documents_compute_totals_with_decimal(docs) -> None:
    for doc in docs:
        assert doc.total_net == sum((ln.net for ln in doc.lines), Decimal("0"))
        assert doc.total_gross == doc.total_net + doc.total_vat
        assert all(isinstance(ln.net, Decimal) for ln in doc.lines)
        assert doc.total_net.as_tuple().exponent == -2


@pytest.mark.parametrize(("lang", "labels"), [
    ("en", ["Invoice", "Total due incl. VAT", "fixed recovery indemnity of €40.00", "Page 1 / 1"]),
    ("de", ["Rechnung", "Zahlbetrag brutto", "Pauschale für Beitreibungskosten von 40,00",
            "Seite 1 / 1"]),
])
def test_language_variants(docs, renderer, tmp_path, lang, labels) -> None:
    doc = next(d for d in docs if not d.is_credit_note and len(d.lines) <= 10)
    text = squash(pdf_text(renderer.render(doc, lang), tmp_path))
    for label in labels:
        assert squash(label) in text, label
    assert (f"{doc.issue_date:%d.%m.%Y}" if lang == "de" else f"{doc.issue_date:%d/%m/%Y}") in text


def test_override_chain_brand_then_customer_then_root(docs, editable_templates) -> None:
    doc = next(d for d in docs if not d.is_credit_note)
    for level, marker in (("brands/acme", "BRAND-ACME"), (f"customers/{doc.customer_id}",
                                                         "CUSTOMER-OWN")):
        directory = editable_templates / level
        directory.mkdir(parents=True)
        (directory / "invoice.html").write_text(
            (editable_templates / "invoice.html").read_text().replace(
                '{{ _("Invoice") }}', marker))
    engine = WeasyPrintEngine(editable_templates)
    assert "BRAND-ACME" in engine.html(replace(doc, brand="acme"))
    assert "CUSTOMER-OWN" in engine.html(doc)
    assert "CUSTOMER-OWN" in engine.html(replace(doc, brand="unknown-brand"))
    other = replace(doc, customer_id="C-OTHER")
    assert "BRAND-ACME" not in engine.html(other) and "CUSTOMER-OWN" not in engine.html(other)
    assert "BRAND-ACME" not in engine.html(replace(other, brand="../brands/acme"))


def test_set_up_gives_harfbuzz_subsetting() -> None:
    from pipeline.render.engine import harfbuzz_subsetting
    assert harfbuzz_subsetting(), "install libharfbuzz-subset0 (make install does)"


def test_same_bytes_alone_and_inside_a_batch_of_500(docs) -> None:
    target = next(d for d in docs if not d.is_credit_note and len(d.lines) > 5)
    filler = [replace(d, number=f"{d.number}-{i}", lines=d.lines[:1])
              for i, d in enumerate(d for _ in range(50) for d in docs[:10])]
    batch = filler[:250] + [target] + filler[250:499]
    assert len(batch) == 500
    executor = ProcessExecutor(2)
    try:
        alone = executor.submit(w_render_batch, [target], str(TEMPLATES))
        in_batch = executor.submit(w_render_batch, batch, str(TEMPLATES))
        [alone_result] = alone.result()
        batch_result = in_batch.result()[250]
    finally:
        executor.shutdown()
    assert batch_result.number == target.number
    assert batch_result.pdf == alone_result.pdf and batch_result.sha256 == alone_result.sha256
