"""The hostile-input corpus, end to end through the CLI, in one run.

Each case of ``tests/hostile.py`` has an invoice of its own in one extract. The run must
exit 0, end every case as the case states (rejected with its rule code, billed with a
warning, or billed), bill every invoice outside the corpus, write nothing outside its
home, and produce only files that parse back: EDIFACT, X12, UBL, emails, the Factur-X XML
inside every PDF and the print manifests. ``docs/reliability.md`` is generated from it.
"""

from __future__ import annotations

import csv
import email
import hashlib
import io
import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from email import policy
from pathlib import Path

import polars as pl
import pytest
from lxml import etree

from pipeline.einvoice import edifact, x12
from pipeline.einvoice.crosscheck import embedded_xml
from pipeline.settings import PROJECT_ROOT
from tests.conftest import INVOICES_CLI
from tests.hostile import Case, HostileExtract, build, by_class, corpus
from tests.standards import xsd_errors

RELIABILITY_DOC = PROJECT_ROOT / "docs" / "reliability.md"


@dataclass(frozen=True)
class Run:
    extract: HostileExtract
    home: Path
    work: Path
    input_before: dict[str, str]
    result: subprocess.CompletedProcess
    summary: dict
    errors: dict[str, set[str]]
    warnings: dict[str, set[str]]
    delivered: set[str]

    def observed(self, number: str) -> str:
        if self.errors.get(number):
            return "rejected"
        return "warning" if number in self.delivered and self.warned(number) else (
            "billed" if number in self.delivered else "not billed")

    def warned(self, number: str) -> set[str]:
        """Warnings of the invoice, but SEQUENCE_GAP: the corpus renames invoice numbers,
        which punches holes in the series before whichever invoice comes next."""
        return self.warnings.get(number, set()) - {"SEQUENCE_GAP"}


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("hostile")
    extract = build(root / "input", corpus())
    work = root / "work"
    work.mkdir()
    home = work / "home"
    before = _snapshot(root / "input")
    result = subprocess.run(
        [str(INVOICES_CLI), "run", str(extract.path), "--home", str(home)], cwd=work,
        capture_output=True, text=True, timeout=1200,
        env={**os.environ, "INVOICES_CONFIG": str(extract.config)})
    [summary_file] = (home / "reports").glob("*/summary.json")
    findings = pl.read_parquet(summary_file.parent / "rejections.parquet")
    errors: dict[str, set[str]] = {}
    warned: dict[str, set[str]] = {}
    for number, code, severity in findings.select("invoice_number", "code",
                                                  "severity").iter_rows():
        (errors if severity == "error" else warned).setdefault(number, set()).add(code)
    index = pl.read_parquet(home / "archive" / "index" / "**" / "*.parquet")
    return Run(extract, home, work, before, result, json.loads(summary_file.read_text()),
               errors, warned, set(index["invoice_number"]))


def test_the_corpus_is_large_and_every_case_is_distinct() -> None:
    cases = corpus()
    assert len(cases) >= 300
    assert len({c.case_id for c in cases}) == len(cases)
    classes = {c.field_class for c in cases}
    assert classes >= {"identifiers", "names and free text", "emails", "amounts and quantities",
                       "rates", "dates", "codes", "keys"}


def test_the_run_exits_0_and_its_summary_adds_up(run: Run) -> None:
    output = run.result.stdout + run.result.stderr
    assert run.result.returncode == 0, output[-5000:]
    assert "Traceback" not in output
    s = run.summary
    assert s["input_invoices"] == s["delivered"] + s["rejected"] + s["failed"]
    assert s["failed"] == 0, s["failures"]


def _mismatch(run: Run, number: str, case: Case) -> str | None:
    got = run.observed(number)
    codes = run.errors.get(number, set()) | run.warned(number)
    if got != case.outcome or (case.code and case.code not in codes):
        return f"{case.case_id}: expected {case.expect}, got {got} {sorted(codes)}"
    return None


def test_every_case_ends_as_it_states(run: Run) -> None:
    problems = [m for number, case in run.extract.victims.items()
                if (m := _mismatch(run, number, case))]
    assert not problems, "\n".join(problems)


def test_every_other_invoice_is_billed(run: Run) -> None:
    assert run.extract.bystanders
    assert run.extract.bystanders <= run.delivered
    assert not set(run.errors) - set(run.extract.victims)


def test_nothing_is_written_outside_the_home(run: Run) -> None:
    assert sorted(p.name for p in run.work.iterdir()) == ["home"]
    assert _snapshot(run.extract.path.parent) == run.input_before
    home = run.home.resolve()
    for path in run.home.rglob("*"):
        assert not path.is_symlink(), path
        assert path.resolve().is_relative_to(home), path


def test_every_file_produced_parses_back(run: Run) -> None:
    outbox = run.home / "outbox"
    counts: Counter[str] = Counter()
    problems: list[str] = []
    for path in sorted(outbox.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix in (".edi", ".x12"):  # pydifact / pyx12, with every count checked
            reading = (edifact if path.suffix == ".edi" else x12).read(data)
            problems += [f"{path.name}: segment {i}: {e}" for i, e in reading.errors]
        elif path.name.endswith(".ubl.xml"):
            root = etree.fromstring(data)
            kind = "ubl-creditnote" if root.tag.endswith("CreditNote") else "ubl-invoice"
            problems += [f"{path.name}: {e}" for e in xsd_errors(kind, data)]
        elif path.suffix == ".eml":
            problems += [f"{path.name}: {p}" for p in _email_problems(data)]
        elif path.suffix == ".pdf":
            problems += [f"{path.name}: {e}" for e in xsd_errors("cii", embedded_xml(data))
                         ] if path.parent.name == "edi" else []
        elif path.suffix == ".csv":
            rows = list(csv.reader(io.StringIO(data.decode())))
            problems += [f"{path.name} row {i}: {len(r)} columns" for i, r in enumerate(rows)
                         if len(r) != len(rows[0])]
        counts[path.suffix if not path.name.endswith(".ubl.xml") else ".ubl.xml"] += 1
    for pdf in sorted((run.home / "archive" / "invoices").rglob("*.pdf")):
        problems += [f"{pdf.name}: {e}" for e in xsd_errors("cii", embedded_xml(pdf.read_bytes()))]
        counts["archived pdf"] += 1
    assert not problems, "\n".join(problems[:50])
    assert counts[".edi"] and counts[".x12"] and counts[".eml"] and counts[".ubl.xml"]
    assert counts[".csv"] and counts["archived pdf"] == len(run.delivered)


_HEADERS = {"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}


def _email_problems(data: bytes) -> list[str]:
    message = email.message_from_bytes(data, policy=policy.strict)
    problems = [f"unexpected header {h}" for h in set(message.keys()) - _HEADERS]
    problems += [f"missing header {h}" for h in _HEADERS - set(message.keys())]
    attachments = [p for p in message.iter_attachments()]
    if len(attachments) != 1 or not attachments[0].get_content().startswith(b"%PDF"):
        problems.append("the PDF attachment is missing or broken")
    return problems


def test_validate_command_agrees_with_the_run(run: Run) -> None:
    result = subprocess.run([str(INVOICES_CLI), "validate", str(run.extract.path), "--json"],
                            capture_output=True, text=True, timeout=300, cwd=run.work.parent,
                            env={**os.environ, "INVOICES_CONFIG": str(run.extract.config)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["rejected"] == run.summary["rejected"]


def reliability_markdown(run: Run) -> str:
    """The corpus and what became of it, by field class and value class."""
    cases = list(run.extract.victims.items())
    outcome = Counter(run.observed(n) for n, _ in cases)
    lines = [
        "# Reliability: the hostile-input corpus",
        "",
        "Generated by `tests/test_hostile.py` from `tests/hostile.py`; do not edit by hand.",
        "Each case puts one hostile value into one field of an invoice of its own, in one",
        "extract run end to end by `invoices run` (plus the invoices outside the corpus, which",
        "must all be billed). The run must exit 0 with no traceback, end each case as stated,",
        "write nothing outside its home, and every file it produces must parse back: EDIFACT",
        "(pydifact, counts), X12 (pyx12, counts), UBL (XSD), emails (strict parser, headers),",
        "the Factur-X XML of every archived PDF (XSD), print manifests (CSV).",
        "",
        f"**{len(cases)} cases**: {outcome['rejected']} rejected with the stated rule, "
        f"{outcome['warning']} billed with a warning, {outcome['billed']} billed as is; "
        f"{len(run.extract.bystanders)} other invoices of the extract, all billed.",
        "",
        "| field class | cases | rejected | warning | billed | rule codes |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for field_class, group in by_class([c for _, c in cases]):
        counts = Counter(c.outcome for c in group)
        codes = sorted({c.code for c in group if c.code})
        lines.append(f"| {field_class} | {len(group)} | {counts['rejected']} | "
                     f"{counts['warning']} | {counts['billed']} | {', '.join(codes)} |")
    lines += ["", "## Cases by field and value class", "",
              "| field | channel | value class | cases | outcome |",
              "| --- | --- | --- | ---: | --- |"]
    groups: dict[tuple[str, str, str], Counter[str]] = {}
    for _, case in cases:
        key = (f"{case.table}.{case.field}", case.channel, case.value_class)
        groups.setdefault(key, Counter())[case.expect.replace("warning:", "warning ")] += 1
    for (field, channel, value_class), expects in groups.items():
        shown = ", ".join(f"{e} x{n}" if n > 1 else e for e, n in sorted(expects.items()))
        lines.append(f"| {field} | {channel} | {value_class} | {sum(expects.values())} | "
                     f"{shown} |")
    return "\n".join(lines) + "\n"


def test_reliability_doc_is_generated_from_the_corpus(run: Run) -> None:
    expected = reliability_markdown(run)
    current = RELIABILITY_DOC.read_text() if RELIABILITY_DOC.exists() else ""
    if current != expected:
        RELIABILITY_DOC.write_text(expected)
    assert current == expected, "docs/reliability.md was out of date and has been rewritten"
