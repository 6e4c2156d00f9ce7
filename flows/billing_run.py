"""The nightly billing flow: ingest -> validate -> batches -> render -> deliver -> report.

No business logic lives here; each task calls one ``pipeline`` function.
Render and delivery run per batch as tasks; rendering itself happens in the
run's worker processes, so a thread per in-flight batch is enough here.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline import keys
from pipeline.archive import indexed_pairs, load_history
from pipeline.batching import Batch, plan_batches
from pipeline.context import RunContext, open_run
from pipeline.delivery import BatchReport, deliver_batch
from pipeline.ingest import ExtractBundle, load_extract
from pipeline.progress import progress
from pipeline.render.stage import RenderedBatch, render_batch
from pipeline.report import summarize, write_exceptions, write_summary
from pipeline.settings import Settings
from pipeline.validate import Validation, validate

IN_FLIGHT_BATCHES = 4


@task(cache_policy=NO_CACHE)
def ingest(extract_dir: str, settings: Settings) -> ExtractBundle:
    """Read and check the extract (raises ExtractSchemaError before anything is written)."""
    return load_extract(extract_dir, settings.ingest.error_rows)


@task(cache_policy=NO_CACHE)
def validate_extract(bundle: ExtractBundle, ctx: RunContext) -> Validation:
    """Run the rules and write the rejections and the exceptions report."""
    settings = ctx.settings
    history = load_history(ctx.storage)
    ctx.indexed = indexed_pairs(history.invoices)
    validation = validate(bundle, settings.seller, settings.validation, history, edi=settings.edi)
    write_exceptions(ctx.reports_dir, ctx.run_id, bundle, validation, ctx.env)
    create_table_artifact(
        key="validation-by-rule", description="Invoices per validation rule",
        table=[{"code": code, "severity": severity, "invoices": count}
               for severity in ("error", "warning")
               for code, count in validation.counts_by_rule(severity).items()])
    return validation


@task(cache_policy=NO_CACHE)
def render(bundle: ExtractBundle, batch: Batch, ctx: RunContext) -> RenderedBatch:
    """Render one batch in the worker processes."""
    return render_batch(bundle, batch, ctx)


@task(cache_policy=NO_CACHE)
def deliver(rendered: RenderedBatch, ctx: RunContext) -> BatchReport:
    """Deliver, archive and index one rendered batch."""
    return deliver_batch(rendered, ctx)


@flow(name="nightly_billing",
      task_runner=ThreadPoolTaskRunner(max_workers=IN_FLIGHT_BATCHES))  # type: ignore[arg-type]
def nightly_billing(extract_dir: str, home: str | None = None,
                    resend_in_doubt: bool = False) -> dict[str, Any]:
    """Bill one ERP extract end to end; returns the run summary.

    ``resend_in_doubt`` re-sends what a stopped run left in doubt (an operator's call).
    """
    started = time.perf_counter()
    settings = Settings(home=Path(home)) if home else Settings()
    stages: dict[str, float] = {}

    bundle = ingest(extract_dir, settings)
    stages["ingest"] = time.perf_counter() - started
    ctx = open_run(settings, keys.extract_id(bundle.invoices["invoice_number"]),
                   resend_in_doubt)
    try:
        mark = time.perf_counter()
        validation = validate_extract(bundle, ctx)
        stages["validate"] = time.perf_counter() - mark

        mark = time.perf_counter()
        batches = plan_batches(validation.accepted, settings.render.batch_size)
        progress().start("render", validation.accepted.height)
        progress().start("deliver", validation.accepted.height)
        reports: list[BatchReport] = []
        pending: deque[Any] = deque()
        try:
            for batch in batches:
                # Prefect resolves the render future before deliver runs; its stubs don't say
                # so.
                pending.append(deliver.submit(render.submit(bundle, batch, ctx), ctx))  # type: ignore[call-overload]
                if len(pending) >= IN_FLIGHT_BATCHES:
                    reports.append(pending.popleft().result())
            reports.extend(future.result() for future in pending)
        finally:  # never close the run under a batch still delivering
            for future in pending:
                future.wait()
        stages["render_deliver"] = time.perf_counter() - mark
        stages["render_cpu"] = sum(r.render_s for r in reports)
        stages["deliver_cpu"] = sum(r.deliver_s for r in reports)

        summary = summarize(ctx.run_id, validation, reports, str(extract_dir),
                            time.perf_counter() - started, stages,
                            {c: t.name for c, t in ctx.transports.items()})
        write_summary(ctx.reports_dir, summary)
        write_exceptions(ctx.reports_dir, ctx.run_id, bundle, validation, ctx.env, summary)
        create_markdown_artifact(summary.as_markdown(), key="billing-summary",
                                 description="Nightly billing run summary")
        return summary.as_dict()
    finally:
        ctx.close()
