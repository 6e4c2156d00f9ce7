"""One receivables writer at a time, across processes and machines sharing a ledger.

Matching reads what is unplaced, then records allocations: two processes doing it at once
would both place the same payment. Letters and 212s are protected by their own keys, but
matching is not, so whatever allocates (``ar daily``, ``ar match``, ``ar allocate``) holds
the ``receivables`` lease of the ledger while it runs. The lease is one row taken by a
single conditional UPDATE, atomic in SQLite and PostgreSQL alike; a holder that died
leaves it to expire, and the next run takes it over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from pipeline.errors import PipelineError
from pipeline.journal import Journal

__all__ = ["LeaseBusy", "receivables_lease", "LEASE_FOR"]

LEASE_FOR = timedelta(minutes=30)
"""How long a lease lasts unless its holder extends it (``keep``, between steps): one not
extended for this long is a dead holder's."""

_metadata = sa.MetaData()
leases = sa.Table(
    "leases", _metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("holder", sa.String),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
)


class LeaseBusy(PipelineError):
    """Another run holds the ledger's receivables lease: nothing was done."""


def _create(journal: Journal) -> None:
    """The leases table; a second run creating it at the same moment is not an error."""
    try:
        _metadata.create_all(journal.engine)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
        _metadata.create_all(journal.engine)  # it exists now: this only checks


@contextmanager
def receivables_lease(journal: Journal, holder: str, name: str = "receivables"
                      ) -> Iterator[Callable[[], None]]:
    """Hold the lease for the block, or raise ``LeaseBusy`` naming who holds it.

    Yields ``keep``: call it between long steps to extend the lease; it raises
    ``LeaseBusy`` if the lease was lost meanwhile (it expired and another run took it).
    """
    _create(journal)
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

    def keep() -> None:
        with journal.engine.begin() as conn:
            kept = conn.execute(leases.update().where(
                (leases.c.name == name) & (leases.c.holder == holder)).values(
                expires_at=datetime.now(UTC) + LEASE_FOR)).rowcount
        if kept != 1:
            raise LeaseBusy(f"the receivables lease of {holder} expired and another run took "
                            "it: stopped before doing anything twice")

    try:
        yield keep
    finally:
        with journal.engine.begin() as conn:
            conn.execute(leases.update().where((leases.c.name == name)
                                               & (leases.c.holder == holder))
                         .values(holder=None))
