"""Letters to customers (dunning letters, monthly statements): recorded once, delivered
once, through the channels and the journal that deliver invoices.

A letter is first *planned*: one row in ``letters`` with everything needed to render it
again (its JSON payload), and, for a dunning letter, one row per (invoice, level) it
reminds of in ``dunning_records``, in the same transaction. The primary key of
``dunning_records`` is what makes a level go out once per invoice: a second run planning
the same reminder, at the same moment or a day later, cannot insert it and plans nothing.
A planned letter is then delivered like an invoice: its PDF archived first
(``letters/YYYY/MM/<id>.pdf``), its delivery claimed in the journal (key ``letter:<id>``:
one winner across runs), handed to the channel's transport (email: a message with the PDF;
print: the PDF for the print house), recorded ``sent`` or ``written``, and the bytes that
went out archived. A letter that did not go out on its day (a run stopped between
planning and delivering, a relay refused it) is never sent stale: the next run withdraws
it (``withdraw``) and plans what is true that day. One that may have gone out (in doubt)
stays, for ``--resend-in-doubt``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import jinja2
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pipeline import keys
from pipeline.archive import archive_delivery
from pipeline.channels.email import build_letter
from pipeline.channels.transports.base import (
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
    Transport,
)
from pipeline.errors import PipelineError
from pipeline.journal import FINAL_STATES, Delivery, Journal
from pipeline.journal import journal as delivery_journal
from pipeline.settings import Settings
from pipeline.storage.base import ArchiveConflictError, Storage, StoredObject

__all__ = ["LetterBook", "PlannedLetter", "Envelope", "LetterReport", "deliver_letters",
           "JOURNAL_CHANNEL"]

TKind = Literal["dunning", "statement"]
JOURNAL_CHANNEL = "letter"

_metadata = sa.MetaData()
letters = sa.Table(
    "letters", _metadata,
    sa.Column("letter_id", sa.String, primary_key=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("customer_id", sa.String, nullable=False, index=True),
    sa.Column("channel", sa.String, nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
)
statement_months = sa.Table(
    "statement_months", _metadata,
    sa.Column("month", sa.Date, primary_key=True),
    sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
)
dunning_records = sa.Table(
    "dunning_records", _metadata,
    sa.Column("invoice_number", sa.String, primary_key=True),
    sa.Column("level", sa.Integer, primary_key=True),
    sa.Column("letter_id", sa.String, nullable=False, index=True),
)


@dataclass(frozen=True)
class PlannedLetter:
    """A letter as the ledger holds it."""

    letter_id: str
    kind: TKind
    customer_id: str
    channel: str
    day: date
    payload: dict[str, Any]


class LetterBook:
    """The letters and dunning records tables, in the ledger database."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine
        _metadata.create_all(self.engine)

    def plan(self, letter: PlannedLetter, records: Sequence[tuple[str, int]] = ()) -> bool:
        """Record a letter and the (invoice, level) pairs it reminds of, all or nothing.
        False when the letter, or one of its reminders, is already planned."""
        try:
            with self.engine.begin() as conn:
                conn.execute(letters.insert().values(
                    letter_id=letter.letter_id, kind=letter.kind,
                    customer_id=letter.customer_id, channel=letter.channel, day=letter.day,
                    payload=json.dumps(letter.payload, sort_keys=True),
                    planned_at=datetime.now(UTC)))
                if records:
                    conn.execute(dunning_records.insert(), [
                        {"invoice_number": n, "level": level, "letter_id": letter.letter_id}
                        for n, level in records])
        except IntegrityError:
            return False
        return True

    def sent_levels(self) -> list[tuple[str, int, date]]:
        """Every (invoice, level, day of the letter) a planned letter reminds of."""
        with self.engine.connect() as conn:
            return [(r.invoice_number, r.level, r.day) for r in conn.execute(
                sa.select(dunning_records.c.invoice_number, dunning_records.c.level,
                          letters.c.day).join_from(
                    dunning_records, letters,
                    letters.c.letter_id == dunning_records.c.letter_id))]

    def withdraw(self, letter_id: str) -> None:
        """Forget a letter that never went out, and the reminders it was to record, so
        that the next plan says what is true then."""
        with self.engine.begin() as conn:
            conn.execute(dunning_records.delete().where(
                dunning_records.c.letter_id == letter_id))
            conn.execute(letters.delete().where(letters.c.letter_id == letter_id))

    def has_statements(self, month_start: date) -> bool:
        """Whether every statement of that month is planned (``statements_planned``)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(statement_months.c.month).where(
                statement_months.c.month == month_start)).first() is not None

    def statements_planned(self, month_start: date) -> None:
        """Mark the month's statements all planned: until then (a run stopped half way), the
        next morning plans the missing ones."""
        with self.engine.begin() as conn:
            self.journal.insert_if_absent(conn, statement_months, month=month_start,
                                          planned_at=datetime.now(UTC))

    def undelivered(self, kind: TKind) -> list[PlannedLetter]:
        """The planned letters of a kind not yet sent or written, oldest first: one query,
        however many letters went out before."""
        key = sa.literal(f"{JOURNAL_CHANNEL}:") + letters.c.letter_id
        query = (sa.select(letters, delivery_journal.c.state)
                 .outerjoin(delivery_journal, delivery_journal.c.key == key)
                 .where((letters.c.kind == kind)
                        & (delivery_journal.c.state.is_(None)
                           | delivery_journal.c.state.not_in(FINAL_STATES)))
                 .order_by(letters.c.day, letters.c.letter_id))
        with self.engine.connect() as conn:
            return [PlannedLetter(r.letter_id, r.kind, r.customer_id, r.channel, r.day,
                                  json.loads(r.payload)) for r in conn.execute(query)]

    def planned(self, kind: TKind | None = None) -> list[PlannedLetter]:
        """Every planned letter (of one kind), oldest first."""
        query = sa.select(letters).order_by(letters.c.day, letters.c.letter_id)
        if kind:
            query = query.where(letters.c.kind == kind)
        with self.engine.connect() as conn:
            return [PlannedLetter(r.letter_id, r.kind, r.customer_id, r.channel, r.day,
                                  json.loads(r.payload)) for r in conn.execute(query)]


@dataclass(frozen=True)
class Envelope:
    """Who a letter goes to, and the words of the message around it."""

    name: str
    email: str | None
    language: str
    title: str
    """What the letter is, in the customer's language ("Relance", "Relevé de compte")."""


@dataclass
class LetterReport:
    """What one delivery pass did; every letter is in exactly one place."""

    delivered: dict[str, str] = field(default_factory=dict)
    """Letter id -> ``sent`` or ``written``."""
    already: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    in_doubt: dict[str, str] = field(default_factory=dict)


def _archive_pdf(storage: Storage, letter: PlannedLetter, pdf: bytes) -> StoredObject:
    key = f"letters/{letter.day:%Y/%m}/{keys.safe_component(letter.letter_id)}.pdf"
    metadata = {"invoice-number": letter.letter_id, "kind": f"letter-{letter.kind}"}
    try:
        return storage.put(key, pdf, metadata)
    except ArchiveConflictError as exc:  # rendered again differently: keep both
        return storage.put(keys.variant_key(key, exc.offered), pdf, metadata)


def _parcel(letter: PlannedLetter, envelope: Envelope, pdf: bytes, sha256: str,
            settings: Settings, emails: jinja2.Environment) -> tuple[str, Parcel]:
    """The channel the letter really takes (post when there is no email address) and
    what goes out on it."""
    stem = keys.safe_component(letter.letter_id)
    if letter.channel == "email" and envelope.email and envelope.email.strip():
        built = build_letter(letter.letter_id, letter.kind, letter.day, envelope, pdf, sha256,
                             settings.seller, emails, settings.smtp)
        return "email", Parcel(f"{stem}.eml", built.data, (letter.letter_id,),
                               built.recipients, sender=settings.seller.email,
                               addressees=built.addressees)
    return "print", Parcel(f"{stem}.pdf", pdf, (letter.letter_id,))


def deliver_letters(planned: Sequence[PlannedLetter],
                    render: Callable[[PlannedLetter], tuple[Envelope, bytes]],
                    settings: Settings, journal: Journal, storage: Storage,
                    transports: dict[str, Transport], emails: jinja2.Environment,
                    run_id: str, resend_in_doubt: bool = False) -> LetterReport:
    """Deliver each planned letter not yet delivered, once.

    Args:
        render: the letter's envelope and PDF (deterministic: the same letter, the same
            bytes, so a letter rendered again after a crash is the one archived).
        transports: by channel, as ``make_transports`` builds them (``email``, ``print``).
        emails: the Jinja environment of the email templates.
        run_id: the journal's run (``journal.begin_run`` done by the caller).
    """
    report = LetterReport()
    done = journal.delivered_keys(keys.idempotency_key(p.letter_id, JOURNAL_CHANNEL)
                                  for p in planned)
    for letter in planned:
        key = keys.idempotency_key(letter.letter_id, JOURNAL_CHANNEL)
        if key in done:
            report.already.append(letter.letter_id)
            continue
        refused = [r for r in journal.rows(invoice=letter.letter_id)
                   if r.key == key and r.state == "failed" and r.error_class == "terminal"]
        if refused:  # sending it again would be refused again: a person fixes the cause
            when = refused[0].finished_at
            report.failed[letter.letter_id] = (
                f"refused for good{f' on {when:%Y-%m-%d}' if when else ''} "
                f"({refused[0].reply}); not sent again: correct the address, the next "
                "reminder goes at its time")
            continue
        try:
            envelope, pdf = render(letter)
            stored = _archive_pdf(storage, letter, pdf)
            channel, parcel = _parcel(letter, envelope, pdf, stored.sha256, settings, emails)
        except (PipelineError, ValueError, OSError) as exc:
            report.failed[letter.letter_id] = f"not prepared: {exc}"
            continue
        claim = journal.claim_all([Delivery(key, letter.letter_id, f"letter-{channel}",
                                            stored.sha256)], run_id,
                                  transports[channel].name, resend_in_doubt)[key]
        if claim == "delivered":
            report.already.append(letter.letter_id)
        elif claim != "claimed":
            report.in_doubt[letter.letter_id] = f"{claim}: another run holds it"
        else:
            _send(letter, channel, parcel, key, transports[channel], journal, storage,
                  run_id, report)
    return report


def _send(letter: PlannedLetter, channel: str, parcel: Parcel, key: str,
          transport: Transport, journal: Journal, storage: Storage, run_id: str,
          report: LetterReport) -> None:
    try:
        receipt = transport.deliver(parcel)
    except TransientDeliveryError as exc:
        if getattr(exc, "in_doubt", False):
            report.in_doubt[letter.letter_id] = str(exc)
            journal.finish(key, run_id, "in_doubt", str(exc))
        else:
            report.failed[letter.letter_id] = str(exc)
            journal.finish(key, run_id, "failed", str(exc), "transient")
        return
    except TerminalDeliveryError as exc:
        report.failed[letter.letter_id] = str(exc)
        journal.finish(key, run_id, "failed", str(exc), "terminal")
        return
    if parcel.addressees and set(parcel.addressees) <= set(receipt.refused):
        problem = f"every addressee refused: {receipt.refused}"
        report.failed[letter.letter_id] = problem
        journal.finish(key, run_id, "failed", problem, "terminal")
        return
    archived: list[str] = []
    try:
        archived.append(archive_delivery(storage, f"letter-{channel}", parcel.name,
                                         parcel.data, [letter.letter_id], letter.day).key)
    except (PipelineError, OSError, ValueError) as exc:
        receipt = type(receipt)(receipt.outcome, f"{receipt.reply}; not archived: {exc}",
                                receipt.refused)
    try:
        journal.finish(key, run_id, receipt.outcome, receipt.reply, archived=archived)
    except Exception as exc:  # it went out: in doubt, never failed (a retry would resend)
        report.in_doubt[letter.letter_id] = (f"went out, but the journal could not record "
                                             f"it ({exc}); check before --resend-in-doubt")
        return
    report.delivered[letter.letter_id] = receipt.outcome
