#!/usr/bin/env python3
"""Receivables benchmark: matching N payments to as many open items, then aging them.

Generates an extract of about N invoices and the camt.053 statements that pay it, with the
generator's truth (``pipeline/receivables/sample.py``), reads the statements back, then
times, median of --repeat runs in this process: matching every payment
(``receivables.matching.match``) and the aged balance and KPIs as of the last statement day
(``receivables.aging``). Targets on a 2-core machine: each under 30 s and 4 GB. The match
rate counts the credits placed or recognised as returned; a wrong match is an allocation
the truth does not have. The last line is one JSON object with every figure.

    .venv/bin/python bench/receivables.py [--payments 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from pipeline.ingest import load_extract
from pipeline.receivables.aging import aged_balance, kpis, open_amounts, open_as_of
from pipeline.receivables.camt import read_statement
from pipeline.receivables.matching import match
from pipeline.receivables.open_items import item_rows
from pipeline.receivables.sample import TRUTH_FILE, generate_statements
from pipeline.sample import generate_extract


def _payments(folder: Path) -> pl.DataFrame:
    found = [p for f in sorted(folder.glob("*.xml"))
             for s in read_statement(f.read_bytes(), str(f)) for p in s.payments]
    return pl.DataFrame({
        "key": [p.key for p in found], "cents": [int(p.amount * 100) for p in found],
        "value_date": [p.value_date for p in found],
        "debtor_iban": [p.debtor_iban for p in found],
        "creditor_reference": [p.creditor_reference for p in found],
        "remittance": [p.remittance for p in found],
        "end_to_end_id": [p.end_to_end_id for p in found]}).sort("value_date", "key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-receivables-"))
    start = time.perf_counter()
    generate_extract(work / "extract", args.payments, seed=2026)
    generate_statements(work / "extract", work / "statements", seed=2026)
    payments = _payments(work / "statements")
    print(f"generated and read {payments.height} payments in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    invoices = load_extract(work / "extract").invoices
    items = item_rows(invoices)
    nothing = pl.DataFrame(schema={"invoice_number": pl.String(), "cents": pl.Int64()})
    open_items = open_amounts(items, nothing)
    no_one = pl.DataFrame(schema={"iban": pl.String(), "customer_id": pl.String()})

    match_s, aging_s = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = match(payments, open_items, no_one)
        match_s.append(time.perf_counter() - start)
        paid = result.allocations.join(payments.select(pl.col("key").alias("payment_key"),
                                                       "value_date"), on="payment_key")
        as_of = payments["value_date"].max()
        start = time.perf_counter()
        aged = aged_balance(open_as_of(items, paid, as_of), as_of)
        figures_of_day = kpis(items, paid, as_of)
        aging_s.append(time.perf_counter() - start)
        print(f"match {match_s[-1]:.2f} s, aging {aging_s[-1]:.2f} s", flush=True)

    truth = pl.read_parquet(work / "statements" / TRUTH_FILE).filter(
        pl.col("invoice_number").is_not_null())
    allocated = result.allocations.select("payment_key", "invoice_number").unique()
    wrong = allocated.join(truth.select("payment_key", "invoice_number"),
                           on=["payment_key", "invoice_number"], how="anti")
    credits_n = payments.filter(pl.col("cents") > 0).height
    returned = result.unallocated.filter(pl.col("why") == "returned by the payer's bank").filter(
        pl.col("cents") > 0).height
    placed = allocated["payment_key"].n_unique()
    figures = {
        "payments": payments.height, "credits": credits_n, "open_items": open_items.height,
        "match_s": round(statistics.median(match_s), 3),
        "aging_s": round(statistics.median(aging_s), 3),
        "runs": args.repeat,
        "match_rate": round((placed + returned) / credits_n, 4),
        "placed": placed, "returned": returned, "wrong_matches": wrong.height,
        "by_pass": result.counts(),
        "unallocated_by_reason": dict(result.unallocated.group_by("why").len().iter_rows()),
        "customers_aged": aged.height, "dso": float(figures_of_day.dso),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
