"""Aging and the receivables KPIs, as of a date, from items and allocations alone.

Everything is recomputed as of the date asked: an invoice counts once issued, a payment
once its value date has passed, so a report for last month's end says what was known
then. Money is integer cents.

- Aged balance: each open invoice by days past due (not due, 1-30, 31-60, 61-90, over 90).
- DSO, countback method: the balance is matched against the credit sales of the latest
  months, going back until it is used up; DSO is the days of the months it consumed
  whole, plus the share of the last month it reached.
- CEI (collection effectiveness index) over a period: what was collected of what could
  be, in percent: (opening + sales - closing) / (opening + sales - closing current) x 100.
- Average days late: of the money collected in the period, weighted by amount.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import polars as pl

__all__ = ["BUCKETS", "open_amounts", "paid_in_full", "credit_balances", "open_as_of",
           "aged_balance", "dso_countback", "cei", "average_days_late", "Kpis", "kpis"]

BUCKETS = ("not due", "1-30", "31-60", "61-90", "over 90")


def _balances(items: pl.DataFrame, allocations: pl.DataFrame) -> pl.DataFrame:
    """Each invoice with ``cents`` still owed (gross, less the credit notes that correct
    it, less what was allocated to it) and ``paid`` (what was allocated)."""
    credits = items.filter(pl.col("invoice_type") == "credit_note").group_by(
        "credited_invoice_number").agg(pl.col("cents").sum().alias("credited"))
    paid = allocations.group_by("invoice_number").agg(pl.col("cents").sum().alias("paid"))
    return (items.filter(pl.col("invoice_type") == "invoice")
            .join(credits, left_on="invoice_number", right_on="credited_invoice_number",
                  how="left")
            .join(paid, on="invoice_number", how="left")
            .with_columns(paid=pl.col("paid").fill_null(0))
            .with_columns(cents=pl.col("cents") + pl.col("credited").fill_null(0)
                          - pl.col("paid")))


def open_amounts(items: pl.DataFrame, allocations: pl.DataFrame) -> pl.DataFrame:
    """Invoices with money still owed: gross, less the credit notes that correct them, less
    what was allocated to them (``invoice_number``, ``customer_id``, ``due_date``,
    ``cents``)."""
    return (_balances(items, allocations).filter(pl.col("cents") > 0)
            .select("invoice_number", "customer_id", "due_date", "cents"))


def credit_balances(items: pl.DataFrame, allocations: pl.DataFrame) -> pl.DataFrame:
    """What each customer has in its favour, per currency (``customer_id``, ``currency``,
    ``cents`` > 0): invoices credited beyond what they still owed, and credit notes that
    correct no invoice."""
    over = _balances(items, allocations).filter(pl.col("cents") < 0).select(
        "customer_id", "currency", "cents")
    loose = items.filter((pl.col("invoice_type") == "credit_note")
                         & pl.col("credited_invoice_number").is_null()).select(
        "customer_id", "currency", "cents")
    return (pl.concat([over, loose]).group_by("customer_id", "currency")
            .agg((-pl.col("cents").sum()).alias("cents")).filter(pl.col("cents") > 0))


def paid_in_full(items: pl.DataFrame, allocations: pl.DataFrame) -> pl.DataFrame:
    """Invoices that payments (not credit notes alone) have settled: ``invoice_number``,
    ``customer_id``, ``cents`` (what was received for them)."""
    return (_balances(items, allocations).filter((pl.col("cents") <= 0) & (pl.col("paid") > 0))
            .select("invoice_number", "customer_id", pl.col("paid").alias("cents")))


def open_as_of(items: pl.DataFrame, allocations: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """Invoices issued by ``as_of`` with money still owed then: ``invoice_number``,
    ``customer_id``, ``due_date``, ``cents``.

    Args:
        items: ``invoice_number``, ``customer_id``, ``invoice_type``, ``issue_date``,
            ``due_date``, ``cents`` (credit notes negative), ``credited_invoice_number``.
        allocations: ``invoice_number``, ``cents``, ``value_date`` (of the payment).
    """
    return open_amounts(items.filter(pl.col("issue_date") <= as_of),
                        allocations.filter(pl.col("value_date") <= as_of))


def aged_balance(open_items: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """Per customer, the open cents in each bucket and in all (``total``)."""
    late = (pl.lit(as_of) - pl.col("due_date")).dt.total_days()
    bucket = (pl.when(late <= 0).then(pl.lit(BUCKETS[0]))
              .when(late <= 30).then(pl.lit(BUCKETS[1]))
              .when(late <= 60).then(pl.lit(BUCKETS[2]))
              .when(late <= 90).then(pl.lit(BUCKETS[3]))
              .otherwise(pl.lit(BUCKETS[4])))
    wide = (open_items.with_columns(bucket=bucket)
            .pivot("bucket", index="customer_id", values="cents", aggregate_function="sum")
            if open_items.height else pl.DataFrame(schema={"customer_id": pl.String()}))
    for name in BUCKETS:
        if name not in wide.columns:
            wide = wide.with_columns(pl.lit(0, dtype=pl.Int64).alias(name))
    return (wide.select("customer_id", *(pl.col(b).fill_null(0).cast(pl.Int64) for b in BUCKETS))
            .with_columns(total=pl.sum_horizontal(*BUCKETS)).sort("total", descending=True))


def _month_start(day: date, back: int) -> date:
    month = day.month - 1 - back
    return date(day.year + month // 12, month % 12 + 1, 1)


def dso_countback(balance: int, items: pl.DataFrame, as_of: date, months: int = 24) -> Decimal:
    """Days sales outstanding by the countback method, to the tenth of a day.

    The month of ``as_of`` counts up to that day; earlier months whole.
    """
    sales = items.filter((pl.col("invoice_type") == "invoice") | (pl.col("invoice_type")
                                                                   == "credit_note"))
    left, days = Decimal(balance), Decimal(0)
    for back in range(months):
        start = _month_start(as_of, back)
        end = min(as_of, date(start.year, start.month,
                              calendar.monthrange(start.year, start.month)[1]))
        length = (end - start).days + 1
        month_sales = Decimal(int(sales.filter(pl.col("issue_date").is_between(start, end))[
            "cents"].sum() or 0))
        if left <= 0:
            break
        if month_sales <= 0:
            days += length
            continue
        if left >= month_sales:
            days += length
            left -= month_sales
        else:
            days += length * left / month_sales
            left = Decimal(0)
    return days.quantize(Decimal("0.1"), ROUND_HALF_UP)


def cei(opening: int, sales: int, closing: int, closing_current: int) -> Decimal:
    """Collection effectiveness index, percent to the tenth."""
    collectible = opening + sales - closing_current
    if collectible <= 0:
        return Decimal(100)
    return (Decimal(opening + sales - closing) * 100 / collectible).quantize(
        Decimal("0.1"), ROUND_HALF_UP)


def average_days_late(items: pl.DataFrame, allocations: pl.DataFrame, start: date,
                      end: date) -> Decimal:
    """Days after the due date the money collected in [start, end] came, amount-weighted
    (money paid early counts 0 days)."""
    paid = (allocations.filter(pl.col("value_date").is_between(start, end))
            .join(items.select("invoice_number", "due_date"), on="invoice_number")
            .with_columns(late=(pl.col("value_date") - pl.col("due_date")).dt.total_days()
                          .clip(0)))
    total = int(paid["cents"].sum() or 0)
    if not total:
        return Decimal(0)
    weighted = int((paid["cents"] * paid["late"]).sum())
    return (Decimal(weighted) / total).quantize(Decimal("0.1"), ROUND_HALF_UP)


@dataclass(frozen=True)
class Kpis:
    """The receivables figures of one date (money in cents)."""

    as_of: date
    balance: int
    overdue: int
    dso: Decimal
    cei: Decimal
    average_days_late: Decimal
    disputed: int


def kpis(items: pl.DataFrame, allocations: pl.DataFrame, as_of: date,
         disputed: frozenset[str] = frozenset(), period_days: int = 30) -> Kpis:
    """The figures as of ``as_of``; CEI and days late over the ``period_days`` before it."""
    start = as_of - timedelta(days=period_days - 1)
    now = open_as_of(items, allocations, as_of)
    before = open_as_of(items, allocations, start - timedelta(days=1))
    sold = int(items.filter(pl.col("issue_date").is_between(start, as_of))["cents"].sum() or 0)
    balance = int(now["cents"].sum() or 0)
    current = int(now.filter(pl.col("due_date") >= as_of)["cents"].sum() or 0)
    return Kpis(
        as_of=as_of, balance=balance, overdue=balance - current,
        dso=dso_countback(balance, items, as_of),
        cei=cei(int(before["cents"].sum() or 0), sold, balance, current),
        average_days_late=average_days_late(items, allocations, start, as_of),
        disputed=int(now.filter(pl.col("invoice_number").is_in(sorted(disputed)))[
            "cents"].sum() or 0))
