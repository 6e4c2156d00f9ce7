"""Open items: what each delivered invoice still owes, and what paid it.

Every invoice and credit note the archive index holds as delivered becomes an item once
(``refresh``). An invoice's open amount is its gross, less the credit notes that correct
it, less what payments were allocated to it; matching (``match_payments``) allocates
automatically, ``allocate`` records a person's decision. Allocations are never rewritten:
an item is paid by the sum of its allocation rows. Money is integer cents here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import sqlalchemy as sa

from pipeline.journal import Journal
from pipeline.money import from_cents
from pipeline.receivables.aging import open_amounts
from pipeline.receivables.matching import PASSES, match, pair_returns
from pipeline.receivables.payments import PaymentBook, payments

__all__ = ["OpenItems", "MatchReport", "match_payments", "allocate", "item_rows",
           "customer_names"]

_metadata = sa.MetaData()
items = sa.Table(
    "open_items", _metadata,
    sa.Column("invoice_number", sa.String, primary_key=True),
    sa.Column("customer_id", sa.String, nullable=False, index=True),
    sa.Column("invoice_type", sa.String, nullable=False),
    sa.Column("issue_date", sa.Date, nullable=False),
    sa.Column("due_date", sa.Date, nullable=False),
    sa.Column("cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("credited_invoice_number", sa.String),
)
return_pairs = sa.Table(
    "return_pairs", _metadata,
    sa.Column("return_key", sa.String, primary_key=True),
    sa.Column("credit_key", sa.String, nullable=False, unique=True),
)
allocations = sa.Table(
    "allocations", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("payment_key", sa.String, nullable=False, index=True),
    sa.Column("invoice_number", sa.String, nullable=False, index=True),
    sa.Column("cents", sa.BigInteger, nullable=False),
    sa.Column("pass", sa.String, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("decided_by", sa.String, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


def item_rows(invoices: pl.DataFrame) -> pl.DataFrame:
    """Invoices and credit notes as items, their gross in signed cents.

    The extract gives a credit note's total as the positive amount it credits (as EN 16931
    does); as an item it takes that amount off what the customer owes, so it is negative.
    """
    cents = (pl.col("total_gross") * 100).cast(pl.Int64)
    return invoices.select(
        "invoice_number", "customer_id", "invoice_type", "issue_date", "due_date",
        pl.when(pl.col("invoice_type") == "credit_note").then(-cents).otherwise(cents)
        .alias("cents"), "currency", "credited_invoice_number")


def _read(query: sa.Select[Any], conn: sa.Connection, **types: pl.DataType) -> pl.DataFrame:
    """A query's rows, typed even when there are none (an empty result has no types)."""
    frame = pl.read_database(query, conn, schema_overrides=types)
    return frame if frame.height else pl.DataFrame(schema={
        c: types.get(c, frame.schema[c]) for c in frame.columns})


class OpenItems:
    """The open-items and allocations tables, in the ledger database."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.engine = journal.engine
        PaymentBook(journal)  # the payments table is joined here
        _metadata.create_all(self.engine)

    def refresh(self, index: pl.DataFrame) -> int:
        """Add the delivered invoices and credit notes not yet items; returns how many."""
        delivered = item_rows(index.unique("invoice_number"))
        with self.engine.begin() as conn:
            known = {n for (n,) in conn.execute(sa.select(items.c.invoice_number))}
            new = delivered.filter(~pl.col("invoice_number").is_in(sorted(known))).to_dicts()
            if new:
                conn.execute(items.insert(), new)
        return len(new)

    def open(self) -> pl.DataFrame:
        """Invoices with something left to pay: ``invoice_number``, ``customer_id``,
        ``open`` (gross, less credit notes, less allocations), ``due_date``."""
        with self.engine.connect() as conn:
            all_items = _read(sa.select(items), conn, invoice_number=pl.String(),
                              customer_id=pl.String(), invoice_type=pl.String(),
                              due_date=pl.Date(), cents=pl.Int64(),
                              credited_invoice_number=pl.String())
            paid = _read(sa.select(
                allocations.c.invoice_number, sa.func.sum(allocations.c.cents).label("cents"))
                .group_by(allocations.c.invoice_number), conn, invoice_number=pl.String(),
                cents=pl.Int64())
        return open_amounts(all_items, paid)

    def items(self) -> pl.DataFrame:
        """Every item, as ``item_rows`` makes them (credit notes negative)."""
        with self.engine.connect() as conn:
            return _read(sa.select(items), conn, invoice_number=pl.String(),
                         customer_id=pl.String(), invoice_type=pl.String(),
                         issue_date=pl.Date(), due_date=pl.Date(), cents=pl.Int64(),
                         currency=pl.String(), credited_invoice_number=pl.String())

    def allocations(self) -> pl.DataFrame:
        """Every allocation with the value date of its payment: ``payment_key``,
        ``invoice_number``, ``cents``, ``value_date`` (what aging as of a date needs)."""
        with self.engine.connect() as conn:
            return _read(sa.select(allocations.c.payment_key, allocations.c.invoice_number,
                                   allocations.c.cents, payments.c.value_date)
                         .join_from(allocations, payments,
                                    payments.c.key == allocations.c.payment_key),
                         conn, payment_key=pl.String(), invoice_number=pl.String(),
                         cents=pl.Int64(), value_date=pl.Date())

    def unplaced_payments(self) -> pl.DataFrame:
        """Credits with money not yet allocated, and returns not yet applied, the rest as
        ``cents`` (negative for a return)."""
        with self.engine.connect() as conn:
            pays = _read(sa.select(payments), conn,
                         key=pl.String(), cents=pl.Int64(), value_date=pl.Date(),
                         debtor_iban=pl.String(), creditor_reference=pl.String(),
                         remittance=pl.String(), end_to_end_id=pl.String())
            used = _read(sa.select(
                allocations.c.payment_key.label("key"),
                sa.func.sum(allocations.c.cents).label("used")).group_by(
                allocations.c.payment_key), conn, key=pl.String(), used=pl.Int64())
        return (pays.join(used, on="key", how="left")
                .with_columns(cents=pl.col("cents") - pl.col("used").fill_null(0))
                .filter(pl.col("cents") != 0).drop("used"))

    def return_pairs(self) -> pl.DataFrame:
        """Which credit each return took back (``return_key``, ``credit_key``). A pair, once
        made, is kept (``return_pairs`` table): a credit imported late never moves a return
        that already reopened invoices; new returns pair among the credits still free."""
        with self.engine.connect() as conn:
            kept = _read(sa.select(return_pairs), conn, return_key=pl.String(),
                         credit_key=pl.String())
            every = _read(sa.select(payments.c.key, payments.c.cents, payments.c.value_date,
                                    payments.c.end_to_end_id, payments.c.currency,
                                    payments.c.debtor_iban), conn, key=pl.String(),
                          cents=pl.Int64(), value_date=pl.Date(), end_to_end_id=pl.String(),
                          currency=pl.String(), debtor_iban=pl.String())
        free = every.filter(~pl.col("key").is_in(sorted(set(kept["return_key"])
                                                        | set(kept["credit_key"]))))
        new = pair_returns(free.filter(pl.col("cents") > 0), free.filter(pl.col("cents") < 0))
        if new.height:
            with self.engine.begin() as conn:
                for row in new.iter_rows(named=True):
                    self.journal.insert_if_absent(conn, return_pairs, **row)
                kept = _read(sa.select(return_pairs), conn, return_key=pl.String(),
                             credit_key=pl.String())
        return kept

    def reverse_returned(self, unplaced: pl.DataFrame, at: datetime) -> int:
        """A return of a credit already allocated takes the money back from the invoices it
        paid: allocation rows of the return's key, negative, reopen them, never more than
        the credit gave each invoice nor than the return's own amount. Returns how many
        returns were applied."""
        returns = unplaced.filter(pl.col("cents") < 0)
        if returns.is_empty():
            return 0
        with self.engine.connect() as conn:
            paid = _read(sa.select(allocations.c.payment_key, allocations.c.invoice_number,
                                   allocations.c.cents), conn, payment_key=pl.String(),
                         invoice_number=pl.String(), cents=pl.Int64())
        given = paid.group_by("payment_key", "invoice_number").agg(pl.col("cents").sum())
        back = (returns.select(pl.col("key").alias("return_key"), left=-pl.col("cents"))
                .join(self.return_pairs(), on="return_key")
                .join(given, left_on="credit_key", right_on="payment_key")
                .join(given.rename({"cents": "taken"}),  # what this return took already
                      left_on=["return_key", "invoice_number"],
                      right_on=["payment_key", "invoice_number"], how="left")
                .with_columns(cents=pl.col("cents") + pl.col("taken").fill_null(0))
                .filter(pl.col("cents") > 0)
                .sort("return_key", "invoice_number")
                .with_columns(before=pl.col("cents").cum_sum().over("return_key")
                              - pl.col("cents"))
                .with_columns(cents=pl.min_horizontal(
                    pl.col("cents"), (pl.col("left") - pl.col("before")).clip(0)))
                .filter(pl.col("cents") > 0))
        self.record([{"payment_key": r["return_key"], "invoice_number": r["invoice_number"],
                      "cents": -r["cents"], "pass": "returned", "confidence": 1.0,
                      "decided_by": "matching", "at": at} for r in back.iter_rows(named=True)])
        return back["return_key"].n_unique()

    def known_ibans(self) -> pl.DataFrame:
        """The payers seen paying a customer: ``iban``, ``customer_id``."""
        with self.engine.connect() as conn:
            return _read(sa.select(
                payments.c.debtor_iban.label("iban"), items.c.customer_id).distinct()
                .select_from(allocations.join(payments, payments.c.key
                                              == allocations.c.payment_key)
                             .join(items, items.c.invoice_number
                                   == allocations.c.invoice_number))
                .where(payments.c.debtor_iban.is_not(None)), conn, iban=pl.String(),
                customer_id=pl.String())

    def record(self, rows: Sequence[dict[str, object]]) -> None:
        """Append allocation rows."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(allocations.insert(), list(rows))


@dataclass(frozen=True)
class MatchReport:
    """What one matching run placed."""

    payments: int
    by_pass: dict[str, int]
    unallocated: pl.DataFrame


def customer_names(customers: pl.DataFrame) -> pl.DataFrame:
    """``customer_id``, ``name`` of an extract's customers table: how matching knows a
    payer by the name on the statement when its IBAN is new."""
    return customers.select("customer_id", pl.col("legal_name").alias("name"))


def match_payments(journal: Journal, oldest_first: bool = False,
                   customer_names: pl.DataFrame | None = None) -> MatchReport:
    """Match the payments not yet placed to the open items, and record the allocations.

    Args:
        journal: the ledger.
        oldest_first: allow matching's last pass.
        customer_names: ``customer_id``, ``name``: a payer without a known IBAN is known
            by its name (the statement's debtor name, kept with each payment).
    """
    book = OpenItems(journal)
    now = datetime.now(UTC)
    book.reverse_returned(book.unplaced_payments(), now)  # reopens what they had paid
    pairs = book.return_pairs()  # a returned credit and its return pay nothing more
    paired = sorted(set(pairs["return_key"]) | set(pairs["credit_key"]))
    unplaced = book.unplaced_payments()  # with debtor_name
    rests = unplaced.filter(pl.col("key").is_in(paired)).join(
        pl.concat([pairs.select("return_key", key="return_key"),
                   pairs.select("return_key", key="credit_key")]), on="key")
    returned = (rests.filter(pl.col("cents").sum().over("return_key") != 0)  # not settled
                .select(pl.col("key").alias("payment_key"), "cents",
                        why=pl.lit("returned by the payer's bank")))
    pays = unplaced.filter(~pl.col("key").is_in(paired))
    issued = book.items()
    open_ = book.open().join(issued.select("invoice_number", "currency"), on="invoice_number")
    known = book.known_ibans()
    results = [  # money pays what is owed in its own currency only
        match(pays.filter(pl.col("currency") == currency),
              open_.filter(pl.col("currency") == currency).drop("currency"), known,
              oldest_first, customer_names=customer_names,
              issued=issued.filter(pl.col("currency") == currency))
        for currency in sorted(set(pays["currency"].to_list()))]
    placed = [r.allocations for r in results if r.allocations.height]
    book.record([{"payment_key": r["payment_key"], "invoice_number": r["invoice_number"],
                  "cents": r["cents"], "pass": r["pass"],
                  "confidence": r["confidence"], "decided_by": "matching", "at": now}
                 for frame in placed for r in frame.iter_rows(named=True)])
    counts = {p: sum(r.counts()[p] for r in results) for p in PASSES}
    unallocated = pl.concat([returned, *(r.unallocated for r in results)])
    return MatchReport(unplaced.height, counts, unallocated)


def allocate(journal: Journal, payment_key: str, numbers: Sequence[str],
             decided_by: str) -> list[tuple[str, Decimal]]:
    """A person's decision: the payment's unplaced money to these invoices, in this order;
    for a return, the money it took back from these invoices (which reopens them).

    Raises:
        ValueError: an unknown payment, nothing left on it, an invoice named twice, one with
            nothing open (or, for a return, nothing paid), or in another currency.
    """
    if len(set(numbers)) != len(numbers):
        raise ValueError("an invoice is named twice")
    book = OpenItems(journal)
    pays = book.unplaced_payments().filter(pl.col("key") == payment_key)
    if pays.is_empty():
        raise ValueError(f"payment {payment_key}: unknown, or wholly allocated already")
    left, currency = int(pays["cents"][0]), str(pays["currency"][0])
    items_ = book.items()
    currencies = dict(items_.select("invoice_number", "currency").iter_rows())
    pairs = book.return_pairs()
    if payment_key in set(pairs["credit_key"]):
        raise ValueError(f"payment {payment_key} was returned by the payer's bank: its money "
                         "is gone")
    given = book.allocations()
    if left > 0:
        room = dict(book.open().select("invoice_number", "cents").iter_rows())
        what = "not an open item"
    else:  # a return: what the credit it took back paid (any paid invoice, if unknown)
        credit = pairs.filter(pl.col("return_key") == payment_key)["credit_key"].to_list()
        if credit:
            given = given.filter(pl.col("payment_key").is_in(credit))
        room = dict(given.group_by("invoice_number").agg(
            pl.col("cents").sum()).filter(pl.col("cents") > 0).iter_rows())
        what = ("not paid by the credit this return took back" if credit
                else "paid nothing a return could take back")
    granted: list[tuple[str, int]] = []
    for number in numbers:
        if number not in room:
            raise ValueError(f"invoice {number}: {what}")
        if currencies.get(number) != currency:
            raise ValueError(f"invoice {number} is in {currencies.get(number)}, the payment "
                             f"in {currency}")
        cents = min(abs(left), int(room[number]))
        if cents > 0:
            granted.append((number, cents if left > 0 else -cents))
            left -= cents if left > 0 else -cents
    now = datetime.now(UTC)
    book.record([{"payment_key": payment_key, "invoice_number": n, "cents": c,
                  "pass": "manual", "confidence": 1.0, "decided_by": decided_by, "at": now}
                 for n, c in granted])
    return [(n, from_cents(c)) for n, c in granted]
