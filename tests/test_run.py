"""End to end through the CLI: the nightly flow on Prefect's embedded local API."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import ExitCode
from pipeline.sample import DEFECTS_FILE, generate_extract
from pipeline.settings import PROJECT_ROOT
from tests.conftest import INVOICES_CLI, SAMPLE_EXTRACT


def run_cli(extract: Path, home: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([str(INVOICES_CLI), "run", str(extract), "--home", str(home)],
                            capture_output=True, text=True, env={**os.environ, **env},
                            timeout=900)
    summaries = sorted((home / "reports").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(summaries[-1].read_text()) if summaries else {}
    return result, summary


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("run") / "home"
    result, summary = run_cli(SAMPLE_EXTRACT, home)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    return home, summary, snapshot(home / "outbox"), snapshot(home / "archive" / "index")


def test_summary_adds_up_and_covers_every_channel(first_run) -> None:
    home, summary, _, _ = first_run
    for field in ("run_id", "input_invoices", "delivered", "rejected", "failed", "by_channel",
                  "duration_s", "invoices_per_s"):
        assert field in summary
    assert summary["input_invoices"] == 300
    assert summary["input_invoices"] == summary["delivered"] + summary["rejected"] + summary[
        "failed"]
    assert summary["failed"] == 0
    assert set(summary["by_channel"]) == {"email", "print", "edi", "peppol"}
    assert sum(summary["by_channel"].values()) == summary["delivered"]


def test_rejections_are_the_injected_defects(first_run) -> None:
    home, summary, _, _ = first_run
    report_dir = home / "reports" / summary["run_id"]
    rejections = pl.read_parquet(report_dir / "rejections.parquet").filter(
        pl.col("severity") == "error")
    truth = pl.read_parquet(SAMPLE_EXTRACT / DEFECTS_FILE)
    assert set(rejections["invoice_number"]) == set(truth["invoice_number"])
    html = (report_dir / "exceptions.html").read_text()
    assert all(code in html for code in truth["expected_code"])


def test_outputs_exist_for_every_delivered_invoice(first_run) -> None:
    home, summary, outbox, _ = first_run
    emails = [k for k in outbox if k.startswith("email/")]
    assert len(emails) == summary["by_channel"]["email"]
    print_pdfs = [k for k in outbox if k.startswith("print/") and k.endswith(".pdf")]
    print_csvs = [k for k in outbox if k.startswith("print/") and k.endswith(".csv")]
    assert print_pdfs and len(print_pdfs) == len(print_csvs)
    manifest_rows = sum(len((home / "outbox" / c).read_text().splitlines()) - 1
                        for c in print_csvs)
    assert manifest_rows == summary["by_channel"]["print"]
    ubl = [k for k in outbox if k.endswith(".ubl.xml")]
    assert len(ubl) == summary["by_channel"]["peppol"]
    interchanges = [k for k in outbox if k.endswith(".edi")]
    assert interchanges and all(k.startswith("edi/") for k in interchanges)
    edi_pdfs = [k for k in outbox if k.startswith("edi/") and k.endswith(".pdf")]
    assert len(edi_pdfs) == summary["by_channel"]["edi"] + summary["by_channel"]["peppol"]


def test_index_has_one_row_per_delivered_invoice_with_its_checksum(first_run) -> None:
    home, summary, _, _ = first_run
    index = pl.read_parquet(home / "archive" / "index" / "**" / "*.parquet")
    assert index.height == summary["delivered"]
    assert index["invoice_number"].n_unique() == index.height
    for row in index.sample(20, seed=1).iter_rows(named=True):
        data = (home / "archive" / row["storage_key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        assert data.startswith(b"%PDF")
    assert (index["total_gross"] == index["total_net"] + index["total_vat"]).all()
    for row in index.filter(pl.col("channel") != "print").head(30).iter_rows(named=True):
        assert row["delivered_keys"], row  # the .eml, UBL or EDI file that carried it
        for key in row["delivered_keys"]:
            assert (home / "archive" / key).is_file()


def test_second_run_delivers_nothing_twice(first_run) -> None:
    home, first, outbox_before, index_before = first_run
    result, second = run_cli(SAMPLE_EXTRACT, home)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    assert second["run_id"] != first["run_id"]
    assert second["already_delivered"] == first["delivered"] == second["delivered"]
    assert snapshot(home / "outbox") == outbox_before
    assert snapshot(home / "archive" / "index") == index_before


def test_failed_invoices_exit_1_and_are_retried_by_the_next_run(tmp_path: Path) -> None:
    extract = tmp_path / "extract"
    generate_extract(extract, 40, seed=4)
    broken = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", broken)
    credit = broken / "credit_note.html"
    credit.write_text(credit.read_text().replace(
        '{% block heading %}{{ _("Credit note") }}{% endblock %}',
        "{% block heading %}{{ oops }}{% endblock %}"))
    home = tmp_path / "home"
    result, summary = run_cli(extract, home, INVOICES_RENDER__TEMPLATES_DIR=str(broken))
    credit_notes = pl.read_parquet(extract / "invoices.parquet").filter(
        pl.col("invoice_type") == "credit_note").height
    assert result.returncode == ExitCode.SOME_FAILED
    assert summary["failed"] == credit_notes > 0
    assert all("credit_note.html" in e and "oops" in e for e in summary["failures"].values())
    assert summary["input_invoices"] == summary["delivered"] + summary["rejected"] + summary[
        "failed"]

    result, retried = run_cli(extract, home)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    assert retried["failed"] == 0
    assert retried["already_delivered"] == summary["delivered"]
    assert retried["delivered"] == summary["delivered"] + credit_notes

    # the index is append-only: the retry adds the credit notes beside the first run's rows
    from pipeline.archive import load_history
    from pipeline.storage import LocalStorage
    history = load_history(LocalStorage(home / "archive"))
    assert history.invoices.height == retried["delivered"]
    assert history.invoices["invoice_number"].n_unique() == history.invoices.height
    first_run = set(history.invoices.filter(pl.col("run_id") == summary["run_id"])[
        "invoice_number"])
    assert len(first_run) == summary["delivered"]
    assert first_run <= set(history.billed["invoice_number"]) | set(
        pl.read_parquet(extract / "invoices.parquet").filter(
            pl.col("po_number").is_null())["invoice_number"])


def test_unusable_extract_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    extract = tmp_path / "extract"
    shutil.copytree(SAMPLE_EXTRACT, extract)
    (extract / "po_lines.parquet").write_bytes(b"not parquet at all")
    home = tmp_path / "home"
    result, _ = run_cli(extract, home)
    assert result.returncode == ExitCode.BAD_EXTRACT
    assert "po_lines.parquet" in result.stderr and "not a readable Parquet file" in result.stderr
    assert sorted(p.name for p in home.iterdir()) == ["prefect"]  # Prefect's own state only


def test_an_index_part_not_written_is_said_and_the_next_run_writes_it(tmp_path: Path) -> None:
    """Delivered is delivered: the run says the index part is missing (exit 1), and the
    next run writes the rows from the journal, rejecting nothing as billed twice."""
    from pipeline.archive import load_history
    from pipeline.storage import LocalStorage

    extract, home = tmp_path / "extract", tmp_path / "home"
    generate_extract(extract, 30, seed=6)
    (home / "archive").mkdir(parents=True)
    (home / "archive" / "index").write_text("a file where the index folder goes")
    result, first = run_cli(extract, home)
    assert result.returncode == ExitCode.SOME_FAILED, result.stderr[-3000:]
    assert first["failed"] == 0 and first["delivered"] > 0
    assert any("index not written" in note for note in first["notes"])
    assert "needs an operator" in result.stderr

    (home / "archive" / "index").unlink()
    result, second = run_cli(extract, home)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    assert second["rejected"] == first["rejected"]
    assert second["already_delivered"] == first["delivered"]
    history = load_history(LocalStorage(home / "archive"))
    assert history.invoices.height == first["delivered"]
    lines = pl.read_parquet(extract / "invoice_lines.parquet").join(
        pl.read_parquet(extract / "invoices.parquet").filter(pl.col("po_number").is_not_null()),
        on="invoice_number").filter(pl.col("invoice_number").is_in(
            history.invoices["invoice_number"].implode()) & pl.col("po_line_no").is_not_null())
    assert history.billed.height == lines.height
    assert history.billed["quantity"].sum() == lines["quantity"].sum()


def test_the_embedded_prefect_api_starts_on_a_loaded_machine(tmp_path: Path) -> None:
    """Prefect gives its temporary API server 20 s (of its own sleeps) by default; importing
    and migrating it on a fresh home takes longer on two busy cores. The CLI waits longer,
    so the run goes on instead of dying of a start-up timeout."""
    extract, home = tmp_path / "extract", tmp_path / "home"
    generate_extract(extract, 8, seed=9)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(4)]  # two busy processes per core
    try:
        result, summary = run_cli(extract, home)
    finally:
        for burner in burners:
            burner.kill()
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    assert summary["delivered"] == summary["input_invoices"] - summary["rejected"] > 0
