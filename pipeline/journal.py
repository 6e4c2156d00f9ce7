"""The delivery journal: every invoice and channel, delivered exactly once.

A delivery moves ``pending -> started -> sent | deposited | written | failed | in_doubt``,
each step one transaction. A claim is one conditional ``UPDATE ... WHERE state IN ('pending',
'failed')`` whose row count says who won, so two runs, two workers or a retry
can never both claim a delivery, on SQLite as on PostgreSQL. A ``started`` row
whose run is gone (a crash between claim and outcome) is *in doubt*: the
message may or may not have left, so it is never re-sent blindly; an operator
re-sends it with ``--resend-in-doubt`` (same bytes, same Message-ID). A transport
that cannot tell (a connection lost after the message's data went out) records
``in_doubt`` itself.

Each transition is also appended to ``delivery_events``, which is what
``invoices deliveries`` shows: what went where, when, and the server's answers.
Runs register themselves in ``runs`` (host, pid, heartbeat), which is how a
``started`` row is told apart from one that another live run is delivering.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

__all__ = ["Journal", "TDeliveryState", "TErrorClass", "ClaimResult", "DeliveryRow", "Delivery",
           "FINAL_STATES"]

TDeliveryState = Literal["pending", "started", "sent", "written", "deposited", "failed",
                         "in_doubt"]
TErrorClass = Literal["transient", "terminal"]
FINAL_STATES = ("sent", "written", "deposited")
# A run on another machine is taken for dead when its heartbeat is this old.
STALE_AFTER = timedelta(minutes=10)

_metadata = sa.MetaData()
journal = sa.Table(
    "delivery_journal", _metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("invoice_number", sa.String, nullable=False, index=True),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("state", sa.String, nullable=False, index=True),
    sa.Column("transport", sa.String),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("sha256", sa.String),
    sa.Column("reply", sa.Text),
    sa.Column("error_class", sa.String),
    sa.Column("run_id", sa.String, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    # JSON list of the archive keys of what carried the delivery (an .eml, a print file):
    # a run killed before it wrote its index part leaves them here for the next run.
    sa.Column("archived", sa.Text),
)
events = sa.Table(
    "delivery_events", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String, nullable=False, index=True),
    sa.Column("invoice_number", sa.String, nullable=False, index=True),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("state", sa.String, nullable=False),
    sa.Column("transport", sa.String),
    sa.Column("attempt", sa.Integer),
    sa.Column("reply", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
runs = sa.Table(
    "runs", _metadata,
    sa.Column("run_id", sa.String, primary_key=True),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)
control_numbers = sa.Table(
    "control_numbers", _metadata,
    sa.Column("partner", sa.String, primary_key=True),
    sa.Column("standard", sa.String, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery as the journal holds it; ``state`` may read ``in_doubt``."""

    key: str
    invoice_number: str
    channel: str
    state: str
    transport: str | None
    attempts: int
    reply: str | None
    error_class: str | None
    run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    archived: tuple[str, ...] = ()
    sha256: str | None = None
    """The digest of the invoice's PDF when it was claimed."""


ClaimResult = Literal["claimed", "delivered", "in_flight", "in_doubt", "free"]


@dataclass(frozen=True)
class Delivery:
    """A delivery to claim: its key (channel:invoice), invoice, channel and content digest."""

    key: str
    invoice_number: str
    channel: str
    sha256: str


def _now() -> datetime:
    return datetime.now(UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Journal:
    """Delivery states in a SQLAlchemy database (a SQLite file by default, or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        sqlite = url.startswith("sqlite")
        self.engine = sa.create_engine(url, connect_args={"timeout": 60} if sqlite else {})
        self.dialect = self.engine.dialect.name
        if sqlite:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        for attempt in range(5):  # two runs on a fresh home both create the tables
            try:
                _metadata.create_all(self.engine)
                break
            except sa.exc.DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        self._add_new_columns()
        self.host = socket.gethostname()

    def _add_new_columns(self) -> None:
        """Columns added since a ledger was created (nullable, so old rows stay valid)."""
        for table in _metadata.sorted_tables:
            present = {c["name"] for c in sa.inspect(self.engine).get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(self.engine.dialect)
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(f"ALTER TABLE {table.name} "
                                             f"ADD COLUMN {column.name} {kind}")

    # --- runs ---------------------------------------------------------------------------

    def begin_run(self, run_id: str) -> None:
        """Register a run, so that its ``started`` rows are known to be in flight."""
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(runs.insert().values(run_id=run_id, host=self.host, pid=os.getpid(),
                                              started_at=now, heartbeat_at=now))

    def end_run(self, run_id: str) -> None:
        """Mark the run finished: any row it left ``started`` is from now on in doubt."""
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(
                finished_at=_now()))

    def heartbeat(self, run_id: str) -> None:
        """Tell runs on other machines that this one is still alive."""
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(
                heartbeat_at=_now()))

    def _alive(self, conn: sa.Connection, run_ids: Iterable[str]) -> set[str]:
        found = conn.execute(sa.select(runs).where(runs.c.run_id.in_(list(run_ids)))).all()
        stale = _now() - STALE_AFTER
        alive = set()
        for run in found:
            if run.finished_at is not None:
                continue
            if run.host == self.host:
                if _pid_alive(run.pid):
                    alive.add(run.run_id)
            elif _aware(run.heartbeat_at) > stale:
                alive.add(run.run_id)
        return alive

    # --- deliveries ---------------------------------------------------------------------

    def insert_if_absent(self, conn: sa.Connection, table: sa.Table, **values: Any) -> None:
        """INSERT ... ON CONFLICT DO NOTHING, in the database's own dialect."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert
            conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert
            conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
        else:
            raise ValueError(f"the journal supports SQLite and PostgreSQL, not {self.dialect}")

    def claim(self, key: str, invoice_number: str, channel: str, sha256: str, run_id: str,
              transport: str, resend_in_doubt: bool = False) -> ClaimResult:
        """Claim one delivery for this run (see ``claim_all``)."""
        return self.claim_all([Delivery(key, invoice_number, channel, sha256)], run_id,
                              transport, resend_in_doubt)[key]

    def claim_all(self, wanted: Sequence[Delivery], run_id: str, transport: str,
                  resend_in_doubt: bool = False) -> dict[str, ClaimResult]:
        """Claim deliveries for this run, all of them or none (a file carrying several
        invoices goes out whole); only one claimer of a delivery ever wins.

        Per key: ``claimed`` (all were: go on and deliver), ``delivered`` (sent, deposited or
        written before), ``in_flight`` (another live run has started it), ``in_doubt`` (a run that
        is gone started it, or a transport could not tell: only ``resend_in_doubt`` claims
        it), or ``free`` (claimable, but not claimed because another one was not).
        """
        now = _now()
        keys = [d.key for d in wanted]
        with self.engine.begin() as conn:
            for d in wanted:  # the first write also takes SQLite's write lock until commit
                self.insert_if_absent(conn, journal, key=d.key, invoice_number=d.invoice_number,
                                       channel=d.channel, state="pending", attempts=0,
                                       created_at=now)
            rows = {r.key: r for r in conn.execute(
                sa.select(journal).where(journal.c.key.in_(keys)).with_for_update())}
            alive = self._alive(conn, {r.run_id for r in rows.values() if r.state == "started"})
            status: dict[str, ClaimResult] = {}
            for key, row in rows.items():
                if row.state in FINAL_STATES:
                    status[key] = "delivered"
                elif row.state in ("pending", "failed"):
                    status[key] = "claimed"
                elif row.state == "started" and row.run_id in alive:
                    status[key] = "in_flight"
                else:
                    status[key] = "claimed" if resend_in_doubt else "in_doubt"
            if any(v != "claimed" for v in status.values()):
                return {k: "free" if v == "claimed" else v for k, v in status.items()}
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(heartbeat_at=now))
            for d in wanted:
                row = rows[d.key]
                conn.execute(journal.update().where(journal.c.key == d.key).values(
                    state="started", attempts=row.attempts + 1, run_id=run_id,
                    transport=transport, sha256=d.sha256, reply=None, error_class=None,
                    started_at=now, finished_at=None))
                conn.execute(events.insert().values(
                    key=d.key, invoice_number=d.invoice_number, channel=d.channel,
                    run_id=run_id, state="started", transport=transport,
                    attempt=row.attempts + 1, at=now))
        return status

    def finish(self, key: str, run_id: str, state: TDeliveryState, reply: str,
               error_class: TErrorClass | None = None,
               archived: Sequence[str] = ()) -> None:
        """Record the outcome of a delivery this run claimed (and only then), with the
        archive keys of what carried it."""
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(journal.update().where(
                journal.c.key == key, journal.c.run_id == run_id, journal.c.state == "started"
            ).values(state=state, reply=reply, error_class=error_class, finished_at=now,
                     archived=json.dumps(list(archived)) if archived else None
                     ).returning(journal.c.invoice_number, journal.c.channel,
                                 journal.c.transport, journal.c.attempts)).one_or_none()
            if row is None:
                raise RuntimeError(f"delivery {key} was not started by run {run_id}")
            conn.execute(events.insert().values(
                key=key, invoice_number=row.invoice_number, channel=row.channel,
                run_id=run_id, state=state, transport=row.transport, attempt=row.attempts,
                reply=reply, at=now))

    def settle(self, key: str) -> ClaimResult | TDeliveryState:
        """Where a delivery another run was handling stands now."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(journal).where(journal.c.key == key)).one_or_none()
            if row is None or row.state == "pending":
                return "failed"  # nobody holds it any more: the next run delivers it
            if row.state in FINAL_STATES:
                return "delivered"
            if row.state != "started":
                return row.state  # type: ignore[no-any-return]
            return "in_flight" if row.run_id in self._alive(conn, [row.run_id]) else "in_doubt"

    def delivered_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` were already sent, deposited or written."""
        keys = list(keys)
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                found.update(conn.execute(sa.select(journal.c.key).where(
                    journal.c.key.in_(keys[start:start + 500]),
                    journal.c.state.in_(FINAL_STATES))).scalars())
        return found

    def final_rows(self, keys: Iterable[str]) -> dict[str, DeliveryRow]:
        """The sent, deposited or written deliveries among ``keys``, by key."""
        keys = list(keys)
        found: dict[str, DeliveryRow] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                for r in conn.execute(sa.select(journal).where(
                        journal.c.key.in_(keys[start:start + 500]),
                        journal.c.state.in_(FINAL_STATES))):
                    found[r.key] = _row(r, r.state)
        return found

    def rows(self, invoice: str | None = None, run_id: str | None = None,
             state: str | None = None) -> list[DeliveryRow]:
        """Deliveries, filtered; ``state='in_doubt'`` selects started rows of runs gone."""
        query = sa.select(journal).order_by(journal.c.invoice_number, journal.c.channel)
        if invoice:
            query = query.where(journal.c.invoice_number == invoice)
        if run_id:
            touched = sa.select(events.c.key).where(events.c.run_id == run_id)
            query = query.where(journal.c.key.in_(touched))
        if state == "in_doubt":
            query = query.where(journal.c.state.in_(("started", "in_doubt")))
        elif state:
            query = query.where(journal.c.state == state)
        with self.engine.connect() as conn:
            found = conn.execute(query).all()
            alive = self._alive(conn, {r.run_id for r in found if r.state == "started"})
        result = [_row(r, "in_doubt" if r.state == "started" and r.run_id not in alive
                       else r.state) for r in found]
        return [r for r in result if state != "in_doubt" or r.state == "in_doubt"]

    def history(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Every recorded transition of these deliveries, oldest first."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(events).where(events.c.key.in_(list(keys))).order_by(events.c.id))]

    def next_control_number(self, partner: str, standard: str) -> int:
        """The next interchange control number for a trading partner (1, 2, 3...), stored.

        One atomic ``UPDATE ... RETURNING``: two runs can never draw the same number.
        """
        key = (control_numbers.c.partner == partner) & (control_numbers.c.standard == standard)
        with self.engine.begin() as conn:
            self.insert_if_absent(conn, control_numbers, partner=partner, standard=standard,
                                   last=0)
            return int(conn.execute(control_numbers.update().where(key).values(
                last=control_numbers.c.last + 1).returning(control_numbers.c.last)).scalar_one())

    def dispose(self) -> None:
        """Close connections."""
        self.engine.dispose()


def _row(r: sa.Row[Any], state: str) -> DeliveryRow:
    return DeliveryRow(r.key, r.invoice_number, r.channel, state, r.transport, r.attempts,
                       r.reply, r.error_class, r.run_id, r.started_at, r.finished_at,
                       tuple(json.loads(r.archived)) if r.archived else (), r.sha256)


def _aware(moment: datetime) -> datetime:
    """SQLite hands timezone-aware values back naive; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
