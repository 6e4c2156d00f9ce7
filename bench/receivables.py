#!/usr/bin/env python3
"""Receivables benchmark: matching N payments to as many open items, then aging them.

Generates an extract of about N invoices and the camt.053 statements that pay it, with the
generator's truth (``pipeline/receivables/sample.py``), and reads the statements back, in a
child process (its time and peak RSS are reported apart: ``generate_s``,
``generate_peak_rss_mb``). Then times, median of --repeat runs in this process: matching
every payment (``receivables.matching.match``, with the customers' names and every item
issued) and the aged balance and KPIs as of the last statement day
(``receivables.aging``). Targets on a 2-core machine: each under 30 s and 4 GB
(``peak_rss_mb``: this process, which holds the payments and items and matches them).

Against the truth, a *placeable* credit is one the truth says pays some invoice (credit
note rows aside, a credit whose truth names no invoice is an unknown payer's):

- ``match_rate`` = (placeable credits allocated to at least one invoice the truth says
  they pay + credits recognised as returned) / placeable credits;
- ``rate_by_pass``: the share of placeable credits each pass placed on a true invoice
  (a credit two passes placed counts for both; ``returned`` is the credits recognised as
  returned);
- ``wrong_matches``: allocations (payment, invoice) the truth does not have;
- ``unknown_left_unplaced`` of ``unknown_payers``: the credits of no known invoice that
  matching rightly left alone.

The last line is one JSON object with every figure.

    .venv/bin/python bench/receivables.py [--payments 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from pipeline.receivables.aging import aged_balance, kpis, open_amounts, open_as_of
from pipeline.receivables.camt import payment_frame, read_statement
from pipeline.receivables.matching import PASSES, match
from pipeline.receivables.open_items import item_rows
from pipeline.receivables.sample import TRUTH_FILE, generate_statements
from pipeline.sample import generate_extract


def _payments(folder: Path) -> pl.DataFrame:
    found = [p for f in sorted(folder.glob("*.xml"))
             for s in read_statement(f.read_bytes(), str(f)) for p in s.payments]
    return payment_frame(found).sort("value_date", "key")


def _generate(work: Path, invoices: int) -> None:
    """The extract, its statements and their payments (``payments.parquet``)."""
    generate_extract(work / "extract", invoices, seed=2026)
    generate_statements(work / "extract", work / "statements", seed=2026)
    _payments(work / "statements").write_parquet(work / "payments.parquet")


def _scores(result_allocations: pl.DataFrame, unallocated: pl.DataFrame,
            payments: pl.DataFrame, truth: pl.DataFrame) -> dict[str, object]:
    """The figures against the truth (see the module docstring)."""
    credits = payments.filter(pl.col("cents") > 0).select(pl.col("key").alias("payment_key"))
    pays = truth.filter(pl.col("invoice_number").is_not_null()).select(
        "payment_key", "invoice_number")
    placeable = pays.select("payment_key").unique().join(credits, on="payment_key",
                                                         how="semi")
    allocated = result_allocations.select("payment_key", "invoice_number", "pass").unique()
    right = allocated.join(pays, on=["payment_key", "invoice_number"], how="semi")
    wrong = allocated.select("payment_key", "invoice_number").unique().join(
        pays, on=["payment_key", "invoice_number"], how="anti")
    returned = (unallocated.filter((pl.col("why") == "returned by the payer's bank")
                                   & (pl.col("cents") > 0)).select("payment_key")
                .join(placeable, on="payment_key", how="semi"))
    placed = right.select("payment_key").unique()
    ok = pl.concat([placed, returned]).unique().height
    unknown = credits.join(truth.select("payment_key").unique(), on="payment_key",
                           how="semi").join(placeable, on="payment_key", how="anti")
    unknown_placed = unknown.join(allocated, on="payment_key", how="semi").height
    per_pass = dict(right.group_by("pass").agg(pl.col("payment_key").n_unique()).iter_rows())
    n = placeable.height or 1
    return {
        "placeable": placeable.height, "placed": placed.height, "returned": returned.height,
        "match_rate": round(ok / n, 4),
        "rate_by_pass": {**{p: round(per_pass.get(p, 0) / n, 4) for p in PASSES},
                         "returned": round(returned.height / n, 4)},
        "wrong_matches": wrong.height,
        "unknown_payers": unknown.height, "unknown_left_unplaced": unknown.height - unknown_placed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-receivables-"))
    start = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_generate,
                                                         args=(work, args.payments))
    child.start()
    child.join()
    if child.exitcode:
        raise SystemExit(f"generating the year failed (exit {child.exitcode})")
    generate_s = time.perf_counter() - start
    payments = pl.read_parquet(work / "payments.parquet")
    print(f"generated and read {payments.height} payments in {generate_s:.1f} s", flush=True)
    # only what matching and aging read (the whole extract, lines and all, is ingest's)
    items = item_rows(pl.read_parquet(work / "extract" / "invoices.parquet", columns=[
        "invoice_number", "customer_id", "invoice_type", "issue_date", "due_date",
        "total_gross", "currency", "credited_invoice_number"]))
    names = pl.read_parquet(work / "extract" / "customers.parquet",
                            columns=["customer_id", "legal_name"]).rename({"legal_name": "name"})
    nothing = pl.DataFrame(schema={"invoice_number": pl.String(), "cents": pl.Int64()})
    open_items = open_amounts(items, nothing)
    no_one = pl.DataFrame(schema={"iban": pl.String(), "customer_id": pl.String()})

    match_s, aging_s = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = match(payments, open_items, no_one, customer_names=names, issued=items)
        match_s.append(time.perf_counter() - start)
        paid = result.allocations.join(payments.select(pl.col("key").alias("payment_key"),
                                                       "value_date"), on="payment_key")
        as_of = payments["value_date"].max()
        start = time.perf_counter()
        aged = aged_balance(open_as_of(items, paid, as_of), as_of)
        figures_of_day = kpis(items, paid, as_of)
        aging_s.append(time.perf_counter() - start)
        print(f"match {match_s[-1]:.2f} s, aging {aging_s[-1]:.2f} s", flush=True)

    truth = pl.read_parquet(work / "statements" / TRUTH_FILE)
    figures = {
        "payments": payments.height, "credits": payments.filter(pl.col("cents") > 0).height,
        "open_items": open_items.height,
        "generate_s": round(generate_s, 1),
        "match_s": round(statistics.median(match_s), 3),
        "aging_s": round(statistics.median(aging_s), 3),
        "runs": args.repeat,
        **_scores(result.allocations, result.unallocated, payments, truth),
        "by_pass": result.counts(),
        "unallocated_by_reason": dict(result.unallocated.group_by("why").len().iter_rows()),
        "customers_aged": aged.height, "dso": float(figures_of_day.dso),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "generate_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
