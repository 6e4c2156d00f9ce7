"""What an operator sees (issue 9): one clear message per problem, tracebacks only on request.

Settings problems are found before Prefect starts, so each CLI call here takes
about a second; only the unusable-extract case goes through the flow.
"""

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline import context
from pipeline.context import open_run
from pipeline.errors import ExitCode, ExtractSchemaError, SettingsError
from pipeline.ingest import load_extract
from pipeline.preflight import check_settings, load_settings
from pipeline.schemas import INDEX
from pipeline.settings import Settings
from pipeline.validate import REGISTRY
from tests.conftest import INVOICES_CLI, SAMPLE_EXTRACT


def invoices(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INVOICES_CLI), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=300)


def run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return invoices("run", str(SAMPLE_EXTRACT), "--home", str(home), *args, **env)


def one_clear_message(result: subprocess.CompletedProcess, *expected: str,
                      status: int = ExitCode.BAD_SETTINGS) -> str:
    """The output, once checked: the status, each expected text, short, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) < 15, output
    for text in expected:
        assert text in output, output
    return output


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def test_archive_under_a_regular_file_stops_before_anything_starts(
        tmp_path: Path, a_file: Path) -> None:
    home = tmp_path / "home"
    one_clear_message(run(home, INVOICES_ARCHIVE__URL=str(a_file / "archive")),
                      "INVOICES_ARCHIVE__URL", f"'{a_file / 'archive'}'",
                      f"{a_file} is a file", "Set INVOICES_ARCHIVE__URL to a local folder")
    assert not home.exists()  # not even Prefect's state: nothing was started


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://x", "ftp:// archives are not supported"),
    ("s3:/bucket/x", "is not an S3 URL"),  # a typo never becomes a folder named "s3:"
    ("s3://", "names no bucket")])
def test_an_unknown_or_misspelt_archive_url_is_refused_with_exit_2(
        tmp_path: Path, url: str, problem: str) -> None:
    result = invoices("run", str(SAMPLE_EXTRACT), "--home", str(tmp_path / "home"),
                      cwd=tmp_path, INVOICES_ARCHIVE__URL=url)
    one_clear_message(result, "INVOICES_ARCHIVE__URL", f"'{url}'", problem,
                      "s3://bucket/prefix")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_retention_on_a_folder_archive_is_refused(tmp_path: Path) -> None:
    one_clear_message(run(tmp_path / "home", INVOICES_ARCHIVE__RETENTION_YEARS="10"),
                      "INVOICES_ARCHIVE__RETENTION_YEARS", "needs an S3 archive")


def test_an_unreachable_bucket_stops_the_run_saying_what_was_tried(
        tmp_path: Path, s3_endpoint: str) -> None:
    """Nothing is sent, and no local folder stands in for the bucket."""
    result = invoices("run", str(SAMPLE_EXTRACT), "--home", str(tmp_path / "home"),
                      cwd=tmp_path, INVOICES_ARCHIVE__URL="s3://no-such-bucket/invoices",
                      INVOICES_ARCHIVE__ENDPOINT_URL=s3_endpoint)
    one_clear_message(result, "INVOICES_ARCHIVE__URL", "'s3://no-such-bucket/invoices'",
                      f"HeadBucket on 'no-such-bucket' at {s3_endpoint}",
                      "the bucket does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ledger_in_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'ledger.db'}"
    one_clear_message(run(tmp_path / "home", INVOICES_LEDGER__URL=url),
                      "INVOICES_LEDGER__URL", repr(url), f"the folder {tmp_path / 'missing'}",
                      "unable to open database file")


def test_ledger_that_cannot_connect_is_named_without_its_password(tmp_path: Path) -> None:
    output = one_clear_message(
        run(tmp_path / "home",
            INVOICES_LEDGER__URL="postgresql://billing:s3cr3t@127.0.0.1:1/ledger"),
        "INVOICES_LEDGER__URL", "postgresql://billing:***@127.0.0.1:1/ledger")
    assert "s3cr3t" not in output


def test_ledger_file_that_is_no_database(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "ledger.db").write_text("not a database")
    one_clear_message(run(tmp_path / "home"), "INVOICES_LEDGER__URL",
                      "cannot be opened as a SQLite database")


def test_missing_templates_folder_is_found_before_validation(tmp_path: Path) -> None:
    missing = tmp_path / "templates"
    one_clear_message(run(tmp_path / "home", INVOICES_RENDER__TEMPLATES_DIR=str(missing)),
                      "INVOICES_RENDER__TEMPLATES_DIR", f"'{missing}'", "does not exist")


def test_templates_folder_without_the_credit_note(tmp_path: Path) -> None:
    partial = tmp_path / "templates"
    partial.mkdir()
    (partial / "invoice.html").write_text("{{ doc.number }}")
    one_clear_message(run(tmp_path / "home", INVOICES_RENDER__TEMPLATES_DIR=str(partial)),
                      "INVOICES_RENDER__TEMPLATES_DIR", "lacks credit_note.html")


def test_unknown_rule_code_is_refused_before_validation(tmp_path: Path) -> None:
    config = tmp_path / "invoices.toml"
    config.write_text('[validation.rules]\nPO_UNKNOWM = "off"\n')
    one_clear_message(invoices("validate", str(SAMPLE_EXTRACT), "--home", str(tmp_path),
                               INVOICES_CONFIG=str(config)),
                      f"[validation.rules] PO_UNKNOWM in {config}", "no rule has this code",
                      "did you mean PO_UNKNOWN?", "invoices rules")


def test_invalid_value_names_the_variable_and_the_value(tmp_path: Path) -> None:
    one_clear_message(run(tmp_path / "home", INVOICES_RENDER__WORKERS="abc"),
                      "INVOICES_RENDER__WORKERS", "'abc'", "valid integer")


def test_malformed_config_file(tmp_path: Path) -> None:
    config = tmp_path / "invoices.toml"
    config.write_text("[render\nworkers = 2\n")
    one_clear_message(run(tmp_path / "home", INVOICES_CONFIG=str(config)),
                      "INVOICES_CONFIG", f"'{config}'", "not valid TOML", "line 1")


def test_a_secret_in_the_config_file_is_refused(tmp_path: Path) -> None:
    """Secrets come from the environment only: a file is copied and committed."""
    config = tmp_path / "invoices.toml"
    config.write_text('[pa]\nurl = "https://pa.example/flow"\nclient_secret = "hunter2"\n')
    result = run(tmp_path / "home", INVOICES_CONFIG=str(config))
    one_clear_message(result, f"[pa] client_secret in {config}",
                      "a secret in a configuration file", "INVOICES_PA__CLIENT_SECRET")
    assert "hunter2" not in result.stdout + result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    config = tmp_path / "nowhere.toml"
    one_clear_message(invoices("validate", str(SAMPLE_EXTRACT), INVOICES_CONFIG=str(config)),
                      "INVOICES_CONFIG", f"'{config}'", "no such file")


def test_misspelt_names_are_not_silently_ignored(tmp_path: Path) -> None:
    config = tmp_path / "invoices.toml"
    config.write_text("[render]\nworkerz = 2\n")
    one_clear_message(run(tmp_path / "home", INVOICES_CONFIG=str(config),
                          INVOICES_ARCHIVE_URL="/srv/archive"),
                      "[render] workerz", "did you mean INVOICES_RENDER__WORKERS",
                      "INVOICES_ARCHIVE_URL (environment variable)",
                      "did you mean INVOICES_ARCHIVE__URL")


def test_a_misspelt_section_in_a_variable_is_not_ignored(tmp_path: Path) -> None:
    """Issue 9 review: INVOICES_ARCHVE__URL used to leave the default archive in place."""
    one_clear_message(run(tmp_path / "home", INVOICES_ARCHVE__URL="/mnt/nas/archive"),
                      "INVOICES_ARCHVE__URL (environment variable)",
                      "did you mean INVOICES_ARCHIVE__URL")


def test_home_under_a_regular_file(a_file: Path) -> None:
    one_clear_message(run(a_file / "home"), "--home or INVOICES_HOME", f"'{a_file / 'home'}'",
                      f"{a_file} is a file")


def test_verbose_prints_the_traceback_too(tmp_path: Path) -> None:
    result = run(tmp_path / "home", "--verbose", INVOICES_RENDER__WORKERS="abc")
    assert result.returncode == ExitCode.BAD_SETTINGS
    assert "Traceback" in result.stderr and "INVOICES_RENDER__WORKERS" in result.stderr


def test_unexpected_error_is_one_line_and_points_to_verbose(tmp_path: Path) -> None:
    index = tmp_path / "home" / "archive" / "index" / "period=2026-11"
    index.mkdir(parents=True)
    (index / "broken.parquet").write_text("not parquet")
    args = ("validate", str(SAMPLE_EXTRACT), "--home", str(tmp_path / "home"))
    one_clear_message(invoices(*args), "ComputeError", "run again with --verbose",
                      status=ExitCode.SOME_FAILED)
    verbose = invoices(*args, "--verbose")
    assert verbose.returncode == ExitCode.SOME_FAILED and "Traceback" in verbose.stderr


def test_validate_checks_against_the_archive_of_home(tmp_path: Path) -> None:
    invoice = pl.read_parquet(SAMPLE_EXTRACT / "invoices.parquet").row(0, named=True)
    archived = {c: invoice.get(c) for c in INDEX} | dict(
        customer_id="C99999", channel="email", status="delivered", storage_key="k",
        sha256="0", bytes=1, period="2026-11", run_id="r")
    index = tmp_path / "home" / "archive" / "index" / "period=2026-11"
    index.mkdir(parents=True)
    pl.DataFrame([archived], schema=INDEX).write_parquet(index / "earlier.parquet")

    def by_rule(*home: str) -> dict[str, int]:
        result = invoices("validate", str(SAMPLE_EXTRACT), "--json", *home, cwd=tmp_path)
        assert result.returncode == ExitCode.OK, result.stderr
        return json.loads(result.stdout)["by_rule"]

    assert by_rule("--home", str(tmp_path / "home")).get("DUPLICATE_OF_ARCHIVED") == 1
    assert "DUPLICATE_OF_ARCHIVED" not in by_rule()  # ./var has no archive


def test_unusable_extract_through_the_flow_prints_only_our_message(tmp_path: Path) -> None:
    extract = tmp_path / "extract"
    shutil.copytree(SAMPLE_EXTRACT, extract)
    (extract / "po_lines.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ExtractSchemaError) as expected:
        load_extract(extract)
    result = invoices("run", str(extract), "--home", str(tmp_path / "home"))
    output = one_clear_message(result, "po_lines.parquet", "not a readable Parquet file",
                               status=ExitCode.BAD_EXTRACT)
    assert output.strip() == f"Unusable extract: {expected.value}"  # no Prefect line at all


def test_default_settings_pass_the_preflight(settings: Settings) -> None:
    check_settings(settings)
    check_settings(load_settings(home=settings.home), writing=False)


def test_in_memory_ledger_is_refused(settings: Settings) -> None:
    settings.ledger.url = "sqlite://"
    with pytest.raises(SettingsError, match="forgets every delivery"):
        check_settings(settings)


def test_what_validate_would_refuse_late_is_refused_first(settings: Settings) -> None:
    fixed = next(code for code, rule in REGISTRY.items() if rule.fixed)
    settings.validation.rules = {fixed: "warning"}
    with pytest.raises(SettingsError, match=f"lowers \\['{fixed}'\\]"):
        check_settings(settings, writing=False)


def test_runs_started_in_the_same_second_get_their_own_id_and_folder(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9.6: the second run's summary overwrote the first's, in one reports folder."""
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 27, 22, 0, 0, 123456, tzinfo=UTC)

    monkeypatch.setattr(context, "datetime", Frozen)
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(context, "token_hex", lambda _: next(suffixes))
    first, second = open_run(settings, "x"), open_run(settings, "x")
    try:
        assert first.run_id == "20261127T220000.123456Z-x-aaaaaa"
        assert second.run_id == "20261127T220000.123456Z-x-bbbbbb"  # the folder was taken
        assert first.reports_dir != second.reports_dir
        assert first.reports_dir.is_dir() and second.reports_dir.is_dir()
    finally:
        first.close()
        second.close()


def test_run_ids_differ_without_help(settings: Settings) -> None:
    runs = [open_run(settings, "x") for _ in range(2)]
    try:
        assert runs[0].run_id != runs[1].run_id
        assert len(list((settings.home / "reports").iterdir())) == 2
    finally:
        for ctx in runs:
            ctx.close()


def test_settings_travel_to_tasks_without_secrets(monkeypatch) -> None:
    """Task inputs are stored by the orchestrator: no password goes with them; each
    process takes its secrets from its own environment."""
    monkeypatch.setenv("INVOICES_SMTP__PASSWORD", "smtp-secret")
    settings = Settings(smtp={"host": "relay.example"},
                        ledger={"url": "postgresql+psycopg://billing:db-secret@db/billing"})
    data = settings.as_plain_data()
    assert "smtp-secret" not in json.dumps(data) and "db-secret" not in json.dumps(data)
    assert data["ledger"]["url"] == "postgresql+psycopg://billing@db/billing"
    rebuilt = Settings(**data)
    assert rebuilt.smtp.password.get_secret_value() == "smtp-secret"
