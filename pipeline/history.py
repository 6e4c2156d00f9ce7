"""One invoice's whole story, for ``invoices status``: validation, rendering and archiving,
each delivery, each lifecycle status from the platform, in the order they happened.

Everything comes from what the pipeline already keeps (the runs' ``rejections.parquet``,
the archive index, the delivery journal, the lifecycle statuses), so the story is the
record itself, not a second copy that could disagree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from pipeline import keys
from pipeline.journal import Journal
from pipeline.platform.lifecycle import LifecycleLog
from pipeline.schemas import CHANNELS

__all__ = ["Event", "invoice_history"]


@dataclass(frozen=True)
class Event:
    """Something that happened to the invoice."""

    at: datetime | None
    stage: str
    """``validation``, ``archive``, ``delivery`` or ``platform``."""
    what: str
    detail: str


def _run_started(run_id: str) -> datetime | None:
    """Run ids start with their UTC start time (``20261130T050102.123456Z-...``)."""
    try:
        return datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%S.%fZ").replace(
            tzinfo=UTC)
    except ValueError:
        return None


def _validation(reports: Path, number: str) -> list[Event]:
    found = []
    for path in sorted(reports.glob("*/rejections.parquet")):
        rows = pl.read_parquet(path).filter(pl.col("invoice_number") == number)
        for r in rows.iter_rows(named=True):
            verdict = "rejected" if r["severity"] == "error" else "warning"
            found.append(Event(_run_started(path.parent.name), "validation",
                               f"{verdict} {r['code']}",
                               f"run {path.parent.name}: " + " ".join(
                                   str(r[c]) for c in ("detail", "actual", "expected")
                                   if r.get(c))))
    return found


def _archive(index: pl.DataFrame, number: str) -> list[Event]:
    rows = index.filter(pl.col("invoice_number") == number)
    return [Event(_run_started(r["run_id"]), "archive", f"rendered and archived ({r['status']}"
                  f" on {r['channel']})", f"{r['storage_key']} sha256 {r['sha256']}")
            for r in rows.iter_rows(named=True)]


def _deliveries(journal: Journal, number: str) -> list[Event]:
    events = journal.history([keys.idempotency_key(number, c) for c in CHANNELS])
    return [Event(e["at"].replace(tzinfo=UTC) if e["at"].tzinfo is None else e["at"],
                  "delivery", f"{e['channel']} {e['state']}",
                  f"{e['transport'] or ''} {e['reply'] or ''}".strip()) for e in events]


def _platform(journal: Journal, number: str) -> list[Event]:
    return [Event(s.status_at, "platform", f"{s.code} {s.name}",
                  (s.reason_text + " " if s.reasons else "")
                  + (f"amount {s.amount} " if s.amount else "") + f"(flow {s.flow_id})")
            for s in LifecycleLog(journal).of(number)]


def invoice_history(number: str, reports: Path, index: pl.DataFrame, journal: Journal
                    ) -> list[Event]:
    """Every event recorded about ``number``, oldest first (undated ones last)."""
    found = (_validation(reports, number) + _archive(index, number)
             + _deliveries(journal, number) + _platform(journal, number))
    last = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda e: e.at or last)

