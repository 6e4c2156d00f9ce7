"""Operations through a real Prefect server (issue 12), as finance staff and operations
use it: deployments served by ``invoices serve``, a nightly run triggered through the
API, a batch that fails, Retry pressed the way the UI does it, ``rerun-batch``, and
what the run's artifacts and logs say. Then the same flow on a Dask cluster, and two
machines (homes) sharing one PostgreSQL journal.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import signal
import subprocess
from email import policy
from pathlib import Path

import polars as pl
import pytest

from pipeline.batching import plan_batches
from pipeline.errors import ExitCode
from pipeline.sample import generate_extract
from pipeline.settings import Settings
from pipeline.validate import validate
from tests.conftest import INVOICES_CLI, SAMPLE_EXTRACT
from tests.pg_server import postgres_url  # noqa: F401  (fixture)
from tests.prefect_server import PrefectApi
from tests.s3_server import new_bucket
from tests.servers import SmtpTestServer
from tests.test_delivery_e2e import email_invoices, finish, message_ids, smtp_env, start_cli


def _email_batch(extract: Path) -> tuple[str, set[str], int]:
    """A batch with email invoices, those invoices, and how many email invoices are
    accepted in all."""
    from pipeline.ingest import load_extract

    settings = Settings()
    accepted = validate(load_extract(extract), settings.seller, settings.validation).accepted
    batches = plan_batches(accepted, settings.render.batch_size)
    mails = set(email_invoices(extract)["invoice_number"]) & set(accepted["invoice_number"])
    batch = batches[1]
    return batch.batch_id, mails & set(batch.numbers), len(mails)


@pytest.fixture(scope="module")
def served(prefect_api: PrefectApi, tmp_path_factory: pytest.TempPathFactory):
    """``invoices serve`` running against the server, with an SMTP server for email."""
    smtp = SmtpTestServer().start()
    home = tmp_path_factory.mktemp("served") / "home"
    log = (home.parent / "serve.log").open("w")
    env = {**os.environ, "PREFECT_API_URL": prefect_api.url,
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", **smtp_env(smtp)}
    process = subprocess.Popen([str(INVOICES_CLI), "serve", "--extract", str(SAMPLE_EXTRACT),
                                "--home", str(home)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield prefect_api, smtp, home
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        log.close()
        smtp.stop()


def test_a_failed_batch_is_retried_from_the_ui_without_sending_anything_twice(served) -> None:
    api, smtp, home = served
    batch_id, victims, expected = _email_batch(SAMPLE_EXTRACT)
    smtp.handler.refuse_subjects(dict.fromkeys(victims, "554 5.6.0 message refused"))
    nightly = api.deployment_id("nightly-billing", "nightly-billing")
    run_id = api.run_deployment(nightly, {})
    run = api.wait(run_id)
    assert run["state_type"] == "FAILED", run["state"]
    assert batch_id in run["state"]["message"]
    first = smtp.received[:]
    assert len(first) == expected - len(victims) and victims
    summary = next(json.loads(a["data"]) for a in api.artifacts(run_id)
                   if a["key"] == "billing-counts")
    counts = {row["what"]: row["count"] for row in summary}
    assert counts["failed"] == len(victims) and counts["failed batches"] == 1
    assert counts["sent (email)"] == len(first)
    markdown = next(a["data"] for a in api.artifacts(run_id) if a["key"] == "billing-summary")
    assert batch_id in markdown and all(n in markdown for n in victims)
    assert "exceptions.html" in markdown
    logs = "\n".join(api.logs(run_id))
    assert all(f"batch {batch_id} invoice {n} failed" in logs for n in victims)

    smtp.handler.refuse_subjects({})  # the cause is fixed
    api.press_retry(run_id)
    retried = api.wait(run_id, after_count=run["run_count"])
    assert retried["state_type"] == "COMPLETED", retried["state"]
    again = smtp.received[len(first):]
    assert {n for m in again for n in victims if n in subject(m)} == victims
    assert len(again) == len(victims)
    assert len(smtp.received) == len(message_ids(smtp)) == expected

    # a completed batch billed again sends nothing, and says so
    plan_run = sorted((home / "reports").glob("*/plan.json"))[0].parent.name
    plan = json.loads((home / "reports" / plan_run / "plan.json").read_text())
    done = next(b for b in plan["batches"] if b != batch_id)
    rerun = api.run_deployment(api.deployment_id("rerun-batch", "rerun-batch"),
                               {"run_id": plan_run, "batch_id": done})
    assert api.wait(rerun)["state_type"] == "COMPLETED"
    [note] = [a["data"] for a in api.artifacts(rerun) if a["key"] == "rerun-batch"]
    assert "Nothing to send" in note and done in note
    assert len(smtp.received) == expected

    # the receivables morning, from its own deployment: reminders of what is late by then
    morning = api.run_deployment(api.deployment_id("receivables-daily", "receivables-daily"),
                                 {"run_date": "2027-01-04"})
    assert api.wait(morning)["state_type"] == "COMPLETED"
    counts = {row["what"]: row["count"] for row in json.loads(next(
        a["data"] for a in api.artifacts(morning) if a["key"] == "receivables-counts"))}
    assert counts["letters delivered"] > 0 and counts["payments added"] == 0
    reminders = smtp.received[expected:]
    assert reminders and all(m.rcpt_tos for m in reminders)
    assert any(a["key"] == "receivables-aging" for a in api.artifacts(morning))


def subject(mail) -> str:
    return str(email.message_from_bytes(mail.data, policy=policy.default)["Subject"])


def _outputs(home: Path) -> tuple[dict[str, str], list[tuple]]:
    """Every archived PDF's sha256, and the index rows without the run id."""
    pdfs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (home / "archive" / "invoices").rglob("*.pdf")}
    index = pl.read_parquet(home / "archive" / "index" / "**" / "*.parquet").drop(
        "run_id").sort("invoice_number", "channel")
    return pdfs, index.rows()


def test_the_flow_on_a_dask_cluster_makes_the_same_outputs(
        prefect_api: PrefectApi, tmp_path: Path) -> None:
    from distributed import LocalCluster

    extract = tmp_path / "extract"
    generate_extract(extract, 30, seed=31)
    env = {"PREFECT_API_URL": prefect_api.url}
    status, output, threads = finish(start_cli(extract, tmp_path / "threads", **env),
                                     tmp_path / "threads")
    assert status == ExitCode.OK, output[-3000:]
    os.environ["PREFECT_API_URL"] = prefect_api.url  # the workers inherit it
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            status, output, on_dask = finish(start_cli(
                extract, tmp_path / "dask", DASK_ADDRESS=cluster.scheduler_address, **env),
                tmp_path / "dask")
    finally:
        del os.environ["PREFECT_API_URL"]
    assert status == ExitCode.OK, output[-3000:]
    assert on_dask["delivered"] == threads["delivered"] > 0
    assert _outputs(tmp_path / "dask") == _outputs(tmp_path / "threads")


def test_two_machines_sharing_a_postgresql_journal_deliver_every_invoice_once(
        postgres_url: str, s3_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    """Two homes (machines) share what the README says they must: the journal, on
    PostgreSQL, and the archive, on S3."""
    import boto3
    import sqlalchemy as sa

    database = f"machines_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    smtp = SmtpTestServer().start()
    try:
        extract = tmp_path / "extract"
        generate_extract(extract, 30, seed=32)
        bucket = new_bucket(boto3.client("s3", endpoint_url=s3_endpoint))
        env = {**smtp_env(smtp),
               "INVOICES_LEDGER__URL": postgres_url.rsplit("/", 1)[0] + f"/{database}",
               "INVOICES_ARCHIVE__URL": f"s3://{bucket}/billing",
               "INVOICES_ARCHIVE__ENDPOINT_URL": s3_endpoint}
        runs = [start_cli(extract, tmp_path / f"machine{i}", **env) for i in (1, 2)]
        results = [finish(run, tmp_path / f"machine{i}") for i, run in zip((1, 2), runs,
                                                                            strict=True)]
        for status, output, _ in results:
            assert status == ExitCode.OK, output[-3000:]
        expected = email_invoices(extract).height
        assert len(smtp.received) == len(message_ids(smtp)) == expected
        assert sum(summary["sent"] for _, _, summary in results) == expected
        found = json.loads(subprocess.run(
            [str(INVOICES_CLI), "archive", "find", "--json", "--home", str(tmp_path / "machine1")],
            capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout)
        assert len(found) == sum(s["sent"] + s["written"] for _, _, s in results)
    finally:
        smtp.stop()


def test_two_runs_creating_the_relay_limit_at_once_both_go_on(
        prefect_api: PrefectApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's upsert reads, then creates: a run whose read came before another run's
    create gets ObjectAlreadyExists (seen in CI with two runs started together)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.billing_run import SMTP_LIMIT, _create_relay_limit

    read = SyncPrefectClient.read_global_concurrency_limit_by_name
    raced: list[str] = []

    def read_before_the_other_run_creates(self: SyncPrefectClient, name: str):
        if not raced:  # the other run creates the limit just after this run's read
            raced.append(name)
            self.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name,
                                                                              limit=1))
            raise ObjectNotFound(http_exc=Exception(name))
        return read(self, name)

    monkeypatch.setattr(SyncPrefectClient, "read_global_concurrency_limit_by_name",
                        read_before_the_other_run_creates)
    settings = Settings(home=tmp_path / "home",
                        smtp={"host": "127.0.0.1", "parallel_batches": 3})
    with temporary_settings({PREFECT_API_URL: prefect_api.url}):
        _create_relay_limit(settings)
    assert raced == [SMTP_LIMIT]
    reply = prefect_api.http.get(f"/v2/concurrency_limits/{SMTP_LIMIT}")
    reply.raise_for_status()
    assert reply.json()["limit"] == 3
