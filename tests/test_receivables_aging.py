"""Aging, DSO, CEI and days late on a small fixture computed by hand (in the comments)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl

from pipeline.receivables.aging import aged_balance, dso_countback, kpis, open_as_of

AS_OF = date(2026, 3, 31)
ITEMS = pl.DataFrame({
    "invoice_number": ["I1", "I2", "I3", "I4", "CN1", "I5"],
    "customer_id": ["C1", "C1", "C2", "C2", "C1", "C3"],
    "invoice_type": ["invoice"] * 4 + ["credit_note", "invoice"],
    "issue_date": [date(2026, 1, 10), date(2026, 2, 15), date(2026, 3, 5), date(2025, 11, 20),
                   date(2026, 3, 1), date(2026, 3, 20)],
    "due_date": [date(2026, 2, 9), date(2026, 3, 17), date(2026, 4, 4), date(2025, 12, 20),
                 date(2026, 3, 1), date(2026, 4, 19)],
    "cents": [100000, 50000, 200000, 30000, -10000, 40000],
    "credited_invoice_number": [None, None, None, None, "I2", None],
})
PAID = pl.DataFrame({
    "invoice_number": ["I1", "I1", "I4", "I3"],
    "cents": [60000, 40000, 30000, 50000],
    "value_date": [date(2026, 2, 20), date(2026, 4, 5), date(2026, 3, 10), date(2026, 3, 25)],
})


def test_aged_balance_by_hand() -> None:
    # I1 1000 - 600 = 400, 50 days late; I2 500 - 100 (credit note) = 400, 14 days late;
    # I3 2000 - 500 = 1500 and I5 400 not due; I4 paid; the 400 paid on 5 April is later
    aged = aged_balance(open_as_of(ITEMS, PAID, AS_OF), AS_OF)
    rows = {r["customer_id"]: r for r in aged.iter_rows(named=True)}
    assert {k: v for k, v in rows["C1"].items() if v} == {
        "customer_id": "C1", "1-30": 40000, "31-60": 40000, "total": 80000}
    assert (rows["C2"]["not due"], rows["C2"]["total"]) == (150000, 150000)
    assert rows["C3"]["not due"] == 40000
    assert aged["total"].sum() == 270000


def test_dso_cei_days_late_and_disputed_by_hand() -> None:
    # DSO: balance 2700; March sales 2000 + 400 - 100 = 2300 -> 31 days, 400 left;
    # February sales 500 -> 28 x 400/500 = 22.4 days; 53.4
    assert dso_countback(270000, ITEMS, AS_OF) == Decimal("53.4")
    figures = kpis(ITEMS, PAID, AS_OF, disputed=frozenset({"I5"}))
    assert (figures.balance, figures.overdue, figures.disputed) == (270000, 80000, 40000)
    assert figures.dso == Decimal("53.4")
    # CEI over 2-31 March: opening on 1 March 400 + 400 + 300 = 1100; sales 2400;
    # closing 2700, of which current 1900: (1100 + 2400 - 2700) / (1100 + 2400 - 1900) = 50 %
    assert figures.cei == Decimal("50.0")
    # collected in the period: 300 paid 80 days late, 500 paid early: 300 x 80 / 800 = 30
    assert figures.average_days_late == Decimal("30.0")
