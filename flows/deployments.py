"""The deployments operations run: ``nightly-billing`` on a schedule, ``rerun-batch`` on
demand (from the UI or the API), both served from one process by ``invoices serve``."""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from flows.billing_run import nightly_billing, rerun_batch
from flows.receivables_daily import receivables_daily

__all__ = ["serve_deployments", "NIGHTLY", "RERUN", "RECEIVABLES"]

NIGHTLY = "nightly-billing"
RERUN = "rerun-batch"
RECEIVABLES = "receivables-daily"


def serve_deployments(extract: str, home: str, cron: str, timezone: str,
                      statements: str | None = None,
                      receivables_cron: str = "0 7 * * *") -> None:
    """Register the deployments with the Prefect API and run what they schedule: the
    nightly billing, a batch billed again on demand, and the receivables morning (bank
    statements of ``statements``, reminders, statements of account).

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
        receivables_daily.to_deployment(  # type: ignore[arg-type]
            name=RECEIVABLES, schedule=Cron(receivables_cron, timezone=timezone),
            parameters={"extract_dir": extract, "home": home, "statements_dir": statements},
            description="Match the bank's payments, report 212 Encaissée, send reminders "
                        "and monthly statements, age what is owed."),
    )
