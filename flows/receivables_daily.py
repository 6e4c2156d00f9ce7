"""The receivables flow: every morning, the money side of what the nightly run billed.

Import the bank statements, match the payments to the open items, tell the platform which
services invoices were paid (212 Encaissée), age what is owed, send the reminders due, and
on the statement day send every customer the statement of the month before. Each task calls
one step of ``pipeline.receivables.daily``; each step can run again without doing anything
twice, so a retry from the UI, or the next morning, finishes what a failed run left.
"""

from __future__ import annotations

import socket
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.billing_run import scheduled_day
from pipeline.errors import PipelineError
from pipeline.preflight import check_settings, load_settings
from pipeline.receivables import daily
from pipeline.receivables.daily import Day
from pipeline.receivables.lease import receivables_lease

__all__ = ["receivables_daily", "COUNTS", "ReceivablesProblems", "problems_of"]

COUNTS = "receivables-counts"


@task(name="import-statements", cache_policy=NO_CACHE)
def import_statements(day: Day, statements: list[Path]) -> dict[str, Any]:
    """camt.053 files in, each payment once."""
    return daily.import_step(day, statements)


@task(name="match-payments", cache_policy=NO_CACHE)
def match_payments(day: Day) -> dict[str, Any]:
    """New open items, and the payments placed on them."""
    return daily.match_step(day)


@task(name="status-collected", cache_policy=NO_CACHE)
def status_collected(day: Day) -> dict[str, Any]:
    """212 Encaissée to the platform, once per paid services invoice."""
    return daily.collected_step(day)


@task(name="aging", cache_policy=NO_CACHE)
def aging(day: Day) -> dict[str, Any]:
    """The aged balance, KPIs and the HTML report."""
    return daily.aging_step(day)


@task(name="dunning", cache_policy=NO_CACHE)
def dunning(day: Day) -> dict[str, Any]:
    """Reminders planned and delivered, each level once per invoice."""
    return daily.dunning_step(day)


@task(name="statements", cache_policy=NO_CACHE)
def statements(day: Day) -> dict[str, Any]:
    """Monthly statements, on the statement day."""
    return daily.statements_step(day)


def _statement_files(folder: str | None) -> list[Path]:
    if not folder:
        return []
    path = Path(folder)
    return sorted(path.glob("*.xml")) if path.is_dir() else [path]


@flow(name="receivables-daily")
def receivables_daily(extract_dir: str, home: str | None = None,
                      statements_dir: str | None = None,
                      run_date: date | None = None,
                      resend_in_doubt: bool = False) -> dict[str, Any]:
    """Run the receivables day; returns every step's counts.

    Args:
        extract_dir: the ERP extract whose customers the letters are addressed to; may
            hold ``{run_date}``, as the nightly run's.
        home: the home of the billing runs (ledger, archive, reports).
        statements_dir: a folder of camt.053 files (or one file) to import first; may hold
            ``{run_date}`` too.
        run_date: the day the run is for (letters are dated, interest counted, to it);
            today in the seller's time zone by default.
        resend_in_doubt: send again the letters and 212s a stopped run left in doubt.
    """
    logger = get_run_logger()
    settings = load_settings(**({"home": Path(home)} if home else {}))
    check_settings(settings)
    when = run_date or scheduled_day()
    day = Day(settings, when, daily.new_run_id(),
              Path(extract_dir.format(run_date=when.isoformat())), resend_in_doubt)
    bank = statements_dir.format(run_date=when.isoformat()) if statements_dir else None
    day.journal.begin_run(day.run_id)
    try:
        with receivables_lease(day.journal, f"{day.run_id} on {socket.gethostname()}") as keep:
            result: dict[str, Any] = {"run_id": day.run_id,
                                      "run_date": day.run_date.isoformat()}
            result["import"] = import_statements(day, _statement_files(bank))
            keep()
            result["match"] = match_payments(day)
            keep()
            result["collected"] = status_collected(day)
            keep()
            result["dunning"] = dunning(day)
            keep()
            result["statements"] = statements(day)
            keep()
            result["aging"] = aging(day)
    finally:
        day.journal.end_run(day.run_id)
    result["problems"] = problems_of(result)
    _publish(result)
    logger.info("receivables %s: %s", day.run_date, {k: v for k, v in result.items()
                                                      if k not in ("aging", "problems")})
    if result["problems"]:
        for problem in result["problems"].values():
            logger.warning("%s", problem)
        raise ReceivablesProblems(result)
    return result


def problems_of(result: dict[str, Any]) -> dict[str, str]:
    """What a person must look at: files not imported, 212s and letters that failed or
    are in doubt."""
    steps = (result["import"].get("problems", {}), result["collected"].get("failed", {}),
             result["collected"].get("in_doubt", {}), result["dunning"]["failed"],
             result["dunning"]["in_doubt"], result["statements"].get("failed", {}),
             result["statements"].get("in_doubt", {}))
    return {what: why if why.startswith(what) else f"{what}: {why}"
            for found in steps for what, why in found.items()}


class ReceivablesProblems(PipelineError):
    """The morning is done, but something needs a person: the run ends Failed, saying what,
    and its artifacts have the counts; a Retry does again only what is left."""

    def __init__(self, result: dict[str, Any]) -> None:
        problems = result["problems"]
        shown = "; ".join(list(problems.values())[:5])
        super().__init__(f"{len(problems)} problem(s) need a person: {shown}"
                         + (" ..." if len(problems) > 5 else ""))
        self.result = result


def _publish(result: dict[str, Any]) -> None:
    """The counts as a table artifact, the aging KPIs as markdown, in the run's UI page."""
    rows = [
        {"step": "import", "count": result["import"]["added"], "what": "payments added"},
        *({"step": "match", "count": n, "what": f"payments placed by {name}"}
          for name, n in result["match"]["by_pass"].items()),
        {"step": "match", "count": result["match"]["for_a_person"],
         "what": "payments left for a person"},
        {"step": "212", "count": result["collected"].get("deposited", 0),
         "what": "Encaissée statuses deposited"},
        {"step": "dunning", "count": result["dunning"]["delivered"], "what": "letters delivered"},
        {"step": "statements", "count": result["statements"].get("delivered", 0),
         "what": "statements delivered"},
        {"step": "all", "count": len(result["problems"]),
         "what": "problems for a person (files not imported, letters and 212s failed or "
                 "in doubt): see the run's logs"},
    ]
    create_table_artifact(rows, key=COUNTS, description="Counts of the receivables day")
    create_markdown_artifact(result["aging"]["markdown"], key="receivables-aging",
                             description="Aged balance and KPIs")
