"""The template workshop: check, preview and diff templates on the sample extract.

For template editors, who are not programmers: every command names the
template file and line of a problem, a preview is one command away, and a
diff shows, page by page, what a change does to real invoices before it goes
live.
"""

from __future__ import annotations

import dataclasses
import html
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

from pipeline import keys
from pipeline.channels.email import letter_context
from pipeline.codes import LANGUAGES
from pipeline.documents import Address, InvoiceDocument, Line, Party, VatRow, build_documents
from pipeline.errors import PipelineError, TemplateError
from pipeline.ingest import load_extract
from pipeline.receivables.letters import (
    SAMPLE_RECIPIENT,
    LetterRenderer,
    check_letter_templates,
    sample_letter,
    sample_statement,
)
from pipeline.render.engine import WeasyPrintEngine
from pipeline.render.templates import make_environment, render_template
from pipeline.settings import PROJECT_ROOT, DunningLevel, SellerSettings, Settings
from pipeline.validate import validate

__all__ = ["SAMPLE_EXTRACT", "sample_documents", "check_templates", "preview", "watch",
           "diff_templates", "DiffReport", "template_variables_markdown"]

SAMPLE_EXTRACT = PROJECT_ROOT / "sample_data" / "extract"


def sample_documents(settings: Settings, extract: Path = SAMPLE_EXTRACT,
                     numbers: list[str] | None = None) -> list[InvoiceDocument]:
    """Documents of the sample extract: the given invoices, or every accepted one."""
    bundle = load_extract(extract)
    if numbers is None:
        accepted = validate(bundle, settings.seller, settings.validation).accepted
        numbers = sorted(accepted["invoice_number"])
    missing = set(numbers) - set(bundle.invoices["invoice_number"])
    if missing:
        raise TemplateError(f"invoice(s) {sorted(missing)} not in the sample extract {extract}")
    return build_documents(bundle, numbers, settings.seller)


def _variants(templates: Path, docs: list[InvoiceDocument]
              ) -> Iterator[tuple[str, InvoiceDocument]]:
    """One document per template variant: type x language x override level."""
    invoice = next(d for d in docs if not d.is_credit_note)
    credit = next(d for d in docs if d.is_credit_note)
    levels: list[tuple[str, dict[str, Any]]] = [("templates/", {})]
    levels += [(f"brands/{p.name}/", {"brand": p.name})
               for p in sorted((templates / "brands").glob("*")) if p.is_dir()]
    levels += [(f"customers/{p.name}/", {"customer_id": p.name})
               for p in sorted((templates / "customers").glob("*")) if p.is_dir()]
    for level, changes in levels:
        for lang in LANGUAGES:
            for doc in (invoice, credit):
                kind = "credit note" if doc.is_credit_note else "invoice"
                yield (f"{level} {kind} ({lang})",
                       dataclasses.replace(doc, language=lang, **changes))


def check_templates(templates: Path, settings: Settings) -> tuple[int, list[str]]:
    """Render every template and variant; returns (variants checked, problems)."""
    docs = sample_documents(settings)
    engine = WeasyPrintEngine(templates)
    problems, checked = [], 0
    for label, doc in _variants(templates, docs):
        checked += 1
        try:
            engine.render(doc)
        except PipelineError as exc:
            problems.append(f"{label}: {exc}")
    emails = make_environment(templates)
    for lang in LANGUAGES:
        for part in ("subject", "body"):
            checked += 1
            try:
                render_template(emails, f"emails/{lang}/{part}.txt", doc=docs[0], lang=lang)
            except PipelineError as exc:
                problems.append(f"email {part} ({lang}): {exc}")
        for kind, title in (("dunning", "Relance"), ("statement", "Relevé de compte")):
            context = letter_context("R1-C00042-20261215-EUR", kind, date(2026, 12, 15),
                                     _SampleEnvelope(docs[0].buyer.name, lang, title),
                                     settings.seller)
            for part in ("subject.txt", "body.txt", "body.html"):
                checked += 1
                try:
                    render_template(emails, f"emails/{lang}/letter_{part}", **context)
                except PipelineError as exc:
                    problems.append(f"{kind} letter email {part} ({lang}): {exc}")
    letters_checked, letter_problems = check_letter_templates(templates, settings)
    return checked + letters_checked, problems + letter_problems


@dataclass(frozen=True)
class _SampleEnvelope:
    name: str
    language: str
    title: str
    email: str | None = "compta@client.example"


def _pick(settings: Settings, invoice: str | None, customer: str | None) -> InvoiceDocument:
    bundle = load_extract(SAMPLE_EXTRACT)
    invoices = bundle.invoices
    if invoice:
        number = invoice
    else:
        candidates = invoices.filter(invoices["invoice_type"] == "invoice")
        if customer:
            candidates = invoices.filter(invoices["customer_id"] == customer)
        if not candidates.height:
            raise TemplateError(f"customer {customer} has no invoice in the sample extract")
        number = candidates.sort("invoice_number")["invoice_number"][0]
    doc = sample_documents(settings, numbers=[number])[0]
    return dataclasses.replace(doc, customer_id=customer) if customer else doc


def to_png(pdf: Path, out_prefix: Path, dpi: int = 60) -> list[Path]:
    """PDF pages as PNG files (pdftoppm, from poppler-utils)."""
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(out_prefix)], check=True)
    return sorted(out_prefix.parent.glob(f"{out_prefix.name}-*.png"))


def preview(templates: Path, settings: Settings, out: Path, invoice: str | None = None,
            customer: str | None = None, lang: str | None = None, png: bool = False,
            letter: str | None = None) -> list[Path]:
    """Write the PDF (and PNG pages) of one sample invoice, or of a sample letter
    (``reminder``, ``firm_reminder``, ``formal_notice`` or ``statement``); returns the files
    written."""
    out.mkdir(parents=True, exist_ok=True)
    if letter:
        return _preview_letter(templates, settings, out, letter, customer, lang, png)
    doc = _pick(settings, invoice, customer)
    pdf = out / f"{doc.number}.pdf"
    pdf.write_bytes(WeasyPrintEngine(templates).render(doc, lang))
    return [pdf, *(to_png(pdf, out / doc.number) if png else [])]


def _preview_letter(templates: Path, settings: Settings, out: Path, name: str,
                    customer: str | None, lang: str | None, png: bool) -> list[Path]:
    levels: dict[str, tuple[int, DunningLevel]] = {
        level.name: (n, level) for n, level in
        enumerate(settings.receivables.dunning.levels, start=1)}
    if name != "statement" and name not in levels:
        raise TemplateError(f"no letter {name!r}: one of {', '.join([*levels, 'statement'])}")
    if lang is not None and lang not in LANGUAGES:
        raise TemplateError(f"no language {lang!r}: one of {', '.join(LANGUAGES)}")
    customer_id = customer or "C00042"
    sample = (sample_statement(customer_id) if name == "statement"
              else sample_letter(levels[name][1], levels[name][0], customer_id=customer_id))
    recipient = dataclasses.replace(SAMPLE_RECIPIENT, language=lang or SAMPLE_RECIPIENT.language)
    pdf = out / f"{name}-{keys.safe_component(customer_id)}-{recipient.language}.pdf"
    pdf.write_bytes(LetterRenderer(templates).render(sample, recipient, settings.seller))
    return [pdf, *(to_png(pdf, out / pdf.stem) if png else [])]


def _snapshot(templates: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in templates.rglob("*") if p.is_file()}


def watch(templates: Path, render: Callable[[], list[Path]], report: Callable[[str], None],
          interval: float = 0.3, rounds: int | None = None) -> None:
    """Re-render on every save of a template, stylesheet or catalogue (polls mtimes)."""
    seen = _snapshot(templates)
    done = 0
    while rounds is None or done < rounds:
        time.sleep(interval)
        now = _snapshot(templates)
        if now != seen:
            seen = now
            done += 1
            start = time.perf_counter()
            try:
                files = render()
                report(f"re-rendered {files[0].name} in {time.perf_counter() - start:.2f} s")
            except PipelineError as exc:
                report(f"ERROR {exc}")


# --- diff ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PageDiff:
    """One page before and after."""

    invoice: str
    page: int
    before: str
    after: str
    highlight: str | None
    changed_pixels: int


@dataclass(frozen=True)
class DiffReport:
    """What a template change does to the fixed set of sample invoices."""

    pages: list[PageDiff]
    index: Path

    @property
    def changed_pages(self) -> int:
        """Pages that differ by at least one pixel (or exist on one side only)."""
        return sum(1 for p in self.pages if p.changed_pixels)


def diff_set(docs: list[InvoiceDocument]) -> list[tuple[InvoiceDocument, str]]:
    """The fixed set: first invoices, a credit note, the longest invoice, en and de."""
    invoices = [d for d in docs if not d.is_credit_note]
    chosen = [(d, "fr") for d in invoices[:3]]
    chosen.append((next(d for d in docs if d.is_credit_note), "fr"))
    chosen.append((max(invoices, key=lambda d: len(d.lines)), "fr"))
    chosen += [(invoices[3], "en"), (invoices[4], "de")]
    return chosen


def export_templates(ref: str, destination: Path, repo: Path = PROJECT_ROOT) -> Path:
    """The templates folder as it is at a git ref."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref,
                              "templates"], capture_output=True, check=False)
    if archive.returncode:
        raise TemplateError(f"cannot read templates at {ref!r}: "
                            f"{archive.stderr.decode().strip()}")
    with tempfile.TemporaryFile() as handle:
        handle.write(archive.stdout)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(destination, filter="data")
    return destination / "templates"


def _pages(engine: WeasyPrintEngine, doc: InvoiceDocument, lang: str, out: Path) -> list[Path]:
    pdf = out / f"{doc.number}-{lang}.pdf"
    pdf.write_bytes(engine.render(doc, lang))
    return to_png(pdf, out / f"{doc.number}-{lang}")


def _compare(before: Path | None, after: Path | None, highlight: Path) -> int:
    """Changed pixels; writes the after image with changes painted red."""
    if before is None or after is None:
        return 1
    a, b = Image.open(before).convert("RGB"), Image.open(after).convert("RGB")
    if a.size != b.size:
        return a.size[0] * a.size[1]
    mask = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v else 0)
    changed = mask.histogram()[255]
    if changed:
        red = Image.new("RGB", b.size, (230, 0, 0))
        Image.composite(red, Image.blend(b, Image.new("RGB", b.size, "white"), 0.6),
                        mask).save(highlight)
    return changed


def diff_templates(base_ref: str, templates: Path, settings: Settings, out: Path) -> DiffReport:
    """Render the fixed set with the templates at ``base_ref`` and with ``templates``."""
    out.mkdir(parents=True, exist_ok=True)
    before_dir, after_dir = out / "before", out / "after"
    before_dir.mkdir(exist_ok=True)
    after_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base_templates = export_templates(base_ref, Path(tmp))
        engines = (WeasyPrintEngine(base_templates), WeasyPrintEngine(templates))
        pages = []
        for doc, lang in diff_set(sample_documents(settings)):
            before = _pages(engines[0], doc, lang, before_dir)
            after = _pages(engines[1], doc, lang, after_dir)
            for i in range(max(len(before), len(after))):
                b = before[i] if i < len(before) else None
                a = after[i] if i < len(after) else None
                highlight = out / f"{doc.number}-{lang}-{i + 1}-diff.png"
                changed = _compare(b, a, highlight)
                pages.append(PageDiff(f"{doc.number} ({lang})", i + 1,
                                      str(b.relative_to(out)) if b else "",
                                      str(a.relative_to(out)) if a else "",
                                      highlight.name if highlight.exists() else None, changed))
    index = out / "index.html"
    index.write_text(_diff_html(base_ref, pages))
    return DiffReport(pages, index)


def _diff_html(base_ref: str, pages: list[PageDiff]) -> str:
    changed = sum(1 for p in pages if p.changed_pixels)
    rows = []
    for p in pages:
        status = (f"<b class='changed'>{p.changed_pixels} pixels changed</b>"
                  if p.changed_pixels else "unchanged")
        cells = "".join(f"<td>{html.escape(label)}<br>" + (
            f"<img src='{html.escape(src)}'>" if src else "<i>no page</i>") + "</td>"
            for label, src in (("before", p.before), ("after", p.after),
                               ("changes in red", p.highlight or "")))
        rows.append(f"<h2>{html.escape(p.invoice)}, page {p.page}: {status}</h2>"
                    f"<table><tr>{cells}</tr></table>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Template diff</title>"
            "<style>body{font-family:sans-serif;margin:20px} img{border:1px solid #999;"
            "max-width:380px} td{vertical-align:top;padding:4px} .changed{color:#c00}"
            "</style></head><body>"
            f"<h1>Templates: {html.escape(base_ref)} → working tree</h1>"
            f"<p>{changed} of {len(pages)} pages changed.</p>" + "".join(rows) +
            "</body></html>")


# --- variables, for templates/README.md ---------------------------------------------------

def template_variables_markdown() -> str:
    """The names every template receives, generated from the document model."""
    def fields(cls: type) -> list[str]:
        return [f"| `{f.name}` | `{f.type}` |" for f in dataclasses.fields(cls)]
    lines = ["Every invoice and credit-note template receives `doc` (an `InvoiceDocument`) and",
             "`lang` (`fr`, `en` or `de`). Email templates receive the same. Names:", "",
             "| `doc.` | type |", "| --- | --- |", *fields(InvoiceDocument),
             "| `doc.is_credit_note` | `bool` |",
             "| `doc.operation` | `str`: `goods`, `services` or `mixed` |",
             "| `doc.vat_on_debits` | `bool`: the seller's option, printed on services |", "",
             "`doc.seller` and `doc.buyer` (`Party`):", "", "| name | type |", "| --- | --- |",
             *fields(Party), "", "`doc.ship_to` (`Address`, or none when the goods went to "
             "the buyer's address):", "", "| name | type |", "| --- | --- |", *fields(Address),
             "", "each of `doc.lines` (`Line`):", "", "| name | type |",
             "| --- | --- |", *fields(Line), "", "each of `doc.vat_breakdown` (`VatRow`):", "",
             "| name | type |", "| --- | --- |", *fields(VatRow), "",
             "`doc.seller_legal` (the `[seller]` configuration):", "", "| name | type |",
             "| --- | --- |",
             *[f"| `{name}` | `{f.annotation}` |".replace("<class '", "").replace("'>", "")
               for name, f in SellerSettings.model_fields.items()]]
    return "\n".join(lines) + "\n"
