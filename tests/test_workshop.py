"""The template workshop: check, preview, watch, diff, golden images, editor docs."""

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from pipeline.errors import ExitCode, TemplateError
from pipeline.render.engine import WeasyPrintEngine
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.workshop import (
    check_templates,
    preview,
    sample_documents,
    template_variables_markdown,
    to_png,
    watch,
)
from tests.conftest import INVOICES_CLI

TEMPLATES = PROJECT_ROOT / "templates"
GOLDEN = PROJECT_ROOT / "tests" / "render" / "golden"
RESULTS = PROJECT_ROOT / "tests" / "render" / "results"
# (invoice, language): a one-page invoice, a German one, a credit note, a multi-page one
GOLDEN_CASES = [("FA2026-000003", "fr"), ("FA2026-000004", "de"), ("AV2026-000001", "en"),
                ("FA2026-000067", "fr")]


@pytest.fixture()
def templates(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def test_check_passes_on_the_committed_templates() -> None:
    checked, problems = check_templates(TEMPLATES, Settings())
    assert problems == [] and checked >= 12


def test_check_names_file_line_and_name(templates: Path) -> None:
    base = templates / "base.html"
    lines = base.read_text().splitlines()
    lines[20] += "{{ doc.buyer.fax_number }}"
    base.write_text("\n".join(lines))
    _, problems = check_templates(templates, Settings())
    assert problems and all("base.html:21" in p and "fax_number" in p for p in problems)


def test_check_reports_syntax_errors(templates: Path) -> None:
    (templates / "invoice.html").write_text("{% extends 'base.html' %}{% block heading %}")
    _, problems = check_templates(templates, Settings())
    assert any("invoice.html:1: syntax error" in p for p in problems)


def test_check_covers_override_levels(templates: Path) -> None:
    brand = templates / "brands" / "acme"
    brand.mkdir(parents=True)
    (brand / "invoice.html").write_text("{% extends 'base.html' %}"
                                        "{% block heading %}{{ doc.nope }}{% endblock %}")
    _, problems = check_templates(templates, Settings())
    assert problems and all(p.startswith("brands/acme/ invoice") for p in problems)


def test_cli_check_exit_status(templates: Path) -> None:
    ok = subprocess.run([str(INVOICES_CLI), "templates", "check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (templates / "credit_note.html").write_text("{% extends 'base.html' %}{{ oops }")
    bad = subprocess.run([str(INVOICES_CLI), "templates", "check", "--templates",
                          str(templates)], capture_output=True, text=True)
    assert bad.returncode == ExitCode.SOME_FAILED
    assert "credit_note.html:1" in bad.stderr


def test_preview_writes_pdf_and_png(tmp_path: Path) -> None:
    files = preview(TEMPLATES, Settings(), tmp_path, invoice="FA2026-000003", lang="de",
                    png=True)
    assert files[0].name == "FA2026-000003.pdf" and files[0].read_bytes().startswith(b"%PDF")
    assert files[1].suffix == ".png" and Image.open(files[1]).size[0] > 100


def test_preview_of_a_letter(tmp_path: Path) -> None:
    [pdf] = preview(TEMPLATES, Settings(), tmp_path, letter="formal_notice", lang="en")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert pdf.name == "formal_notice-C00042-en.pdf" and "Formal notice to pay" in text
    [statement] = preview(TEMPLATES, Settings(), tmp_path, letter="statement", lang="de")
    assert "Kontoauszug" in subprocess.run(["pdftotext", str(statement), "-"],
                                           capture_output=True, text=True).stdout
    with pytest.raises(TemplateError, match="no letter 'nope'"):
        preview(TEMPLATES, Settings(), tmp_path, letter="nope")
    with pytest.raises(TemplateError, match="no language 'xx'"):
        preview(TEMPLATES, Settings(), tmp_path, letter="reminder", lang="xx")


def test_watch_re_renders_on_save(templates: Path, tmp_path: Path) -> None:
    messages: list[str] = []

    def render() -> list[Path]:
        return preview(templates, Settings(), tmp_path, invoice="FA2026-000003")

    thread = threading.Thread(target=watch, args=(templates, render, messages.append),
                              kwargs={"interval": 0.1, "rounds": 1})
    thread.start()
    time.sleep(0.5)
    css = templates / "assets" / "invoice.css"
    css.write_text(css.read_text() + "\nh1 { color: #000; }\n")
    thread.join(timeout=30)
    assert messages and messages[0].startswith("re-rendered FA2026-000003.pdf")


def test_diff_exits_0_when_unchanged_and_1_with_highlighted_changes(templates: Path,
                                                                    tmp_path: Path) -> None:
    def run_diff(out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(INVOICES_CLI), "templates", "diff", "--base", "HEAD",
                               "--templates", str(templates), "--out", str(out)],
                              capture_output=True, text=True, cwd=PROJECT_ROOT)

    committed = subprocess.run(["git", "-C", str(PROJECT_ROOT), "diff", "--quiet", "HEAD",
                                "--", "templates"]).returncode == 0
    if committed:
        same = run_diff(tmp_path / "same")
        assert same.returncode == 0, same.stderr
        assert "0 of" in same.stderr
    css = templates / "assets" / "invoice.css"
    css.write_text(css.read_text().replace("h1 { font-size: 16pt;", "h1 { font-size: 19pt;"))
    changed = run_diff(tmp_path / "changed")
    assert changed.returncode == ExitCode.SOME_FAILED
    index = (tmp_path / "changed" / "index.html").read_text()
    assert "pixels changed" in index and "changes in red" in index
    assert list((tmp_path / "changed").glob("*-diff.png"))


def _differs(expected: Path, actual: Path) -> float:
    a, b = Image.open(expected).convert("L"), Image.open(actual).convert("L")
    if a.size != b.size:
        return 1.0
    # pixels off by more than a faint anti-aliasing shade
    mask = ImageChops.difference(a, b).point(lambda v: 255 if v > 48 else 0)
    return mask.histogram()[255] / (a.size[0] * a.size[1])


@pytest.mark.parametrize(("number", "lang"), GOLDEN_CASES)
def test_golden_images(number: str, lang: str, tmp_path: Path) -> None:
    """An unintended layout change fails here; after an intended one, refresh the goldens
    with `python -m tests.test_workshop` and review the new images."""
    [doc] = sample_documents(Settings(), numbers=[number])
    pdf = tmp_path / f"{number}.pdf"
    pdf.write_bytes(WeasyPrintEngine(TEMPLATES).render(doc, lang))
    pages = to_png(pdf, tmp_path / f"{number}-{lang}", dpi=40)
    golden = sorted(GOLDEN.glob(f"{number}-{lang}-*.png"))
    assert len(pages) == len(golden), f"{number}: {len(pages)} pages, golden {len(golden)}"
    for actual, expected in zip(pages, golden, strict=True):
        share = _differs(expected, actual)
        if share > 0.002:
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(actual, RESULTS / actual.name)
        assert share <= 0.002, f"{actual.name}: {share:.2%} of pixels differ (see {RESULTS})"


def test_editor_readme_lists_the_variables() -> None:
    readme = (TEMPLATES / "README.md").read_text()
    assert template_variables_markdown() in readme, "regenerate with `invoices templates vars`"


if __name__ == "__main__":  # refresh the golden images
    for old in GOLDEN.glob("*.png"):
        old.unlink()
    engine = WeasyPrintEngine(TEMPLATES)
    for number, lang in GOLDEN_CASES:
        [doc] = sample_documents(Settings(), numbers=[number])
        target = GOLDEN / f"{number}-{lang}.pdf"
        target.write_bytes(engine.render(doc, lang))
        print(to_png(target, GOLDEN / f"{number}-{lang}", dpi=40))
        target.unlink()
