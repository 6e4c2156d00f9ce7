"""The aging report on the hand-computed fixture of test_receivables_aging: its figures are
aging.py's, its Parquet adds up, its HTML is one safe, self-contained file."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from pipeline.receivables.aging import BUCKETS, aged_balance, kpis, open_as_of
from pipeline.receivables.aging_report import (
    MONEY_COLUMNS,
    build_aging_report,
    write_aging_report,
)
from tests.test_receivables_aging import AS_OF, ITEMS, PAID

HOSTILE = "<script>alert(1)</script> & Co $x$"
NAMES = {"C1": HOSTILE, "C2": "Boulangerie Martin SARL"}  # C3 has no name


@pytest.fixture(scope="module")
def report():
    return build_aging_report(ITEMS, PAID, AS_OF, NAMES, {"I5"})


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    return write_aging_report(report, tmp_path_factory.mktemp("aging"))


def test_figures_are_aging_py_s(report) -> None:
    assert report.kpis == kpis(ITEMS, PAID, AS_OF, disputed=frozenset({"I5"}))
    aged = aged_balance(open_as_of(ITEMS, PAID, AS_OF), AS_OF)
    assert report.customers.select("customer_id", *BUCKETS, "total").sort(
        "customer_id").equals(aged.sort("customer_id"))
    # C1 is the only one late (400 + 400); I5 of C3 is in dispute; most past due first
    rows = report.customers.select("customer_id", "name", "past_due", "disputed").rows()
    assert rows == [("C1", HOSTILE, 80000, 0), ("C2", "Boulangerie Martin SARL", 0, 0),
                    ("C3", None, 0, 40000)]
    assert report.totals()["past_due"] == report.kpis.overdue == 80000
    assert report.top_overdue["customer_id"].to_list() == ["C1"]


def test_dso_trend_is_kpis_dso_at_each_month_end(report) -> None:
    days = report.dso_trend["day"].to_list()
    assert len(days) == 12
    assert (days[0], days[-2], days[-1]) == (date(2025, 4, 30), date(2026, 2, 28), AS_OF)
    assert report.dso_trend["dso"][-1] == report.kpis.dso == Decimal("53.4")
    assert report.dso_trend["dso"][-2] == kpis(ITEMS, PAID, date(2026, 2, 28)).dso


def test_names_from_the_customers_table(report) -> None:
    customers = pl.DataFrame({"customer_id": ["C1", "C2"], "legal_name": [HOSTILE, "B"]})
    by_frame = build_aging_report(ITEMS, PAID, AS_OF, customers, {"I5"})
    assert by_frame.customers["name"].to_list() == [HOSTILE, "B", None]


def test_table_for_the_cli(report) -> None:
    table = report.as_table()
    assert table[0]["customer"] == "C1" and table[0]["past_due"] == "800.00"
    assert table[-1] == {"customer": "total", "name": "", "not due": "1,900.00",
                         "1-30": "400.00", "31-60": "400.00", "61-90": "0.00",
                         "over 90": "0.00", "past_due": "800.00", "total": "2,700.00",
                         "disputed": "400.00"}
    assert report.as_dict()["dso_days"] == "53.4"


def test_parquet_reads_back_in_euros(written) -> None:
    frame = pl.read_parquet(written["parquet"])
    assert frame.columns == ["as_of", "customer_id", "name", *MONEY_COLUMNS]
    assert frame.schema["total"] == pl.Decimal(18, 2)
    assert frame["as_of"].unique().to_list() == [AS_OF]
    assert frame["total"].sum() == Decimal("2700.00")
    assert frame["past_due"].sum() == Decimal("800.00")
    assert frame["disputed"].sum() == Decimal("400.00")


def test_html_has_the_charts_the_kpis_and_escaped_names(written) -> None:
    html = written["html"].read_text()
    assert html.count("<svg") == 3
    assert "<script" not in html
    # nothing to fetch: the only addresses are the SVG and XLink namespace names
    assert set(re.findall(r"https?://[^\"]*", html)) == {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    # as text in the table and in the top overdue chart
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co $x$") == 2
    for shown in ("€2,700.00", "€800.00", "53.4 days", "50 %", "30.0 days", "€400.00"):
        assert shown in html, shown
    assert "unknown customer" in html  # C3


def test_a_report_with_nothing_open_still_renders(tmp_path) -> None:
    nothing = build_aging_report(ITEMS.clear(), PAID.clear(), AS_OF, {}, set())
    assert nothing.customers.height == 0 and nothing.kpis.balance == 0
    paths = write_aging_report(nothing, tmp_path)
    html = paths["html"].read_text()
    assert html.count("<svg") == 3 and "Nothing is past due." in html
    assert pl.read_parquet(paths["parquet"]).height == 0


def test_the_markdown_artifact_shows_names_as_text(report) -> None:
    """The Prefect UI renders the artifact: a name is never a link, emphasis or a cell."""
    markdown = report.as_markdown()
    assert r"\<script\>alert\(1\)\</script\> & Co $x$" in markdown
    assert "<script>" not in markdown


def test_other_currencies_are_left_out_and_counted() -> None:
    """Yen added to euros would make every figure wrong: the report is in euros."""
    items = ITEMS.with_columns(currency=pl.lit("EUR"))
    yen = items.head(1).with_columns(invoice_number=pl.lit("JP1"), currency=pl.lit("JPY"),
                                     cents=pl.lit(100_000_000, dtype=pl.Int64))
    mixed = build_aging_report(pl.concat([items, yen]), PAID, AS_OF, NAMES, set())
    alone = build_aging_report(items, PAID, AS_OF, NAMES, set())
    assert mixed.left_out == 1 and mixed.totals() == alone.totals()
