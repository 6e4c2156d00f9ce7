"""Customer statements (relevés de compte): a calendar month of one customer's account.

Pure functions over the open-items rows and the allocations with their value dates:

- Opening balance: what the customer owed before the month: invoices issued before it,
  less credit notes issued before it, less payments allocated with a value date before it.
- Movements of the month in date order (on one day: invoices, then credit notes, then
  payments): an invoice is a debit, a credit note a credit, a payment a credit (one row
  per payment key, with the invoices it paid). A return that took a payment back (a
  negative allocation) is a debit. Each row carries the running balance.
- Closing balance: opening + debits - credits.
- Aged summary of the invoices open at the month's end, from ``aging.open_as_of`` and
  ``aging.aged_balance`` (a credit note that names no invoice, or money beyond what an
  invoice owed, is in the balance but not in the aged summary).

Money that matching could not place is not the customer's until a person allocates it, so
it is not on the statement.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import polars as pl

from pipeline.keys import short_component
from pipeline.money import from_cents
from pipeline.receivables.aging import BUCKETS, aged_balance, open_as_of

__all__ = ["MovementKind", "StatementLine", "CustomerStatement", "statement_for",
           "statements_for", "statement_id", "month_end"]

MovementKind = Literal["invoice", "credit_note", "payment", "payment_return"]
_ORDER = {"invoice": 0, "credit_note": 1, "payment": 2, "payment_return": 3}


def month_end(month_start: date) -> date:
    """The last day of the month that starts on ``month_start``."""
    return month_start.replace(day=calendar.monthrange(month_start.year, month_start.month)[1])


def statement_id(customer_id: str, month_start: date, currency: str) -> str:
    """The deterministic id of a statement: ``S-{customer}-{YYYY-MM}-{currency}``, the
    customer id escaped to file-name-safe characters."""
    return (f"S-{short_component(customer_id)}-{month_start:%Y-%m}-"
            f"{short_component(currency)}")


@dataclass(frozen=True)
class StatementLine:
    """One movement of the month."""

    date: dt.date
    kind: MovementKind
    reference: str
    """The invoice or credit-note number, or the payment key."""
    invoices: tuple[str, ...]
    """A payment's invoices; a credit note's corrected invoice (empty when it names none)."""
    due_date: dt.date | None
    """An invoice's due date."""
    debit: Decimal
    credit: Decimal
    balance: Decimal
    """The balance after this movement."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: dates in ISO format, amounts as strings."""
        return {"date": self.date.isoformat(), "kind": self.kind, "reference": self.reference,
                "invoices": list(self.invoices),
                "due_date": self.due_date.isoformat() if self.due_date else None,
                "debit": str(self.debit), "credit": str(self.credit),
                "balance": str(self.balance)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatementLine:
        """The line ``to_dict`` gave."""
        return cls(date=dt.date.fromisoformat(data["date"]), kind=data["kind"],
                   reference=data["reference"], invoices=tuple(data["invoices"]),
                   due_date=dt.date.fromisoformat(data["due_date"]) if data["due_date"] else None,
                   debit=Decimal(data["debit"]), credit=Decimal(data["credit"]),
                   balance=Decimal(data["balance"]))


@dataclass(frozen=True)
class CustomerStatement:
    """A customer's account over one calendar month, in one currency."""

    statement_id: str
    customer_id: str
    currency: str
    period_start: date
    period_end: date
    opening_balance: Decimal
    lines: tuple[StatementLine, ...]
    closing_balance: Decimal
    aged: tuple[tuple[str, Decimal], ...]
    """``(bucket, amount)`` for each of ``aging.BUCKETS``, open at ``period_end``."""

    @property
    def total_debit(self) -> Decimal:
        """Invoices (and returned payments) of the month."""
        return sum((line.debit for line in self.lines), Decimal("0.00"))

    @property
    def total_credit(self) -> Decimal:
        """Credit notes and payments of the month."""
        return sum((line.credit for line in self.lines), Decimal("0.00"))

    @property
    def aged_total(self) -> Decimal:
        """Every open invoice at the month's end."""
        return sum((amount for _, amount in self.aged), Decimal("0.00"))

    @property
    def overdue(self) -> Decimal:
        """What was past due at the month's end."""
        return sum((amount for bucket, amount in self.aged if bucket != BUCKETS[0]),
                   Decimal("0.00"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``from_dict`` gives the same statement back."""
        return {"statement_id": self.statement_id, "customer_id": self.customer_id,
                "currency": self.currency, "period_start": self.period_start.isoformat(),
                "period_end": self.period_end.isoformat(),
                "opening_balance": str(self.opening_balance),
                "lines": [line.to_dict() for line in self.lines],
                "closing_balance": str(self.closing_balance),
                "aged": [[bucket, str(amount)] for bucket, amount in self.aged]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CustomerStatement:
        """The statement ``to_dict`` gave."""
        return cls(statement_id=data["statement_id"], customer_id=data["customer_id"],
                   currency=data["currency"],
                   period_start=date.fromisoformat(data["period_start"]),
                   period_end=date.fromisoformat(data["period_end"]),
                   opening_balance=Decimal(data["opening_balance"]),
                   lines=tuple(StatementLine.from_dict(line) for line in data["lines"]),
                   closing_balance=Decimal(data["closing_balance"]),
                   aged=tuple((str(bucket), Decimal(amount)) for bucket, amount in data["aged"]))


def _movements(items: pl.DataFrame, paid: pl.DataFrame, start: date, end: date
               ) -> list[tuple[date, MovementKind, str, tuple[str, ...], date | None, int]]:
    """The month's movements as ``(date, kind, reference, invoices, due date, signed
    cents)``, sorted; positive cents are debits."""
    rows: list[tuple[date, MovementKind, str, tuple[str, ...], date | None, int]] = []
    for item in items.filter(pl.col("issue_date").is_between(start, end)).iter_rows(named=True):
        if item["invoice_type"] == "credit_note":
            corrected = item["credited_invoice_number"]
            rows.append((item["issue_date"], "credit_note", item["invoice_number"],
                         (corrected,) if corrected else (), None, int(item["cents"])))
        else:
            rows.append((item["issue_date"], "invoice", item["invoice_number"], (),
                         item["due_date"], int(item["cents"])))
    month = paid.filter(pl.col("value_date").is_between(start, end))
    if month.height:
        by_key = month.group_by("payment_key").agg(
            pl.col("value_date").min(), pl.col("cents").sum(),
            pl.col("invoice_number").unique().sort())
        for pay in by_key.iter_rows(named=True):
            if pay["cents"]:
                kind: MovementKind = "payment" if pay["cents"] > 0 else "payment_return"
                rows.append((pay["value_date"], kind, pay["payment_key"],
                             tuple(pay["invoice_number"]), None, -int(pay["cents"])))
    return sorted(rows, key=lambda r: (r[0], _ORDER[r[1]], r[2]))


def statement_for(customer_id: str, items: pl.DataFrame, payments: pl.DataFrame,
                  month_start: date, currency: str | None = None) -> CustomerStatement | None:
    """The customer's statement of the month starting on ``month_start``; None when the
    customer owed nothing before it and nothing moved in it.

    Args:
        customer_id: the customer.
        items: as ``open_items.item_rows`` makes them (``invoice_number``, ``customer_id``,
            ``invoice_type``, ``issue_date``, ``due_date``, ``cents`` with credit notes
            negative, ``currency``, ``credited_invoice_number``); any customers.
        payments: allocations with their payment's value date (``payment_key``,
            ``invoice_number``, ``cents``, ``value_date``); any customers.
        month_start: the first day of the month.
        currency: the statement's currency; needed only when the customer has items in
            more than one.

    Raises:
        ValueError: ``month_start`` is not the first of a month, or the customer has items
            in several currencies and none was chosen.
    """
    if month_start.day != 1:
        raise ValueError(f"a statement covers a calendar month: {month_start} is not the "
                         "first day of one")
    end = month_end(month_start)
    mine = items.filter(pl.col("customer_id") == customer_id)
    currencies = sorted(set(mine["currency"].to_list()))
    if currency is None:
        if len(currencies) > 1:
            raise ValueError(f"customer {customer_id} has items in {', '.join(currencies)}: "
                             "make one statement per currency (currency=...)")
        if not currencies:
            return None
        currency = currencies[0]
    mine = mine.filter(pl.col("currency") == currency)
    paid = payments.filter(pl.col("invoice_number").is_in(mine["invoice_number"].implode()))

    before_items = int(mine.filter(pl.col("issue_date") < month_start)["cents"].sum() or 0)
    before_paid = int(paid.filter(pl.col("value_date") < month_start)["cents"].sum() or 0)
    balance = before_items - before_paid
    opening = from_cents(balance)
    movements = _movements(mine, paid, month_start, end)
    if not balance and not movements:
        return None

    lines = []
    for day, kind, reference, invoices, due, cents in movements:
        balance += cents
        lines.append(StatementLine(
            date=day, kind=kind, reference=reference, invoices=invoices, due_date=due,
            debit=from_cents(max(cents, 0)), credit=from_cents(max(-cents, 0)),
            balance=from_cents(balance)))

    aged_row = aged_balance(open_as_of(mine, paid, end), end)
    aged = tuple((bucket, from_cents(int(aged_row[bucket].sum() or 0)))
                 for bucket in BUCKETS)
    return CustomerStatement(
        statement_id=statement_id(customer_id, month_start, currency), customer_id=customer_id,
        currency=currency, period_start=month_start, period_end=end, opening_balance=opening,
        lines=tuple(lines), closing_balance=from_cents(balance), aged=aged)


def statements_for(items: pl.DataFrame, payments: pl.DataFrame,
                   month_start: date) -> list[CustomerStatement]:
    """Every customer's statement of the month (one per currency), by customer id.

    Args:
        items: as for ``statement_for``.
        payments: as for ``statement_for``.
        month_start: the first day of the month.
    """
    paid = payments.join(items.select("invoice_number", "customer_id"), on="invoice_number")
    paid_by = paid.partition_by("customer_id", as_dict=True, include_key=True)
    empty = paid.clear()
    found = []
    # one customer's rows at a time: filtering the whole ledger per customer is quadratic
    for (customer,), mine in sorted(items.partition_by("customer_id", as_dict=True).items()):
        theirs = paid_by.get((customer,), empty).drop("customer_id")
        for currency in sorted(set(mine["currency"].to_list())):
            found.append(statement_for(customer, mine, theirs, month_start, currency))
    return [s for s in found if s is not None]
