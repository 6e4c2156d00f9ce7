"""The archive on S3, end to end (issue 11): the CLI against a moto S3 server on loopback.

A 300-invoice run archives to a versioned bucket, so every PUT that created an
object leaves a version the server can list: a re-run that uploads nothing
leaves the versions as they were. ``find``, ``get`` and ``verify`` are checked
against what the delivery journal and the outbox say, not against the index
they read. A run killed with SIGKILL while archiving is followed by a run that
leaves every delivered invoice in the index and every index row backed by its
object.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import ExitCode
from pipeline.sample import generate_extract
from pipeline.storage import ArchiveConflictError
from pipeline.storage.s3 import S3Storage
from tests.conftest import INVOICES_CLI, SAMPLE_EXTRACT
from tests.s3_server import new_bucket

PREFIX = "acme/archive"


def invoices(*args: str, env: dict[str, str], timeout: int = 900
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(INVOICES_CLI), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def versions(client, bucket: str) -> dict[str, list[str]]:
    """Every version of every object: a PUT that created an object added one."""
    found: dict[str, list[str]] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", ()):
            found.setdefault(v["Key"], []).append(v["VersionId"])
    return found


def delivered(home: Path, env: dict[str, str]) -> dict[str, dict]:
    """Sent or written deliveries by invoice, from the journal (not from the archive)."""
    result = invoices("deliveries", "--home", str(home), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {r["invoice_number"]: r for r in json.loads(result.stdout)
            if r["state"] in ("sent", "written")}


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str):
    import boto3
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = new_bucket(client, versioned=True)
    env = {"INVOICES_ARCHIVE__URL": f"s3://{bucket}/{PREFIX}",
           "INVOICES_ARCHIVE__ENDPOINT_URL": s3_endpoint}
    cwd = tmp_path_factory.mktemp("cwd")
    home = cwd / "home"
    result = subprocess.run([str(INVOICES_CLI), "run", str(SAMPLE_EXTRACT), "--home", str(home)],
                            capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd,
                            timeout=900)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    return client, bucket, env, home, cwd


def test_an_s3_archive_never_makes_a_local_folder(s3_run) -> None:
    client, bucket, env, home, cwd = s3_run
    assert sorted(p.name for p in cwd.iterdir()) == ["home"]
    assert not (home / "archive").exists()
    keys = versions(client, bucket)
    assert all(k.startswith(PREFIX + "/") for k in keys)
    assert sum(k.startswith(f"{PREFIX}/invoices/") for k in keys) == 290


def test_find_returns_the_rows_of_a_customer_and_a_month(s3_run) -> None:
    client, bucket, env, home, cwd = s3_run
    journal = delivered(home, env)
    extract = pl.read_parquet(SAMPLE_EXTRACT / "invoices.parquet")
    customer = extract.filter(pl.col("invoice_number").is_in(list(journal)))[
        "customer_id"].mode().sort()[0]
    expected = sorted(extract.filter(
        (pl.col("customer_id") == customer) & pl.col("invoice_number").is_in(list(journal))
        & (pl.col("issue_date") >= pl.date(2026, 11, 1))
        & (pl.col("issue_date") <= pl.date(2026, 11, 30)))["invoice_number"])
    result = invoices("archive", "find", "--home", str(home), "--customer", customer,
                      "--from", "2026-11-01", "--to", "2026-11-30", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(expected) >= 2 and sorted(r["invoice_number"] for r in rows) == expected
    assert {r["status"] for r in rows} <= {"sent", "written"}
    assert all(r["sha256"] == journal[r["invoice_number"]]["sha256"] for r in rows)
    none = invoices("archive", "find", "--home", str(home), "--customer", customer,
                    "--from", "2025-01-01", "--to", "2025-01-31", "--json", env=env)
    assert json.loads(none.stdout) == []


def test_get_returns_the_exact_bytes_that_went_out(s3_run, tmp_path: Path) -> None:
    client, bucket, env, home, cwd = s3_run
    journal = delivered(home, env)
    number = next(n for n, r in sorted(journal.items()) if r["channel"] == "email")
    result = invoices("archive", "get", number, "--out", str(tmp_path), "--home", str(home),
                      env=env)
    assert result.returncode == 0, result.stderr
    pdf = next(tmp_path.rglob(f"{number}.pdf"))
    assert hashlib.sha256(pdf.read_bytes()).hexdigest() == journal[number]["sha256"]
    eml = next(tmp_path.rglob(f"{number}.eml"))
    assert eml.read_bytes() == next((home / "outbox").rglob(f"{number}.eml")).read_bytes()


def test_a_rerun_uploads_nothing_and_a_conflict_leaves_the_original(s3_run,
                                                                     s3_endpoint) -> None:
    client, bucket, env, home, cwd = s3_run
    before = versions(client, bucket)
    result = invoices("run", str(SAMPLE_EXTRACT), "--home", str(home), env=env)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    assert versions(client, bucket) == before  # not one PUT created anything

    storage = S3Storage(bucket, PREFIX, endpoint_url=s3_endpoint)
    key = next(k for k in before if "/invoices/" in k).removeprefix(PREFIX + "/")
    original = storage.get(key)
    with pytest.raises(ArchiveConflictError) as raised:
        storage.put(key, original + b"%% altered")
    assert key in str(raised.value)
    assert hashlib.sha256(original).hexdigest() in str(raised.value)
    assert storage.get(key) == original and versions(client, bucket) == before


def test_verify_reports_exactly_what_was_altered_or_removed(s3_run) -> None:
    client, bucket, env, home, cwd = s3_run
    clean = invoices("archive", "verify", "--home", str(home), env=env)
    assert clean.returncode == 0, clean.stderr
    assert "0 problem(s)" in clean.stderr

    keys = sorted(versions(client, bucket))
    altered = next(k for k in keys if k.endswith(".eml"))
    removed = next(k for k in keys if "/invoices/" in k)
    client.put_object(Bucket=bucket, Key=altered, Body=b"not what was sent")  # behind our back
    client.delete_object(Bucket=bucket, Key=removed)
    result = invoices("archive", "verify", "--home", str(home), env=env)
    assert result.returncode == ExitCode.SOME_FAILED
    problems = [line for line in result.stderr.splitlines()
                if line.startswith(("altered:", "missing:"))]
    assert len(problems) == 2, result.stderr
    assert any(p.startswith(f"altered: {altered.removeprefix(PREFIX + '/')}:") for p in problems)
    assert any(p.startswith(f"missing: {removed.removeprefix(PREFIX + '/')}:") for p in problems)
    assert "2 problem(s)" in result.stderr


def test_sigkill_while_archiving_then_a_rerun_leaves_the_index_whole(
        tmp_path: Path, s3_endpoint: str) -> None:
    import boto3
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = new_bucket(client)
    # One batch of 60: its index part is written only once all of them went out, which
    # leaves seconds between the first delivered file and the part for the kill to land in.
    env = {"INVOICES_ARCHIVE__URL": f"s3://{bucket}/{PREFIX}",
           "INVOICES_ARCHIVE__ENDPOINT_URL": s3_endpoint, "INVOICES_RENDER__BATCH_SIZE": "60"}
    extract, home = tmp_path / "extract", tmp_path / "home"
    generate_extract(extract, 60, seed=21)

    def count(prefix: str) -> int:
        return client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{prefix}")["KeyCount"]

    run = subprocess.Popen([str(INVOICES_CLI), "run", str(extract), "--home", str(home)],
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while count("deliveries/") < 5:  # the first batch is going out, its index not written
        assert run.poll() is None and time.monotonic() < deadline, "the run ended too soon"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the whole process group: CLI, workers, API server
    run.wait()
    journal_after_kill = delivered(home, env)
    assert journal_after_kill and count("index/") == 0  # delivered, not yet indexed

    result = invoices("run", str(extract), "--home", str(home), env=env)
    assert result.returncode in (ExitCode.OK, ExitCode.SOME_FAILED), result.stderr[-3000:]
    verify = invoices("archive", "verify", "--home", str(home), env=env)
    assert verify.returncode == 0, verify.stderr  # every index row has its object, intact
    found = json.loads(invoices("archive", "find", "--home", str(home), "--json",
                                env=env).stdout)
    journal = delivered(home, env)
    assert sorted((r["invoice_number"], r["channel"]) for r in found) == sorted(
        (n, r["channel"]) for n, r in journal.items())
    assert set(journal_after_kill) <= {r["invoice_number"] for r in found}
    killed_run = {r["run_id"] for r in journal_after_kill.values()}
    assert {r["run_id"] for r in found if r["invoice_number"] in journal_after_kill} == killed_run
