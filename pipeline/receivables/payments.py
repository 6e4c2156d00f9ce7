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
from pipeline.receivables.camt import BankPayment, read_statement

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
    by_kind: dict[str, int] = field(default_factory=dict)


class PaymentBook:
    """The payments table, in the ledger database of the journal."""

    def __init__(self, journal: Journal) -> None:
        self.engine = journal.engine
        _metadata.create_all(self.engine)

    def add(self, found: Iterable[BankPayment], source: str) -> tuple[int, int]:
        """Record payments not recorded yet, in one transaction; (added, already there)."""
        rows = list(found)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            known = {k for (k,) in conn.execute(sa.select(payments.c.key).where(
                payments.c.key.in_([p.key for p in rows])))}
            new = [p for p in rows if p.key not in known]
            if new:
                conn.execute(payments.insert(), [{
                    "key": p.key, "statement_id": p.statement_id, "kind": p.kind,
                    "cents": int(p.amount * 100), "currency": p.currency,
                    "booking_date": p.booking_date,
                    "value_date": p.value_date, "debtor_name": p.debtor_name,
                    "debtor_iban": p.debtor_iban, "creditor_reference": p.creditor_reference,
                    "remittance": p.remittance, "bank_reference": p.bank_reference,
                    "end_to_end_id": p.end_to_end_id, "source": source, "imported_at": now}
                    for p in new])
        return len(new), len(rows) - len(new)

    def count(self) -> int:
        """How many payments are recorded."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(payments)).scalar()
                       or 0)


def import_statements(paths: Iterable[Path], journal: Journal) -> ImportReport:
    """Import camt.053 files (a folder: its ``*.xml``), each whole or not at all.

    Raises:
        StatementError: a file that cannot be read; the files before it are imported.
    """
    book = PaymentBook(journal)
    report = ImportReport()
    files = [f for p in paths for f in (sorted(p.glob("*.xml")) if p.is_dir() else [p])]
    for path in files:
        found = [p for s in read_statement(path.read_bytes(), str(path)) for p in s.payments]
        added, already = book.add(found, str(path))
        report.files += 1
        report.read += len(found)
        report.added += added
        report.already += already
        for p in found:
            report.by_kind[p.kind] = report.by_kind.get(p.kind, 0) + 1
    return report
