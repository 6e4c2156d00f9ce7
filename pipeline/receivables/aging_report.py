"""The aging report a finance manager opens: who owes what, how late, and the KPIs' trend.

``build_aging_report`` is pure (frames in, an ``AgingReport`` out) and takes every figure
from ``aging.py``, so the CLI table, the Parquet file and the HTML agree with the KPIs to
the cent. ``write_aging_report`` publishes ``aging.parquet`` (one row per customer) and
``aging.html``: one self-contained file, its charts inline SVG drawn by matplotlib, with no
script and nothing fetched, so it opens offline and can be mailed as is.
"""

from __future__ import annotations

import calendar
import io
import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

import jinja2
import polars as pl
from babel.dates import format_date
from babel.numbers import format_compact_currency, format_currency, format_decimal
from markupsafe import Markup
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.typing import RcKeyType

from pipeline.codes import LOCALES
from pipeline.money import decimal_series, from_cents
from pipeline.receivables.aging import BUCKETS, Kpis, aged_balance, kpis, open_as_of
from pipeline.render.templates import make_environment, render_template
from pipeline.settings import PROJECT_ROOT
from pipeline.storage.local import write_atomic

__all__ = ["AgingReport", "build_aging_report", "write_aging_report", "PAST_DUE",
           "MONEY_COLUMNS", "TOP_OVERDUE", "TREND_MONTHS", "PERIOD_DAYS"]

CURRENCY = "EUR"
"""The report's currency: the seller's (its labels and charts say euros)."""
PAST_DUE = BUCKETS[1:]
MONEY_COLUMNS = (*BUCKETS, "past_due", "total", "disputed")
TOP_OVERDUE = 10
TREND_MONTHS = 12
PERIOD_DAYS = 30
"""The window of CEI and average days late, ending on the report's date."""

_LANG = "en"
_LOCALE = LOCALES[_LANG]
_COLORS = {"not due": "#5b8fb9", "1-30": "#f0c05a", "31-60": "#e8903e", "61-90": "#d2572f",
           "over 90": "#9e2a2b"}
_CHART_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: sharp at any zoom, searchable, small
    "text.parse_math": False,  # a '$' in a customer name is a dollar, not maths
    "svg.hashsalt": "aging-report",  # the same data gives the same bytes
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

# No date (the same data gives the same bytes) and no RDF block naming web addresses.
_NO_METADATA: dict[str, Any] = {"Date": None, "Creator": None, "Format": None, "Type": None}


@dataclass(frozen=True, eq=False)  # frames do not compare with ==
class AgingReport:
    """What customers owe as of a date, by age, with the receivables KPIs (money in cents)."""

    as_of: date
    customers: pl.DataFrame
    """One row per customer owing money: ``customer_id``, ``name`` (null when not given),
    the cents of each of ``BUCKETS``, ``past_due``, ``total``, ``disputed``; most past due
    first."""
    kpis: Kpis
    dso_trend: pl.DataFrame
    """``day`` and ``dso``: each month end of the last ``TREND_MONTHS`` months, the last
    point being ``as_of`` itself (month to date when it is not a month end)."""
    left_out: int = 0
    """Invoices and credit notes in another currency than ``CURRENCY``, not in the report."""

    @property
    def top_overdue(self) -> pl.DataFrame:
        """The ``TOP_OVERDUE`` customers with the most past-due money (none if nothing is)."""
        return self.customers.filter(pl.col("past_due") > 0).head(TOP_OVERDUE)

    def totals(self) -> dict[str, int]:
        """Cents of each money column over all customers."""
        return {c: int(self.customers[c].sum() or 0) for c in MONEY_COLUMNS}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (money and KPIs as decimal strings), for a Prefect artifact."""
        figures = self.kpis
        return {"as_of": self.as_of.isoformat(), "customers": self.customers.height,
                "total_open": str(from_cents(figures.balance)),
                "past_due": str(from_cents(figures.overdue)),
                "by_bucket": {b: str(from_cents(c)) for b, c in self.totals().items()
                              if b in BUCKETS},
                "dso_days": str(figures.dso), "cei_percent": str(figures.cei),
                "average_days_late": str(figures.average_days_late),
                "disputed": str(from_cents(figures.disputed)),
                "dso_trend": {d.isoformat(): str(v) for d, v in self.dso_trend.iter_rows()}}

    def as_table(self) -> list[dict[str, str]]:
        """The per-customer table as text (amounts ``1,234.56``, EUR), then a ``total`` row:
        what the CLI prints and a Prefect table artifact shows."""
        rows = [{"customer": r["customer_id"], "name": _short(r["name"] or "", 80),
                 **{c: _amount(r[c]) for c in MONEY_COLUMNS}}
                for r in self.customers.iter_rows(named=True)]
        return [*rows, {"customer": "total", "name": "",
                        **{c: _amount(v) for c, v in self.totals().items()}}]

    def as_markdown(self) -> str:
        """The KPIs and the top overdue customers, short (Prefect artifact)."""
        figures = self.kpis
        lines = [f"**Receivables as of {self.as_of.isoformat()}**", "",
                 "| open | past due | DSO (days) | CEI | days late | disputed |",
                 "|---:|---:|---:|---:|---:|---:|",
                 f"| {_amount(figures.balance)} | {_amount(figures.overdue)} | {figures.dso} | "
                 f"{figures.cei} % | {figures.average_days_late} | "
                 f"{_amount(figures.disputed)} |", ""]
        top = self.top_overdue
        if top.height:
            lines += ["| customer | name | past due (EUR) |", "|---|---|---:|"]
            lines += [f"| {_markdown(r['customer_id'])} | "
                      f"{_markdown(_short(r['name'] or '', 60))} | "
                      f"{_amount(r['past_due'])} |" for r in top.iter_rows(named=True)]
        return "\n".join(lines)


def build_aging_report(items: pl.DataFrame, allocations: pl.DataFrame, as_of: date,
                       names: dict[str, str] | pl.DataFrame,
                       disputed: set[str] | frozenset[str]) -> AgingReport:
    """The aging report as of ``as_of``, every figure from ``aging.py``.

    Args:
        items: ``invoice_number``, ``customer_id``, ``invoice_type``, ``issue_date``,
            ``due_date``, ``cents`` (credit notes negative), ``credited_invoice_number``
            (``open_items.item_rows`` gives them).
        allocations: ``invoice_number``, ``cents``, ``value_date`` of the payment.
        as_of: the day the report is of; later invoices and payments do not count.
        names: customer names, as ``{customer_id: name}`` or the extract's customers
            table (``customer_id``, ``legal_name``).
        disputed: numbers of the invoices in dispute.

    The report is in euros: items in another currency (``currency`` column) are left out,
    and counted in ``left_out``; adding yen to euros would make every figure wrong.
    """
    left_out = 0
    if "currency" in items.columns:
        euros = items.filter(pl.col("currency") == CURRENCY)
        left_out = items.height - euros.height
        items = euros
        allocations = allocations.filter(pl.col("invoice_number").is_in(
            items["invoice_number"].implode()))
    open_items = open_as_of(items, allocations, as_of)
    return AgingReport(
        as_of=as_of, left_out=left_out,
        customers=_customer_table(aged_balance(open_items, as_of), open_items,
                                  _names(names), disputed),
        kpis=kpis(items, allocations, as_of, disputed=frozenset(disputed),
                  period_days=PERIOD_DAYS),
        dso_trend=_dso_trend(items, allocations, as_of))


def _names(names: dict[str, str] | pl.DataFrame) -> pl.DataFrame:
    """``customer_id``, ``name``: one row per customer."""
    if isinstance(names, dict):
        return pl.DataFrame({"customer_id": list(names), "name": list(names.values())},
                            schema={"customer_id": pl.String(), "name": pl.String()})
    return names.select("customer_id", pl.col("legal_name").alias("name")).unique(
        "customer_id", keep="first", maintain_order=True)


def _customer_table(aged: pl.DataFrame, open_items: pl.DataFrame, names: pl.DataFrame,
                    disputed: set[str] | frozenset[str]) -> pl.DataFrame:
    """The aged balance with names, past due and disputed cents, most past due first."""
    in_dispute = (open_items.filter(pl.col("invoice_number").is_in(sorted(disputed)))
                  .group_by("customer_id").agg(disputed=pl.col("cents").sum()))
    return (aged.join(names, on="customer_id", how="left")
            .join(in_dispute, on="customer_id", how="left")
            .with_columns(past_due=pl.sum_horizontal(*PAST_DUE).cast(pl.Int64),
                          disputed=pl.col("disputed").fill_null(0).cast(pl.Int64))
            .select("customer_id", "name", *MONEY_COLUMNS)
            .sort("past_due", "total", "customer_id", descending=[True, True, False]))


def _month_ends(as_of: date, months: int) -> list[date]:
    """The last days of the ``months - 1`` months before ``as_of``'s, then ``as_of``."""
    ends = []
    for back in range(months - 1, 0, -1):
        index = as_of.month - 1 - back
        year, month = as_of.year + index // 12, index % 12 + 1
        ends.append(date(year, month, calendar.monthrange(year, month)[1]))
    return [*ends, as_of]


def _dso_trend(items: pl.DataFrame, allocations: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """DSO at each month end, as ``kpis`` computes it on that day."""
    days = _month_ends(as_of, TREND_MONTHS)
    return pl.DataFrame({"day": days, "dso": [kpis(items, allocations, d).dso for d in days]},
                        schema={"day": pl.Date(), "dso": pl.Decimal(8, 1)})


# --- Output -----------------------------------------------------------------------------


def write_aging_report(report: AgingReport, folder: Path,
                       env: jinja2.Environment | None = None) -> dict[str, Path]:
    """Write ``aging.parquet`` and ``aging.html`` into ``folder``; returns their paths.

    ``aging.parquet`` has one row per customer: ``as_of``, ``customer_id``, ``name`` and
    the money columns (``MONEY_COLUMNS``) as Decimal(18, 2) euros, so a spreadsheet or BI
    tool reads amounts, not cents. Each file is published whole (written, then renamed).

    Args:
        report: what ``build_aging_report`` returned.
        folder: created when missing.
        env: the environment with ``reports/aging.html`` (``make_environment`` of the
            configured templates folder); by default the project's ``templates/``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": folder / "aging.parquet", "html": folder / "aging.html"}
    buffer = io.BytesIO()
    _parquet_frame(report).write_parquet(buffer)
    write_atomic(paths["parquet"], buffer.getvalue())
    html = render_template(env or make_environment(PROJECT_ROOT / "templates"),
                           "reports/aging.html", **_html_context(report))
    write_atomic(paths["html"], html.encode())
    return paths


def _parquet_frame(report: AgingReport) -> pl.DataFrame:
    table = report.customers
    return table.select(
        pl.lit(report.as_of).alias("as_of"), "customer_id", "name",
        *(decimal_series(c, table[c].to_numpy(), 2) for c in MONEY_COLUMNS))


def _html_context(report: AgingReport) -> dict[str, Any]:
    """What ``reports/aging.html`` shows: money as Decimal euros, charts as SVG markup."""
    totals = report.totals()
    with rc_context(_CHART_STYLE):
        charts = {"aging": _svg(_aging_chart(totals)),
                  "dso": _svg(_dso_chart(report.dso_trend)),
                  "overdue": _svg(_overdue_chart(report.top_overdue))}
    figures = report.kpis
    return {
        "lang": _LANG, "as_of": report.as_of, "period_days": PERIOD_DAYS,
        "buckets": BUCKETS, "charts": charts, "top_size": TOP_OVERDUE,
        "kpis": {"balance": from_cents(figures.balance), "overdue": from_cents(figures.overdue),
                 "overdue_share": _share(figures.overdue, figures.balance),
                 "dso": _tenth(figures.dso), "cei": _tenth(figures.cei),
                 "average_days_late": _tenth(figures.average_days_late),
                 "disputed": from_cents(figures.disputed), "customers": report.customers.height},
        "customers": [{**r, "name": _short(r["name"], 80) if r["name"] else None,
                       **{c: from_cents(r[c]) for c in MONEY_COLUMNS}}
                      for r in report.customers.iter_rows(named=True)],
        "totals": {c: from_cents(v) for c, v in totals.items()},
    }


# --- Charts: matplotlib Figures (no pyplot, no global backend), saved as SVG -------------


def _svg(figure: Figure) -> Markup:
    """The figure as an ``<svg>`` element to inline in HTML (no XML prolog).

    Matplotlib escapes the text it writes (``<`` ``&`` in a customer name stay text), so
    the markup is safe to insert unescaped.
    """
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    text = out.getvalue()
    return Markup(text[text.index("<svg"):])


def _aging_chart(totals: dict[str, int]) -> Figure:
    figure = Figure(figsize=(5.8, 3.4))
    axes = figure.subplots()
    bars = axes.bar(list(BUCKETS),
                    [_coordinate(totals[b]) for b in BUCKETS],
                    color=[_COLORS[b] for b in BUCKETS], width=0.65)
    axes.bar_label(bars, labels=[_compact(totals[b]) for b in BUCKETS], padding=3, fontsize=9)
    axes.set_xlabel("days past due")
    _money_axis(axes, "y", max(totals[b] for b in BUCKETS))
    return figure


def _dso_chart(trend: pl.DataFrame) -> Figure:
    figure = Figure(figsize=(5.8, 3.2))
    axes = figure.subplots()
    days: list[date] = trend["day"].to_list()
    values = [float(v) for v in trend["dso"]]  # y coordinates only; the labels are exact
    axes.plot(range(len(days)), values, color="#1a3d6d", marker="o", markersize=4,
              linewidth=1.8)
    for x, (y, exact) in enumerate(zip(values, trend["dso"], strict=True)):
        axes.annotate(str(exact), (x, y), textcoords="offset points", xytext=(0, 7),
                      ha="center", fontsize=8, color="#333",
                      bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})
    axes.set_xticks(range(len(days)), _month_labels(days), fontsize=8)
    axes.set_ylim(0, max([*values, 10.0]) * 1.2)
    axes.set_ylabel("days")
    axes.grid(axis="y", color="#e4e4e4", linewidth=0.8)
    axes.set_axisbelow(True)
    return figure


def _month_labels(days: list[date]) -> list[str]:
    """``Apr`` under each month end, the year under the first and each January, and the
    day of the last point when it is not a month end."""
    labels = []
    for i, day in enumerate(days):
        text = format_date(day, "MMM", locale=_LOCALE)
        if day.day != calendar.monthrange(day.year, day.month)[1]:
            text = format_date(day, "d MMM", locale=_LOCALE)
        labels.append(f"{text}\n{day.year}" if i == 0 or day.month == 1 else text)
    return labels


def _overdue_chart(top: pl.DataFrame) -> Figure:
    """Horizontal bars of past-due money per customer, stacked by bucket, largest on top."""
    figure = Figure(figsize=(11.5, 0.36 * max(top.height, 3) + 1.0))
    axes = figure.subplots()
    if not top.height:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "Nothing is past due.", ha="center", va="center",
                  transform=axes.transAxes, fontsize=11, color="#555")
        return figure
    rows = list(reversed(top.to_dicts()))
    positions = range(len(rows))
    left = [0.0] * len(rows)
    for bucket in PAST_DUE:
        widths = [_coordinate(r[bucket]) for r in rows]
        axes.barh(positions, widths, left=left, color=_COLORS[bucket], height=0.62,
                  label=f"{bucket} days late")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, (row, end) in enumerate(zip(rows, left, strict=True)):
        axes.annotate(_compact(row["past_due"]), (end, y), textcoords="offset points",
                      xytext=(4, 0), va="center", fontsize=9)
    axes.set_yticks(list(positions), [_short(r["name"] or r["customer_id"], 42) for r in rows])
    axes.tick_params(axis="y", length=0, labelsize=9)
    _money_axis(axes, "x", max(top["past_due"].to_list()))
    axes.legend(loc="lower right", fontsize=8, frameon=False, ncols=4,
                bbox_to_anchor=(1.0, 1.0))
    return figure


def _money_axis(axes: Axes, which: Literal["x", "y"], largest: int) -> None:
    """A money axis from 0 past ``largest`` cents: ticks on round euros, labelled exactly
    (``€1.25m``, never a rounded ``€1.2m``), and a light grid."""
    axis = axes.yaxis if which == "y" else axes.xaxis
    limits = (0.0, max(_coordinate(largest) * 1.15, 100.0))
    if which == "y":
        axes.set_ylim(*limits)
    else:
        axes.set_xlim(*limits)
    axis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10], integer=True))
    axis.set_major_formatter(FuncFormatter(
        lambda value, _: format_compact_currency(Decimal(round(value)), "EUR",
                                                 locale=_LOCALE, fraction_digits=2)))
    axes.grid(axis=which, color="#e4e4e4", linewidth=0.8)
    axes.set_axisbelow(True)


# --- Numbers and text for people ----------------------------------------------------------



def _amount(cents: int) -> str:
    """``1,234.56``: for tables whose header says EUR."""
    return format_decimal(from_cents(cents), format="#,##0.00", locale=_LOCALE)


def _compact(cents: int) -> str:
    """``€1.2m`` (``€950.50`` under a thousand): a chart label; the table is exact."""
    if 0 < abs(cents) < 100_000:
        return format_currency(from_cents(cents), "EUR", locale=_LOCALE)
    return format_compact_currency(from_cents(cents), "EUR", locale=_LOCALE, fraction_digits=1)


def _coordinate(cents: int) -> float:
    """Euros as a chart coordinate (a float only where matplotlib places a bar)."""
    return cents / 100


def _share(part: int, whole: int) -> Decimal:
    """``part`` as a percent of ``whole``, to the tenth."""
    if not whole:
        return Decimal(0)
    return (Decimal(part) * 100 / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


def _tenth(value: Decimal) -> Decimal:
    """One decimal always (``aging`` gives ``0`` and ``100`` bare when nothing was due)."""
    return value.quantize(Decimal("0.1"), ROUND_HALF_UP)


def _markdown(text: str) -> str:
    """Customer data as text in markdown: no link, emphasis, HTML or table cell of its own."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", text)


def _short(text: str, limit: int) -> str:
    """Printable characters only (a control character breaks SVG), cut at ``limit``."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean if len(clean) <= limit else clean[:limit - 1] + "…"
