"""The billing flows: nightly billing of an extract, and one batch billed again.

No business logic lives here; each task calls ``pipeline`` functions. A batch is
the unit of work and of failure: ``bill_batch`` renders, delivers and archives
one batch, takes plain inputs (the run as data, the batch's invoice numbers)
and opens what it needs where it runs, so the same task runs in a thread of
the flow's process (the default) or on a Dask worker (``DASK_ADDRESS``). A
batch whose invoices did not all go out ends Failed, with its report; the flow
ends Failed naming those batches once every other batch is done.

Retrying a failed flow run (the UI's Retry) runs the flow again: invoices the
journal records as delivered are neither rendered nor sent again, so only the
failed batches' invoices go out, as they do with ``rerun-batch``.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline import keys
from pipeline.archive import indexed_pairs, load_history
from pipeline.batching import Batch, plan_batches
from pipeline.channels.base import transport_name
from pipeline.context import (
    RunContext,
    RunSpec,
    context_for,
    extract_for,
    forget_extract,
    open_run,
    remember_extract,
)
from pipeline.delivery import BatchReport, deliver_batch
from pipeline.errors import PipelineError
from pipeline.ingest import ExtractBundle, load_extract
from pipeline.journal import Journal
from pipeline.platform.lifecycle import LifecycleLog, StatusRow, sync
from pipeline.progress import progress
from pipeline.render.stage import render_batch
from pipeline.report import RunSummary, summarize, write_exceptions, write_summary
from pipeline.settings import Settings
from pipeline.storage.local import write_atomic
from pipeline.validate import Validation, validate

__all__ = ["nightly_billing", "rerun_batch", "bill_batch", "BatchFailed", "BatchesFailed"]

IN_FLIGHT_BATCHES = 4
PLAN_FILE = "plan.json"
SMTP_LIMIT = "smtp-relay"
DASK_ADDRESS = os.environ.get("DASK_ADDRESS") or None
"""A Dask scheduler (``tcp://host:8786``): batches then run on its workers. Read when the
flows are imported, because served flows are imported again by each run's process."""


def _task_runner() -> Any:
    if DASK_ADDRESS is None:
        return ThreadPoolTaskRunner(max_workers=IN_FLIGHT_BATCHES)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=DASK_ADDRESS)


class BatchFailed(Exception):
    """Invoices of a batch did not go out; the report says which and why."""

    def __init__(self, report: BatchReport, transient: bool) -> None:
        first = next(iter(report.failed.items()), ("", ""))
        super().__init__(f"batch {report.batch_id}: {len(report.failed)} invoice(s) failed, "
                         f"first {first[0]}: {first[1]}")
        self.report, self.transient = report, transient

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect pickles the exception into the state
        return (type(self), (self.report, self.transient))


class BatchesFailed(PipelineError):
    """The run ended with work for an operator (failed batches, invoices in doubt, notes);
    its summary is complete and written."""

    def __init__(self, summary: dict[str, Any]) -> None:
        problems = ["failed batches: " + ", ".join(
            f"{b} ({why})" for b, why in summary["failed_batches"].items())
            ] if summary["failed_batches"] else []
        if summary["in_doubt"]:
            problems.append(f"{summary['in_doubt']} invoice(s) in doubt")
        if summary["notes"]:
            problems.append("needs an operator: " + "; ".join(summary["notes"][:5]))
        super().__init__("; ".join(problems))
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.summary,))


def _transient_only(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a batch whose failures were all transient (a relay down, a 4xx); never one a
    template or a refused address broke."""
    return isinstance(state.data, BatchFailed) and state.data.transient


@task(name="pa-sync", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def sync_platform_statuses(settings_data: dict[str, Any]) -> dict[str, Any]:
    """Record the lifecycle statuses the platform published since the last sync."""
    settings = Settings(**settings_data)  # the secrets come from this process's environment
    report = sync(settings, Journal(settings.ledger_url))
    get_run_logger().info("platform: %d lifecycle flows read, %d new statuses %s",
                          report.flows, report.recorded, dict(report.by_code))
    return {"flows": report.flows, "recorded": report.recorded,
            "by_code": dict(report.by_code), "problems": report.problems}


def _platform_statuses(ctx: RunContext, summary: RunSummary) -> list[StatusRow]:
    """Sync the platform's statuses (when one is configured); what needs the seller's
    action goes to the exceptions report, a sync that failed to the operator's notes."""
    if not ctx.settings.pa.configured:
        return []
    try:
        synced = sync_platform_statuses(ctx.settings.as_plain_data())
        summary.notes.extend(synced["problems"])
    except Exception as exc:  # statuses wait for the next sync; the billing stands
        summary.notes.append(f"platform statuses not synced: {type(exc).__name__}: {exc}")
    return LifecycleLog(ctx.journal).needing_action()


@task(cache_policy=NO_CACHE, retry_condition_fn=_transient_only)
def bill_batch(spec: RunSpec, batch: Batch) -> BatchReport:
    """Render, deliver and archive one batch where this task runs."""
    logger = get_run_logger()
    ctx = context_for(spec)
    rendered = render_batch(extract_for(spec), batch, ctx)
    with _relay_slot(ctx):
        report = deliver_batch(rendered, ctx)
    for number, problem in report.failed.items():
        logger.error("batch %s invoice %s failed: %s", batch.batch_id, number, problem)
    for number, why in report.in_doubt.items():
        logger.warning("batch %s invoice %s in doubt: %s", batch.batch_id, number, why)
    logger.info("batch %s: %d delivered now, %d earlier, %d failed, %d in doubt",
                batch.batch_id, len(report.delivered), len(report.already_delivered),
                len(report.failed), len(report.in_doubt))
    if report.failed:
        raise BatchFailed(report, all(c == "transient" for c in report.failure_class.values()))
    return report


def _uses_relay(settings: Settings) -> bool:
    return transport_name("email", settings) == "smtp"


def _relay_slot(ctx: RunContext) -> Any:
    """A slot of the smtp-relay limit while the batch delivers, when email goes by SMTP:
    the relay's connection limit holds across every process and machine of the run."""
    if not _uses_relay(ctx.settings):
        return nullcontext()
    return concurrency(SMTP_LIMIT, occupy=1, strict=True)


def _create_relay_limit(settings: Settings) -> None:
    """The limit must exist: a missing one is silently not enforced (strict raises).

    Prefect's upsert reads then creates, so a second run starting at the same moment can
    see its create refused with ObjectAlreadyExists; the limit then exists, and upserting
    again only sets its size."""
    if _uses_relay(settings):
        with get_client(sync_client=True) as client:
            try:
                client.upsert_global_concurrency_limit_by_name(SMTP_LIMIT,
                                                               settings.smtp.parallel_batches)
            except ObjectAlreadyExists:
                client.upsert_global_concurrency_limit_by_name(SMTP_LIMIT,
                                                               settings.smtp.parallel_batches)


def _outcome(future: Any, batch: Batch) -> BatchReport:
    """A batch's report, also when its task failed: every invoice stays accounted for."""
    try:
        return future.result()  # type: ignore[no-any-return]
    except BatchFailed as exc:
        return exc.report
    except Exception as exc:  # a timeout, a crash: the batch's invoices failed with it
        report = BatchReport(batch.batch_id)
        for number in batch.numbers:
            report.fail(number, f"batch {batch.batch_id} stopped: {type(exc).__name__}: {exc}")
        return report


def scheduled_day() -> date:
    """The day the run was scheduled for, in Paris: a Retry on Monday of Friday night's
    run bills Friday's extract, not Monday's."""
    scheduled = flow_run.scheduled_start_time
    moment = scheduled if scheduled is not None else datetime.now(UTC)
    return moment.astimezone(ZoneInfo("Europe/Paris")).date()


def _settings(home: str | None) -> Settings:
    return Settings(home=Path(home)) if home else Settings()


def _validate(bundle: ExtractBundle, ctx: RunContext, today: date) -> Validation:
    history = load_history(ctx.storage)
    ctx.indexed = indexed_pairs(history.invoices)
    settings = ctx.settings
    validation = validate(bundle, settings.seller, settings.validation, history, today=today,
                          edi=settings.edi)
    write_exceptions(ctx.reports_dir, ctx.run_id, bundle, validation, ctx.env)
    return validation


def _batch_task(settings: Settings) -> Any:
    """``bill_batch`` with the retries of the settings (time limits are the render
    stage's and the transports': a task timeout cannot stop a thread)."""
    delivery = settings.delivery
    return bill_batch.with_options(retries=delivery.batch_retries,
                                   retry_delay_seconds=delivery.batch_retry_delays_s)


def _bill(spec: RunSpec, batches: list[Batch], settings: Settings) -> list[BatchReport]:
    """Submit every batch, a few in flight, updating the UI's progress as they end."""
    progress = create_progress_artifact(0.0, key="billing-progress",
                                        description="Batches billed")
    billing = _batch_task(settings)
    futures = {billing.submit(spec, batch): batch for batch in batches}
    reports = []
    for done, future in enumerate(as_completed(list(futures)), start=1):
        reports.append(_outcome(future, futures[future]))
        update_progress_artifact(progress, 100.0 * done / len(futures))  # type: ignore[arg-type]
    return reports


def _publish(summary: dict[str, Any], markdown: str, table: list[dict[str, Any]]) -> None:
    create_table_artifact(table, key="billing-counts", description="Counts of the run")
    create_markdown_artifact(markdown, key="billing-summary",
                             description="Nightly billing run summary")


@flow(name="nightly-billing", task_runner=_task_runner())
def nightly_billing(extract_dir: str, home: str | None = None, run_date: date | None = None,
                    resend_in_doubt: bool = False) -> dict[str, Any]:
    """Bill one ERP extract end to end; returns the run summary.

    ``extract_dir`` may hold ``{run_date}`` (``/srv/erp/{run_date}``), filled with the
    run date (today in Europe/Paris unless given). ``resend_in_doubt`` re-sends what a
    stopped run left in doubt (an operator's call).

    Raises:
        BatchesFailed: some batches did not deliver every invoice; the summary, the
            artifacts and the reports are written first.
    """
    started = time.perf_counter()
    day = run_date or scheduled_day()
    source = extract_dir.format(run_date=day.isoformat())
    settings = _settings(home)
    logger = get_run_logger()
    stages: dict[str, float] = {}

    bundle = load_extract(source, settings.ingest.error_rows)
    stages["ingest"] = time.perf_counter() - started
    ctx = open_run(settings, keys.extract_id(bundle.invoices["invoice_number"]),
                   resend_in_doubt)
    remember_extract(ctx.run_id, bundle)
    logger.info("run %s: %d invoices read from %s", ctx.run_id, bundle.invoices.height, source)
    try:
        mark = time.perf_counter()
        validation = _validate(bundle, ctx, day)
        stages["validate"] = time.perf_counter() - mark
        batches = plan_batches(validation.accepted, settings.render.batch_size)
        write_atomic(ctx.reports_dir / PLAN_FILE, json.dumps(
            {"extract": source, "batches": {b.batch_id: b.numbers for b in batches}}).encode())
        logger.info("run %s: %d accepted, %d rejected, %d batches", ctx.run_id,
                    validation.accepted.height, validation.rejected, len(batches))

        _create_relay_limit(settings)
        mark = time.perf_counter()
        progress().start("render", validation.accepted.height)
        progress().start("deliver", validation.accepted.height)
        reports = _bill(ctx.spec(source, render_in_process=DASK_ADDRESS is not None), batches,
                        settings)
        stages["render_deliver"] = time.perf_counter() - mark
        stages["render_cpu"] = sum(r.render_s for r in reports)
        stages["deliver_cpu"] = sum(r.deliver_s for r in reports)

        summary = summarize(ctx.run_id, validation, reports, source,
                            time.perf_counter() - started, stages,
                            {c: t.name for c, t in ctx.transports.items()})
        platform = _platform_statuses(ctx, summary)
        write_summary(ctx.reports_dir, summary)
        write_exceptions(ctx.reports_dir, ctx.run_id, bundle, validation, ctx.env, summary,
                         platform)
        _publish(summary.as_dict(), summary.as_markdown() + "\n\nExceptions report: "
                 f"`{ctx.reports_dir / 'exceptions.html'}`", summary.as_table())
    finally:
        ctx.close()
        forget_extract(ctx.run_id)
    if summary.failed_batches or summary.in_doubt or summary.notes:
        raise BatchesFailed(summary.as_dict())
    return summary.as_dict()


@flow(name="rerun-batch", task_runner=_task_runner())
def rerun_batch(run_id: str, batch_id: str, home: str | None = None) -> dict[str, Any]:
    """Bill one batch of an earlier run again: what went out is not sent again."""
    settings = _settings(home)
    plan = json.loads((settings.home / "reports" / run_id / PLAN_FILE).read_text())
    if batch_id not in plan["batches"]:
        raise PipelineError(f"run {run_id} has no batch {batch_id}")
    batch = Batch(batch_id, tuple(plan["batches"][batch_id]))
    ctx = open_run(settings, f"rerun-{batch_id}")
    _create_relay_limit(settings)
    try:
        spec = ctx.spec(plan["extract"], render_in_process=DASK_ADDRESS is not None)
        report = _outcome(_batch_task(settings).submit(spec, batch), batch)
    finally:
        ctx.close()
    result = {"run_id": ctx.run_id, "of_run": run_id, "batch_id": batch_id,
              "invoices": len(batch.numbers), "delivered_now": len(report.delivered),
              "already_delivered": len(report.already_delivered),
              "failed": len(report.failed), "in_doubt": len(report.in_doubt)}
    nothing = not report.delivered and not report.failed and not report.in_doubt
    create_markdown_artifact(
        f"**Batch {batch_id} of run {run_id}**\n\n"
        + ("Nothing to send: every invoice of the batch was already delivered.\n\n"
           if nothing else "")
        + "| invoices | delivered now | delivered earlier | failed | in doubt |\n"
        "|---:|---:|---:|---:|---:|\n"
        f"| {result['invoices']} | {result['delivered_now']} | {result['already_delivered']} "
        f"| {result['failed']} | {result['in_doubt']} |\n"
        + "".join(f"\n- {n}: {why}" for n, why in report.failed.items()),
        key="rerun-batch", description=f"Batch {batch_id} billed again")
    if report.failed:
        raise BatchFailed(report, transient=False)
    return result
