"""The receivables day, step by step: what the ``receivables-daily`` flow runs.

Each step is a function of a ``Day`` (settings, ledger, archive, run id, date) and returns
plain counts, so the flow stays a thin sequence of tasks and every step can run again:
importing a statement twice adds nothing, matching places only what is unplaced, a 212 and
a letter go out once (the journal), a reminder level is recorded once per invoice (the
``dunning_records`` key), and a statement once per customer and month (its letter id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from secrets import token_hex
from typing import Any

import polars as pl

from pipeline import keys
from pipeline.archive import read_index
from pipeline.channels.base import make_transports
from pipeline.ingest import load_extract
from pipeline.journal import Journal
from pipeline.platform import client_for
from pipeline.receivables.aging import credit_balances, paid_in_full
from pipeline.receivables.aging_report import build_aging_report, write_aging_report
from pipeline.receivables.collected import send_collected
from pipeline.receivables.correspondence import (
    JOURNAL_CHANNEL,
    Envelope,
    LetterBook,
    LetterReport,
    PlannedLetter,
    deliver_letters,
)
from pipeline.receivables.disputes import Disputes
from pipeline.receivables.dunning import DunningLetter, plan_dunning
from pipeline.receivables.letters import Recipient, render_letter
from pipeline.receivables.open_items import OpenItems, customer_names, match_payments
from pipeline.receivables.payments import import_statements
from pipeline.receivables.statements import CustomerStatement, statements_for
from pipeline.render.templates import make_environment
from pipeline.settings import Settings
from pipeline.storage import open_storage
from pipeline.storage.base import Storage

__all__ = ["Day", "import_step", "match_step", "collected_step", "aging_step",
           "dunning_step", "statements_step", "TITLES", "previous_month", "new_run_id",
           "STATEMENTS_WAIT"]

STATEMENTS_WAIT = timedelta(days=7)
"""How long undelivered statements are tried again, each morning."""

# What each letter is called in the message that carries it, per language.
TITLES = {
    "fr": {"reminder": "Relance", "firm_reminder": "Second rappel",
           "formal_notice": "Mise en demeure de payer", "statement": "Relevé de compte"},
    "en": {"reminder": "Payment reminder", "firm_reminder": "Second reminder",
           "formal_notice": "Formal notice to pay", "statement": "Statement of account"},
    "de": {"reminder": "Zahlungserinnerung", "firm_reminder": "Zweite Mahnung",
           "formal_notice": "Letzte Mahnung", "statement": "Kontoauszug"},
}


@dataclass
class Day:
    """One receivables run: what every step needs."""

    settings: Settings
    run_date: date
    run_id: str
    extract_dir: Path
    """The ERP extract whose ``customers`` table addresses the letters."""
    resend_in_doubt: bool = False
    """Send again the letters and 212s a stopped run left in doubt (a 212 is looked up on
    the platform first)."""
    journal: Journal = field(init=False)
    storage: Storage = field(init=False)
    customers: pl.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        """Read the extract's customers first: without them no letter can be addressed,
        and a morning that cannot finish should not start."""
        self.customers = load_extract(self.extract_dir).customers
        self.journal = Journal(self.settings.ledger_url)
        self.storage = open_storage(self.settings)

    def reports_dir(self) -> Path:
        """Where this day's reports go: ``<home>/receivables/<date>``."""
        folder = self.settings.home / "receivables" / self.run_date.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def new_run_id() -> str:
    """A run id of its own kind, so the journal tells receivables runs from billing runs."""
    return f"ar-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{token_hex(3)}"


def previous_month(day: date) -> date:
    """The first day of the month before ``day``'s."""
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def import_step(day: Day, statements: Sequence[Path]) -> dict[str, Any]:
    """Load the statements' payments (those already imported add nothing); a file that
    cannot be read is reported, and the morning goes on with the others."""
    if not statements:
        return {"files": 0, "added": 0, "already": 0, "problems": {}}
    report = import_statements(statements, day.journal)
    return {"files": report.files, "added": report.added, "already": report.already,
            "duplicates": report.duplicates, "skipped": report.skipped,
            "problems": report.problems}


def match_step(day: Day) -> dict[str, Any]:
    """New delivered invoices become open items; unplaced payments are matched."""
    book = OpenItems(day.journal)
    added = book.refresh(read_index(day.storage))
    report = match_payments(day.journal, day.settings.receivables.oldest_first,
                            customer_names(day.customers))
    return {"new_items": added, "payments": report.payments, "by_pass": report.by_pass,
            "for_a_person": report.unallocated.height}


def collected_step(day: Day) -> dict[str, Any]:
    """212 Encaissée for the services invoices paid in full, when a platform is set."""
    if not day.settings.pa.configured:
        return {"deposited": 0, "skipped": "no platform configured"}
    book = OpenItems(day.journal)
    paid = paid_in_full(book.items(), book.allocations())
    with client_for(day.settings.pa) as client:
        report = send_collected(paid, read_index(day.storage), day.storage, day.journal,
                                day.settings, client, day.run_id,
                                resend_in_doubt=day.resend_in_doubt)
    return {"deposited": len(report.deposited), "already": report.already,
            "not_due": report.not_due, "failed": report.failed, "in_doubt": report.in_doubt}


def aging_step(day: Day) -> dict[str, Any]:
    """The aged balance and KPIs as of the run date: Parquet and HTML in the reports."""
    book = OpenItems(day.journal)
    items = book.items()
    customers = day.customers
    disputed = set(Disputes(day.journal).current())
    report = build_aging_report(items, book.allocations(), day.run_date, customers, disputed)
    paths = write_aging_report(report, day.reports_dir(),
                               make_environment(day.settings.render.templates_dir))
    return {**report.as_dict(), **{name: str(path) for name, path in paths.items()},
            "markdown": report.as_markdown()}


def _recipients(day: Day) -> dict[str, tuple[Recipient, str | None]]:
    """Each customer's address for letters, and email address."""
    return {row["customer_id"]: (Recipient.from_row(row), row.get("email"))
            for row in day.customers.iter_rows(named=True)}


def _deliver(day: Day, planned: list[PlannedLetter]) -> LetterReport:
    """Render and deliver planned letters not yet delivered."""
    recipients = _recipients(day)

    def render(letter: PlannedLetter) -> tuple[Envelope, bytes]:
        document: DunningLetter | CustomerStatement = (
            DunningLetter.from_dict(letter.payload) if letter.kind == "dunning"
            else CustomerStatement.from_dict(letter.payload))
        if letter.customer_id not in recipients:
            raise ValueError(f"customer {letter.customer_id} is not in the extract's "
                             "customers table: no address to write to")
        recipient, email = recipients[letter.customer_id]
        lang = recipient.language if recipient.language in TITLES else "fr"
        title = TITLES[lang][document.level_name if isinstance(document, DunningLetter)
                             else "statement"]
        return (Envelope(recipient.party.name, email, lang, title),
                render_letter(document, recipient, day.settings))

    transports = make_transports(day.settings)
    try:
        return deliver_letters(planned, render, day.settings, day.journal, day.storage,
                               transports, make_environment(day.settings.render.templates_dir),
                               day.run_id, day.resend_in_doubt)
    finally:
        for transport in transports.values():
            transport.close()


def _counts(planned: int, report: LetterReport) -> dict[str, Any]:
    return {"planned": planned, "delivered": len(report.delivered),
            "sent": sum(o == "sent" for o in report.delivered.values()),
            "written": sum(o == "written" for o in report.delivered.values()),
            "already": len(report.already), "failed": report.failed,
            "in_doubt": report.in_doubt}


def _withdraw_stale(day: Day, letters: LetterBook, open_cents: dict[str, int],
                    disputed: set[str]) -> int:
    """Withdraw the reminders that never went out and are no longer true: planned on an
    earlier day, or naming an invoice since paid, credited or disputed. A letter of a later
    day (a Retry of an older run) is left alone. Returns how many."""
    withdrawn = 0
    for letter in letters.undelivered("dunning"):
        key = keys.idempotency_key(letter.letter_id, JOURNAL_CHANNEL)
        states = {r.state for r in day.journal.rows(invoice=letter.letter_id) if r.key == key}
        if states & {"sent", "written", "started", "in_doubt"} or any(
                r.error_class == "terminal" for r in day.journal.rows(invoice=letter.letter_id)
                if r.key == key and r.state == "failed"):
            continue  # out, maybe out, or refused for good: never withdrawn
        lines = DunningLetter.from_dict(letter.payload).lines
        if letter.day < day.run_date or any(
                line.invoice_number in disputed
                or open_cents.get(line.invoice_number) != int(line.open_amount * 100)
                for line in lines):
            letters.withdraw(letter.letter_id)
            withdrawn += 1
    return withdrawn


def dunning_step(day: Day) -> dict[str, Any]:
    """Withdraw the reminders that did not go out and are no longer true, plan the day's
    (each level once per invoice), then deliver what is planned and not yet out."""
    book = OpenItems(day.journal)
    letters = LetterBook(day.journal)
    disputed = set(Disputes(day.journal).current())
    open_now = book.open()
    withdrawn = _withdraw_stale(day, letters, dict(open_now.select(
        "invoice_number", "cents").iter_rows()), disputed)
    sent = pl.DataFrame(letters.sent_levels(), schema={
        "invoice_number": pl.String(), "level": pl.Int64(), "day": pl.Date()}, orient="row")
    items = book.items()
    open_ = open_now.join(items.select("invoice_number", "issue_date", "currency"),
                          on="invoice_number")
    planned = 0
    credits = {(customer, currency): cents for customer, currency, cents
               in credit_balances(items, book.allocations()).iter_rows()}
    for letter in plan_dunning(open_, day.settings.receivables.dunning, day.run_date, sent,
                               disputed, day.settings.seller.recovery_indemnity, credits):
        planned += letters.plan(PlannedLetter(letter.letter_id, "dunning", letter.customer_id,
                                              letter.channel, letter.run_date,
                                              letter.to_dict()), letter.records)
    return {**_counts(planned, _deliver(day, letters.undelivered("dunning"))),
            "withdrawn": withdrawn}


def statements_step(day: Day) -> dict[str, Any]:
    """From the statement day on, every customer's statement of the month before, planned
    once; every morning, the planned statements not yet out are delivered (a run that
    stopped on the 1st is finished on the 2nd), for a week: a statement that could not go
    out by then is left for a person rather than sent long after its date."""
    letters = LetterBook(day.journal)
    planned = 0
    month = previous_month(day.run_date)
    if (day.run_date.day >= day.settings.receivables.statement_day
            and not letters.has_statements(month)):
        book = OpenItems(day.journal)
        for statement in statements_for(book.items(), book.allocations(), month):
            planned += letters.plan(PlannedLetter(statement.statement_id, "statement",
                                                  statement.customer_id, "email",
                                                  day.run_date, statement.to_dict()))
        letters.statements_planned(month)
    pending = letters.undelivered("statement")
    recent = [p for p in pending if p.day >= day.run_date - STATEMENTS_WAIT]
    return {**_counts(planned, _deliver(day, recent)), "expired": len(pending) - len(recent)}
