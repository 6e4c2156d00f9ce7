"""The delivery ledger: exactly one delivery per invoice and channel.

A delivery is claimed (``started``) before the channel is called and marked
``sent`` or ``failed`` after, each in one transaction, so a re-run skips what
was sent and retries what failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa

__all__ = ["Ledger", "TDeliveryState"]

TDeliveryState = Literal["started", "sent", "failed"]

_metadata = sa.MetaData()
deliveries = sa.Table(
    "deliveries", _metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("invoice_number", sa.String, nullable=False),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("state", sa.String, nullable=False),
    sa.Column("sha256", sa.String),
    sa.Column("detail", sa.Text),
    sa.Column("run_id", sa.String),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


control_numbers = sa.Table(
    "control_numbers", _metadata,
    sa.Column("partner", sa.String, primary_key=True),
    sa.Column("standard", sa.String, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),
)


class Ledger:
    """Delivery states in a SQLAlchemy database (SQLite file by default)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        if url.startswith("sqlite"):
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        _metadata.create_all(self.engine)

    def sent_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` were already delivered."""
        keys = list(keys)
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                found.update(conn.execute(sa.select(deliveries.c.key).where(
                    deliveries.c.key.in_(chunk), deliveries.c.state == "sent")).scalars())
        return found

    def claim(self, key: str, invoice_number: str, channel: str, sha256: str,
              run_id: str) -> bool:
        """Mark a delivery as started; False if it was already sent."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            state = conn.execute(sa.select(deliveries.c.state).where(
                deliveries.c.key == key)).scalar_one_or_none()
            if state == "sent":
                return False
            values = dict(invoice_number=invoice_number, channel=channel, state="started",
                          sha256=sha256, detail=None, run_id=run_id, updated_at=now)
            if state is None:
                conn.execute(deliveries.insert().values(key=key, **values))
            else:
                conn.execute(deliveries.update().where(deliveries.c.key == key).values(**values))
        return True

    def finish(self, key: str, state: TDeliveryState, detail: str) -> None:
        """Record the outcome of a claimed delivery."""
        with self.engine.begin() as conn:
            conn.execute(deliveries.update().where(deliveries.c.key == key).values(
                state=state, detail=detail, updated_at=datetime.now(UTC)))

    def next_control_number(self, partner: str, standard: str) -> int:
        """The next interchange control number for a trading partner (1, 2, 3...), stored."""
        with self.engine.begin() as conn:
            key = (control_numbers.c.partner == partner) & (control_numbers.c.standard == standard)
            last = conn.execute(sa.select(control_numbers.c.last).where(key).with_for_update()
                                ).scalar_one_or_none()
            if last is None:
                conn.execute(control_numbers.insert().values(partner=partner, standard=standard,
                                                             last=1))
                return 1
            conn.execute(control_numbers.update().where(key).values(last=last + 1))
            return last + 1

    def dispose(self) -> None:
        """Close connections."""
        self.engine.dispose()
