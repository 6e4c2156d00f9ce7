"""The payments table: every bank transaction imported from statements, once.

Payments live in the ledger database next to the delivery journal, so matching can join
them with what was delivered. A payment's key is its statement, entry and transaction:
importing the same statement again, or a folder holding it twice, adds nothing. Money is
kept as integer cents: SQLite has no decimal type, and a float is never money.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from pipeline.journal import Journal
from pipeline.money import from_cents
from pipeline.receivables.camt import BankPayment, StatementError, read_statement

__all__ = ["PaymentBook", "ImportReport", "import_statements", "payments"]

_metadata = sa.MetaData()
payments = sa.Table(
    "payments", _metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("statement_id", sa.String, nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("booking_date", sa.Date),
    sa.Column("value_date", sa.Date, nullable=False),
    sa.Column("debtor_name", sa.String),
    sa.Column("debtor_iban", sa.String, index=True),
    sa.Column("creditor_reference", sa.String),
    sa.Column("remittance", sa.Text),
    sa.Column("bank_reference", sa.String, nullable=False),
    sa.Column("end_to_end_id", sa.String),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass
class ImportReport:
    """What one import did, per file and in all."""

    files: int = 0
    read: int = 0
    added: int = 0
    already: int = 0
    duplicates: int = 0
    """Transactions another statement already brought (the same bank reference, amount,
    value date and payer under another key): the bank sent them twice, the money came
    once."""
    skipped: int = 0
    """Entries that are not receivables (pending, the seller's own debits)."""
    by_kind: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    """Files not imported, with why; the others are."""


def _row(p: BankPayment, source: str, now: datetime) -> dict[str, object]:
    return {"key": p.key, "statement_id": p.statement_id, "kind": p.kind,
            "cents": int(p.amount * 100), "currency": p.currency,
            "booking_date": p.booking_date, "value_date": p.value_date,
            "debtor_name": p.debtor_name, "debtor_iban": p.debtor_iban,
            "creditor_reference": p.creditor_reference, "remittance": p.remittance,
            "bank_reference": p.bank_reference, "end_to_end_id": p.end_to_end_id,
            "source": source, "imported_at": now}


_SAME = ("cents", "currency", "value_date", "bank_reference")
"""What a payment key must still say when it is imported again."""


class PaymentBook:
    """The payments table, in the ledger database of the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine
        _metadata.create_all(self.engine)

    def add(self, found: Iterable[BankPayment], source: str) -> tuple[int, int, int]:
        """Record payments not recorded yet, in one transaction; (added, already there,
        duplicates of another key).

        Raises:
            StatementError: a key already recorded (or twice in this file) with other
                content: two statements share an id, and money would be lost silently.
        """
        now = datetime.now(UTC)
        rows: dict[str, dict[str, object]] = {}
        by_key: dict[str, BankPayment] = {}
        for p in found:
            row = _row(p, source, now)
            if p.key in rows and any(rows[p.key][c] != row[c] for c in _SAME):
                raise StatementError(f"{source}: payment {p.key} is in the file twice with "
                                     "different amounts or dates (two statements with one Id?)")
            rows[p.key], by_key[p.key] = row, p
        with self.engine.begin() as conn:
            known = {r.key: r for r in conn.execute(sa.select(payments).where(
                payments.c.key.in_(list(rows))))}
            for key, r in known.items():
                if any(getattr(r, c) != rows[key][c] for c in _SAME):
                    here = by_key[key]
                    raise StatementError(
                        f"{source}: payment {key} was imported from {r.source} with "
                        f"{from_cents(r.cents)} {r.currency} on {r.value_date}, here "
                        f"it says {here.amount} {here.currency} on {here.value_date}: two "
                        f"statements share the Id {here.statement_id}; nothing of this file "
                        "was imported")
            new = [row for key, row in rows.items() if key not in known]
            twice = {(r.bank_reference, r.cents, r.value_date, r.debtor_iban)
                     for r in conn.execute(sa.select(
                         payments.c.bank_reference, payments.c.cents, payments.c.value_date,
                         payments.c.debtor_iban)
                         .where(payments.c.bank_reference.in_([r["bank_reference"]
                                                               for r in new])))}
            fresh = [r for r in new if (r["bank_reference"], r["cents"], r["value_date"],
                                        r["debtor_iban"]) not in twice]
            for row in fresh:  # another run importing the same file: its rows win
                self.journal.insert_if_absent(conn, payments, **row)
        return len(fresh), len(known), len(new) - len(fresh)

    def count(self) -> int:
        """How many payments are recorded."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(payments)).scalar()
                       or 0)


def import_statements(paths: Iterable[Path], journal: Journal) -> ImportReport:
    """Import camt.053 files (a folder: its ``*.xml``), each whole or not at all; a file
    that cannot be imported is reported in ``problems`` and the others are imported."""
    book = PaymentBook(journal)
    report = ImportReport()
    paths = list(paths)
    for path in paths:
        if not path.exists():
            report.problems[str(path)] = f"{path}: no such file or folder"
    files = [f for p in paths if p.exists()
             for f in (sorted(p.glob("*.xml")) if p.is_dir() else [p])]
    for path in files:
        try:
            statements = read_statement(path.read_bytes(), str(path))
            found = [p for s in statements for p in s.payments]
            added, already, duplicates = book.add(found, str(path))
        except (StatementError, OSError) as exc:
            report.problems[str(path)] = str(exc)
            continue
        report.files += 1
        report.read += len(found)
        report.added += added
        report.already += already
        report.duplicates += duplicates
        report.skipped += sum(s.skipped for s in statements)
        for p in found:
            report.by_kind[p.kind] = report.by_kind.get(p.kind, 0) + 1
    return report
