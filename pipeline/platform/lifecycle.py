"""Lifecycle statuses from the platform (CDAR), kept per invoice in the ledger database.

The PA reports what became of each deposited invoice (XP Z12-012: 200 Déposée ... 205
Approuvée, 207 En litige, 210 Refusée, 211 Paiement transmis, 212 Encaissée, 213 Rejetée)
as lifecycle flows. ``sync`` asks for those updated since the last one it recorded, reads
each CDAR message and records every status once (the same flow read twice adds nothing),
so it can run from the nightly flow, from ``invoices pa sync`` and again after a failure.
A flow that cannot be read is reported by id and reason, never skipped silently; the cursor
stays before it, so the next sync reads it again. A status about another seller's invoice is
reported, not recorded. Times are kept in UTC; a CDAR time without an offset is French
local time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from pipeline.einvoice import cdar
from pipeline.errors import PipelineError
from pipeline.journal import Journal
from pipeline.platform import PlatformAuthError, PlatformUnavailable, client_for
from pipeline.settings import Settings

__all__ = ["LifecycleLog", "StatusRow", "SyncReport", "sync", "NEEDS_ACTION"]

PARIS = ZoneInfo("Europe/Paris")
# Statuses after which the invoice will not be paid as it is: the seller must act.
NEEDS_ACTION = {207: "disputed", 210: "refused", 213: "rejected"}

_metadata = sa.MetaData()
statuses = sa.Table(
    "lifecycle_statuses", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow_id", sa.String, nullable=False),
    sa.Column("invoice_number", sa.String, nullable=False, index=True),
    sa.Column("code", sa.Integer, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON [[code, text], ...]
    sa.Column("amount", sa.String),  # a Decimal as text: 211/212 amounts
    sa.Column("status_at", sa.DateTime(timezone=True)),
    sa.Column("message_id", sa.String, nullable=False),
    sa.Column("flow_updated_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("message_id", "invoice_number", "code", name="one_status_per_message"),
)


@dataclass(frozen=True)
class StatusRow:
    """One recorded status of one invoice."""

    invoice_number: str
    code: int
    name: str
    reasons: tuple[tuple[str, str], ...]
    amount: str | None
    status_at: datetime | None
    flow_id: str

    @property
    def reason_text(self) -> str:
        """The reasons as one line: ``CODE: text; ...``."""
        return "; ".join(f"{c}: {t}" if c and t else c or t for c, t in self.reasons)


class LifecycleLog:
    """The statuses table, in the ledger database of the journal."""

    def __init__(self, journal: Journal) -> None:
        self.engine = journal.engine
        _metadata.create_all(self.engine)

    def record(self, flow_id: str, updated_at: datetime | None,
               found: Sequence[cdar.LifecycleStatus]) -> int:
        """Record a flow's statuses; returns how many were new."""
        new = 0
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for s in found:
                exists = conn.execute(sa.select(statuses.c.id).where(
                    (statuses.c.message_id == s.message_id)
                    & (statuses.c.invoice_number == s.invoice_number)
                    & (statuses.c.code == s.status_code))).first()
                if exists:
                    continue
                conn.execute(statuses.insert().values(
                    flow_id=flow_id, invoice_number=s.invoice_number, code=s.status_code,
                    name=s.status_name,
                    reasons=json.dumps([[d.reason_code or "", d.reason or ""]
                                        for d in s.details if d.reason_code or d.reason]),
                    amount=None if s.amount is None else str(s.amount),
                    status_at=_utc(s.status_at or s.issued_at), message_id=s.message_id,
                    flow_updated_at=_utc(updated_at), recorded_at=now))
                new += 1
        return new

    def cursor(self) -> datetime | None:
        """The latest ``updatedAt`` of a flow already recorded: the next sync asks for later."""
        with self.engine.connect() as conn:
            moment = conn.execute(sa.select(sa.func.max(statuses.c.flow_updated_at))).scalar()
        return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment

    def of(self, invoice_number: str) -> list[StatusRow]:
        """Every status of an invoice, in the order they happened."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(statuses).where(
                statuses.c.invoice_number == invoice_number).order_by(
                statuses.c.status_at, statuses.c.id)).all()
        return [_status_row(r._mapping) for r in rows]

    def needing_action(self, numbers: Sequence[str] | None = None) -> list[StatusRow]:
        """Invoices whose latest status is disputed, refused or rejected, with the reasons."""
        with self.engine.connect() as conn:
            query = sa.select(statuses).order_by(statuses.c.status_at, statuses.c.id)
            if numbers is not None:
                query = query.where(statuses.c.invoice_number.in_(list(numbers)))
            latest: dict[str, StatusRow] = {}
            for r in conn.execute(query):
                latest[r.invoice_number] = _status_row(r._mapping)
        return [row for row in latest.values() if row.code in NEEDS_ACTION]


def _utc(moment: datetime | None) -> datetime | None:
    """In UTC, stored as such (SQLite keeps no offset); a time without one is Paris time."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=PARIS)).astimezone(UTC)


def _status_row(r: Any) -> StatusRow:
    at = r["status_at"]
    return StatusRow(r["invoice_number"], r["code"], r["name"],
                     tuple(tuple(pair) for pair in json.loads(r["reasons"])), r["amount"],
                     at.replace(tzinfo=UTC) if at and at.tzinfo is None else at, r["flow_id"])


@dataclass
class SyncReport:
    """What one sync read."""

    flows: int = 0
    recorded: int = 0
    by_code: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    """Flows that could not be read, with why; they are read again next time."""


def sync(settings: Settings, journal: Journal) -> SyncReport:
    """Fetch the lifecycle flows updated since the last sync and record their statuses.

    Raises:
        ValueError: the platform is not (fully) configured.
        PlatformUnavailable, PlatformAuthError: the platform cannot be asked now.
    """
    log = LifecycleLog(journal)
    report = SyncReport()
    with client_for(settings.pa) as client:
        flows = client.search_lifecycle(log.cursor())
        stop = False  # a flow not read: the cursor must not pass it
        for flow in sorted(flows, key=lambda f: f.updated_at or datetime.min.replace(tzinfo=UTC)):
            report.flows += 1
            try:
                found = cdar.parse(client.fetch(flow.flow_id))
            except (PlatformUnavailable, PlatformAuthError):
                raise  # the platform, not this flow: the next sync starts here again
            except (ValueError, PipelineError) as exc:
                report.problems.append(f"lifecycle flow {flow.flow_id}: not read: {exc}")
                stop = True
                continue
            ours = [s for s in found if s.seller_id in (None, settings.seller.siren)]
            report.problems += [f"lifecycle flow {flow.flow_id}: status {s.status_code} of "
                                f"invoice {s.invoice_number} is about seller {s.seller_id}, "
                                "not us: not recorded" for s in found if s not in ours]
            report.recorded += log.record(flow.flow_id, None if stop else flow.updated_at,
                                          ours)
            report.by_code.update(s.status_code for s in ours)
    return report
