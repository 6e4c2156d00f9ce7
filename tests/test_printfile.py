"""The print file: a cover sheet, invoices sorted for the post, duplex-ready, with a manifest."""

import csv
import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from pipeline.channels.base import Formatted, Outgoing
from pipeline.channels.printfile import (
    MANIFEST_COLUMNS,
    OVER_WEIGHT,
    PrintFormatter,
    envelope_grams,
    spreadsheet_safe,
    weight_class,
)
from pipeline.errors import TemplateError
from pipeline.render.engine import WeasyPrintEngine
from pipeline.settings import PROJECT_ROOT, Settings

TEMPLATES = PROJECT_ROOT / "templates"
SELLER = Settings().seller
DAY = date(2026, 11, 30)
FORMULA = '=HYPERLINK("http://evil.example","x")'

# (invoice, buyer country, postcode, buyer name): 1, 2, 3 and 5 pages, three countries,
# out of order on purpose, two names a spreadsheet would run as formulas.
CASES = [("FA2026-000287", "FR", "35000", None),
         ("FA2026-000067", "DE", "10115", FORMULA),
         ("FA2026-000193", "FR", "29200", None),
         ("FA2026-000001", "BE", "1000", "@SUM(1+1)"),
         ("FA2026-000277", "FR", "29200", None)]


@pytest.fixture(scope="module")
def items(sample_docs) -> list[Outgoing]:
    docs = {d.number: d for d in sample_docs}
    engine = WeasyPrintEngine(TEMPLATES)
    made = []
    for number, country, postcode, name in CASES:
        doc = docs[number]
        buyer = replace(doc.buyer, country=country, postcode=postcode,
                        name=name or doc.buyer.name)
        doc = replace(doc, buyer=buyer)
        pdf = engine.render(doc)
        made.append(Outgoing(doc, pdf, hashlib.sha256(pdf).hexdigest()))
    return made


@pytest.fixture(scope="module")
def formatter() -> PrintFormatter:
    return PrintFormatter(TEMPLATES, SELLER, today=lambda: DAY)


@pytest.fixture(scope="module")
def printed(formatter, items) -> Formatted:
    return formatter.format(items, "b-0123456789ab")


def _parcel(formatted: Formatted, suffix: str):
    [parcel] = [p for p in formatted.parcels if p.name.endswith(suffix)]
    return parcel


def _manifest(formatted: Formatted) -> dict:
    return json.loads(_parcel(formatted, ".json").data)


def _pdf(formatted: Formatted) -> PdfReader:
    return PdfReader(io.BytesIO(_parcel(formatted, ".pdf").data))


def _first_page_text(item: Outgoing) -> str:
    return PdfReader(io.BytesIO(item.pdf)).pages[0].extract_text()


def test_three_parcels_carry_every_invoice(printed, items) -> None:
    assert not printed.failures
    stems = {p.name.rsplit(".", 1)[0] for p in printed.parcels}
    [stem] = stems
    assert stem.startswith("b-0123456789ab-")
    assert sorted(p.name.rsplit(".", 1)[1] for p in printed.parcels) == ["csv", "json", "pdf"]
    for parcel in printed.parcels:
        assert sorted(parcel.numbers) == sorted(i.doc.number for i in items)


def test_page_count_is_the_cover_sheet_and_the_manifest_sheets_duplex(printed, items) -> None:
    manifest = _manifest(printed)
    rows = manifest["rows"]
    assert len(_pdf(printed).pages) == 1 * 2 + sum(r["sheets"] for r in rows) * 2
    assert manifest["pages"] == len(_pdf(printed).pages)
    assert manifest["sheets"] == 1 + sum(r["sheets"] for r in rows)
    own_pages = {i.doc.number: len(PdfReader(io.BytesIO(i.pdf)).pages) for i in items}
    assert {r["invoice_number"]: r["pages"] for r in rows} == own_pages
    assert sorted(own_pages.values()) == [1, 2, 2, 3, 5]


def test_each_invoice_starts_on_an_odd_page_with_its_own_first_page(printed, items) -> None:
    merged = _pdf(printed)
    by_number = {i.doc.number: i for i in items}
    for row in _manifest(printed)["rows"]:
        assert row["first_page"] % 2 == 1
        text = merged.pages[row["first_page"] - 1].extract_text()
        assert row["invoice_number"] in text
        assert text == _first_page_text(by_number[row["invoice_number"]])
    assert "Page 1 / 5" in merged.pages[_row(printed, "FA2026-000287")["first_page"] - 1
                                         ].extract_text()


def _row(formatted: Formatted, number: str) -> dict:
    return next(r for r in _manifest(formatted)["rows"] if r["invoice_number"] == number)


def test_order_follows_country_then_postcode_then_number(printed, formatter, items) -> None:
    rows = _manifest(printed)["rows"]
    assert [r["invoice_number"] for r in rows] == [
        "FA2026-000001", "FA2026-000067", "FA2026-000193", "FA2026-000277", "FA2026-000287"]
    assert [(r["country"], r["postcode"]) for r in rows] == [
        ("BE", "1000"), ("DE", "10115"), ("FR", "29200"), ("FR", "29200"), ("FR", "35000")]
    assert [r["sequence"] for r in rows] == [1, 2, 3, 4, 5]
    # The same invoices in any order make the same files, byte for byte.
    again = formatter.format(list(reversed(items)), "b-0123456789ab")
    assert [(p.name, p.data) for p in again.parcels] == [
        (p.name, p.data) for p in printed.parcels]


def _png(pdf: bytes, page: int, out: Path) -> Image.Image:
    source = out / "print.pdf"
    source.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "30", "-png", "-f", str(page), "-l", str(page),
                    "-singlefile", str(source), str(out / f"page-{page}")], check=True)
    return Image.open(out / f"page-{page}.png").convert("L")


def test_blank_pages_are_blank_and_follow_odd_page_counts(printed, tmp_path) -> None:
    merged = _pdf(printed)
    rows = _manifest(printed)["rows"]
    blanks = [2] + [r["first_page"] + r["pages"] for r in rows if r["blank_pages"]]
    assert [r["blank_pages"] for r in rows] == [r["pages"] % 2 for r in rows]
    assert _manifest(printed)["blank_pages"] == len(blanks) == 4
    for page in blanks:
        assert "/Contents" not in merged.pages[page - 1]
        assert merged.pages[page - 1].extract_text() == ""
        assert merged.pages[page - 1].mediabox == merged.pages[page - 2].mediabox
        assert _png(_parcel(printed, ".pdf").data, page, tmp_path).getextrema() == (255, 255)
    printed_pages = set(range(1, len(merged.pages) + 1)) - set(blanks)
    assert all(merged.pages[p - 1].extract_text().strip() for p in printed_pages)


def test_cover_sheet_states_the_batch(printed, tmp_path) -> None:
    text = _pdf(printed).pages[0].extract_text().replace("\xa0", " ")
    for expected in ("b-0123456789ab", "2026-11-30", SELLER.legal_name,
                     "Invoices (envelopes) 5", "Sheets 9", "Pages 18", "BE 1 · DE 1 · FR 3"):
        assert expected in text
    assert "up to 20 g 5 8" in text
    assert _png(_parcel(printed, ".pdf").data, 1, tmp_path).getextrema()[0] < 100


def test_json_carries_the_checksums_of_the_pdf_and_the_csv(printed) -> None:
    files = _manifest(printed)["files"]
    for kind in ("pdf", "csv"):
        parcel = _parcel(printed, f".{kind}")
        assert files[kind] == {"name": parcel.name, "bytes": len(parcel.data),
                               "sha256": hashlib.sha256(parcel.data).hexdigest()}


def test_csv_and_json_have_the_same_rows(printed) -> None:
    table = list(csv.DictReader(io.StringIO(_parcel(printed, ".csv").data.decode())))
    rows = _manifest(printed)["rows"]
    assert tuple(table[0]) == MANIFEST_COLUMNS
    assert [{k: str(v).removeprefix("'") if isinstance(v, str) else str(v)
             for k, v in r.items()} for r in rows] == [
        {k: v.removeprefix("'") for k, v in r.items()} for r in table]


def test_formula_like_names_are_neutralised_in_the_csv(printed) -> None:
    table = {r["invoice_number"]: r for r in
             csv.DictReader(io.StringIO(_parcel(printed, ".csv").data.decode()))}
    assert table["FA2026-000067"]["name"] == "'" + FORMULA
    assert table["FA2026-000001"]["name"] == "'@SUM(1+1)"
    assert table["FA2026-000193"]["name"] == "Hôtel David SAS"
    # JSON is not opened in a spreadsheet: it keeps the name as it is.
    assert _row(printed, "FA2026-000067")["name"] == FORMULA
    for value in ("=1+1", "+33 1 23", "-2", "@A1", "\tx", "\rx"):
        assert spreadsheet_safe(value) == "'" + value
    assert spreadsheet_safe("Dupont = SA") == "Dupont = SA"


@pytest.mark.parametrize("bad", [b"", b"not a pdf at all", b"%PDF-1.7\n%%EOF\n"])
def test_an_unreadable_pdf_fails_only_its_item(formatter, items, bad) -> None:
    broken = replace(items[2], pdf=bad, sha256=hashlib.sha256(bad).hexdigest())
    result = formatter.format([items[0], broken, *items[3:]], "b-0123456789ab")
    number = broken.doc.number
    assert list(result.failures) == [number]
    assert "cannot be read" in result.failures[number]
    kept = sorted(i.doc.number for i in [items[0], *items[3:]])
    assert all(sorted(p.numbers) == kept for p in result.parcels)
    assert number not in _parcel(result, ".csv").data.decode()
    rows = _manifest(result)["rows"]
    assert len(_pdf(result).pages) == 2 + 2 * sum(r["sheets"] for r in rows)


def test_a_truncated_pdf_fails_only_its_item(formatter, items) -> None:
    cut = items[0].pdf[: len(items[0].pdf) // 2]
    result = formatter.format([replace(items[0], pdf=cut), items[1]], "b-0123456789ab")
    assert list(result.failures) == [items[0].doc.number]
    assert [p.numbers for p in result.parcels] == [(items[1].doc.number,)] * 3


def test_a_rerun_of_the_remaining_invoices_gets_new_names(formatter, printed, items) -> None:
    rest = formatter.format(items[1:], "b-0123456789ab")
    assert not {p.name for p in rest.parcels} & {p.name for p in printed.parcels}
    assert formatter.format([], "b-0123456789ab") == Formatted()


@pytest.mark.parametrize(("sheets", "grams", "label"), [
    (1, 10, "up to 20 g"), (3, 20, "up to 20 g"), (4, 25, "up to 50 g"), (9, 50, "up to 50 g"),
    (10, 55, "up to 100 g"), (49, 250, "up to 250 g"), (99, 500, "up to 500 g"),
    (199, 1000, "up to 1 kg"), (399, 2000, "up to 2 kg"), (400, 2005, OVER_WEIGHT)])
def test_weight_classes(sheets, grams, label) -> None:
    assert envelope_grams(sheets) == grams
    assert weight_class(grams) == label


def test_weight_class_counts_add_up(printed) -> None:
    manifest = _manifest(printed)
    classes = {c["label"]: c for c in manifest["weight_classes"]}
    assert sum(c["envelopes"] for c in classes.values()) == manifest["invoices"]
    assert classes["up to 20 g"]["envelopes"] == 5  # 3 sheets with the envelope: 20 g
    assert _row(printed, "FA2026-000287")["sheets"] == 3
    assert _row(printed, "FA2026-000287")["weight_g"] == 20


def test_a_cover_sheet_that_fails_fails_the_file_with_the_reason(items, tmp_path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "print" / "cover.html").write_text("<p>{{ oops }}</p>")
    result = PrintFormatter(templates, SELLER).format(items[:2], "b-0123456789ab")
    assert not result.parcels
    assert sorted(result.failures) == sorted(i.doc.number for i in items[:2])
    assert all("print/cover.html" in reason and "oops" in reason
               for reason in result.failures.values())


def test_a_templates_folder_without_the_cover_sheet_is_refused(tmp_path) -> None:
    with pytest.raises(TemplateError, match="print/cover.html and assets/print.css"):
        PrintFormatter(tmp_path, SELLER)
