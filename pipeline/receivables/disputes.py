"""Disputed invoices: what must not be chased while someone sorts it out.

An invoice is disputed when a person said so (``invoices ar dispute NUMBER --reason``) and
has not lifted it (``undispute``), or when the platform's latest lifecycle status for it is
207 En litige, 210 Refusée or 213 Rejetée (an invoice the platform rejected never reached
the buyer as a valid invoice: it is corrected and issued again, not chased).

Every decision is a new row, never an update: the table is the history of who disputed
what, when and why, and the latest row of an invoice says where it stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from pipeline.journal import Journal
from pipeline.platform.lifecycle import LifecycleLog

__all__ = ["Disputes", "Dispute", "PLATFORM_DISPUTES"]

# Lifecycle statuses after which the invoice is not to be chased as billed (XP Z12-012).
PLATFORM_DISPUTES = {207: "En litige", 210: "Refusée", 213: "Rejetée"}

_metadata = sa.MetaData()
decisions = sa.Table(
    "disputes", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("invoice_number", sa.String, nullable=False, index=True),
    sa.Column("disputed", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("decided_by", sa.String, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Dispute:
    """Why an invoice is disputed, and who says so (a person, or the platform)."""

    invoice_number: str
    reason: str
    source: str


class Disputes:
    """The disputes table, in the ledger database, read together with platform statuses."""

    def __init__(self, journal: Journal) -> None:
        self.engine = journal.engine
        self.lifecycle = LifecycleLog(journal)
        _metadata.create_all(self.engine)

    def decide(self, invoice_number: str, disputed: bool, reason: str, by: str) -> None:
        """Record a person's decision; ``reason`` is required to dispute."""
        if disputed and not reason.strip():
            raise ValueError(f"{invoice_number}: a dispute needs a reason (--reason)")
        with self.engine.begin() as conn:
            conn.execute(decisions.insert().values(
                invoice_number=invoice_number, disputed=disputed, reason=reason.strip(),
                decided_by=by, at=datetime.now(UTC)))

    def current(self, numbers: Sequence[str] | None = None) -> dict[str, Dispute]:
        """Invoices disputed now: the latest word on each, a person's decision or the
        platform's status, counts (a person lifts a platform dispute they settled)."""
        query = sa.select(decisions).order_by(decisions.c.at, decisions.c.id)
        if numbers is not None:
            query = query.where(decisions.c.invoice_number.in_(list(numbers)))
        latest: dict[str, tuple[datetime, Dispute | None]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
                latest[row.invoice_number] = (at, Dispute(
                    row.invoice_number, row.reason, row.decided_by) if row.disputed else None)
        for status in self.lifecycle.needing_action(numbers):
            person = latest.get(status.invoice_number)
            if status.code in PLATFORM_DISPUTES and (
                    person is None or (status.status_at is not None
                                       and status.status_at > person[0])):
                reason = f"{status.code} {PLATFORM_DISPUTES[status.code]}" + (
                    f": {status.reason_text}" if status.reason_text else "")
                latest[status.invoice_number] = (
                    status.status_at or datetime.now(UTC),
                    Dispute(status.invoice_number, reason, "platform"))
        return {n: d for n, (_, d) in latest.items() if d is not None}
