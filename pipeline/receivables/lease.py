"""One receivables writer at a time, across processes and machines sharing a ledger.

Matching reads what is unplaced, then records allocations: two processes doing it at once
would both place the same payment. Letters and 212s are protected by their own keys, but
matching is not, so whatever allocates (``ar daily``, ``ar match``, ``ar allocate``) holds
the ``receivables`` lease of the ledger while it runs. The lease is one row taken by a
single conditional UPDATE, atomic in SQLite and PostgreSQL alike; a holder that died
leaves it to expire, and the next run takes it over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from pipeline.errors import PipelineError
from pipeline.journal import Journal

__all__ = ["LeaseBusy", "receivables_lease", "LEASE_FOR"]

LEASE_FOR = timedelta(minutes=30)
"""A receivables run takes minutes; a lease older than this is a dead holder's."""

_metadata = sa.MetaData()
leases = sa.Table(
    "leases", _metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("holder", sa.String),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
)


class LeaseBusy(PipelineError):
    """Another run holds the ledger's receivables lease: nothing was done."""


@contextmanager
def receivables_lease(journal: Journal, holder: str, name: str = "receivables"
                      ) -> Iterator[None]:
    """Hold the lease for the block, or raise ``LeaseBusy`` naming who holds it."""
    _metadata.create_all(journal.engine)
    now = datetime.now(UTC)
    with journal.engine.begin() as conn:
        journal.insert_if_absent(conn, leases, name=name, holder=None, expires_at=now)
        taken = conn.execute(leases.update().where(
            (leases.c.name == name)
            & (leases.c.holder.is_(None) | (leases.c.expires_at < now))
        ).values(holder=holder, expires_at=now + LEASE_FOR)).rowcount
        current = conn.execute(sa.select(leases.c.holder, leases.c.expires_at).where(
            leases.c.name == name)).one()
    if taken != 1:
        raise LeaseBusy(f"another receivables run ({current.holder}) is working on this "
                        f"ledger until at most {current.expires_at:%Y-%m-%d %H:%M} UTC; "
                        "nothing was done: try again when it has finished")
    try:
        yield
    finally:
        with journal.engine.begin() as conn:
            conn.execute(leases.update().where((leases.c.name == name)
                                               & (leases.c.holder == holder))
                         .values(holder=None))
