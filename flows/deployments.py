"""The deployments operations run: ``nightly-billing`` on a schedule, ``rerun-batch`` on
demand (from the UI or the API), both served from one process by ``invoices serve``."""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from flows.billing_run import nightly_billing, rerun_batch

__all__ = ["serve_deployments", "NIGHTLY", "RERUN"]

NIGHTLY = "nightly-billing"
RERUN = "rerun-batch"


def serve_deployments(extract: str, home: str, cron: str, timezone: str) -> None:
    """Register both deployments with the Prefect API and run what they schedule.

    The flows are module-level objects: each run is started in a new process that
    imports them again by their entrypoint.
    """
    serve(  # to_deployment returns a plain deployment when called outside an event loop
        nightly_billing.to_deployment(  # type: ignore[arg-type]
            name=NIGHTLY, schedule=Cron(cron, timezone=timezone),
            parameters={"extract_dir": extract, "home": home},
            description="Bill the night's ERP extract: validate, render, deliver, archive."),
        rerun_batch.to_deployment(  # type: ignore[arg-type]
            name=RERUN, parameters={"home": home},
            description="Bill one batch of an earlier run again (nothing is sent twice)."),
    )
