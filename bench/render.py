#!/usr/bin/env python3
"""Render benchmark: our renderer on all cores against two naive baselines, in one run.

N invoices of the committed sample extract (one-page ones; more than the sample
holds are cycled under new numbers), then a second workload with 10 % multi-page
invoices. Measured in the same run:

  (a) naive: our templates, one fresh ``HTML(string=...).write_pdf()`` per invoice,
      stylesheet by <link>, default fetcher, one process;
  (b) ../shared/bench/reference_render.py (the reference workload), one process;
  (c) ours: documents built per batch, rendered by the worker processes
      (``w_render_batch``), PDFs hashed and written to disk, as the pipeline does.

Prints ms per invoice and invoices per second of each, ``ratio`` = (a)/(c),
``ratio_vs_reference`` = (b)/(c), the overhead outside WeasyPrint in ms per
invoice (all worker time not spent inside WeasyPrint, plus the parent's own
work, per invoice), and peak RSS of the process tree. (a) and (b) run on
``--baseline-invoices`` invoices (per-invoice figures do not depend on N).
The last line is one JSON object.

    .venv/bin/python bench/render.py [--invoices 400] [--workers 2] [--only-ours]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import chain, cycle, islice
from pathlib import Path

from _measure import TreeRss, tree_rss_kb

from pipeline import keys
from pipeline.documents import InvoiceDocument, build_documents
from pipeline.executor import ProcessExecutor
from pipeline.ingest import load_extract
from pipeline.render.engine import DETERMINISTIC_EPOCH
from pipeline.render.worker import w_render_batch
from pipeline.settings import PROJECT_ROOT, SHARED_DIR, Settings
from pipeline.validate import validate

REFERENCE = SHARED_DIR / "bench" / "reference_render.py"
ONE_PAGE_MAX_LINES = 14


def sample_documents(settings: Settings) -> list[InvoiceDocument]:
    bundle = load_extract(PROJECT_ROOT / "sample_data" / "extract")
    accepted = validate(bundle, settings.seller, settings.validation).accepted
    return build_documents(bundle, sorted(accepted["invoice_number"]), settings.seller)


def workload(docs: list[InvoiceDocument], n: int, multipage_share: float
             ) -> Iterator[InvoiceDocument]:
    """n documents, one in 1/share multi-page, numbers made unique; produced lazily so the
    harness itself does not grow with n."""
    one_page = cycle([d for d in docs if len(d.lines) <= ONE_PAGE_MAX_LINES])
    long = cycle([d for d in docs if len(d.lines) >= 40])
    every = round(1 / multipage_share) if multipage_share else 0
    for i in range(n):
        source = next(long) if every and i % every == every - 1 else next(one_page)
        yield dataclasses.replace(source, number=f"{source.number}-{i:06d}")


def naive(docs: list[InvoiceDocument], templates: Path) -> float:
    """(a): ms per invoice, one fresh WeasyPrint document per invoice, one process."""
    from weasyprint import HTML

    from pipeline.render.templates import TemplateSet
    template_set = TemplateSet(templates)
    base_url = (templates / "assets").as_uri() + "/"
    link = '<link rel="stylesheet" href="invoice.css"></head>'
    HTML(string=template_set.html(docs[0]).replace("</head>", link), base_url=base_url
         ).write_pdf()
    start = time.perf_counter()
    for doc in docs:
        HTML(string=template_set.html(doc).replace("</head>", link),
             base_url=base_url).write_pdf()
    return (time.perf_counter() - start) / len(docs) * 1000


def reference(n: int) -> float | None:
    """(b): ms per invoice of the shared reference workload, or None if absent."""
    if not REFERENCE.exists():
        return None
    out = subprocess.run([sys.executable, str(REFERENCE), "--invoices", str(n)],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["ms_per_invoice"])


def ours(docs: Iterator[InvoiceDocument], templates: Path, workers: int, batch_size: int,
         out: Path) -> dict[str, float]:
    """(c): the pipeline's renderer on all cores; PDFs hashed and written like the archive."""
    executor = ProcessExecutor(workers)
    try:
        # Start the workers (spawn, imports, fonts) before timing: paid once per run.
        first = next(docs)
        warm = time.perf_counter()
        for future in [executor.submit(w_render_batch, [first], str(templates))
                       for _ in range(workers)]:
            future.result()
        warm_s = time.perf_counter() - warm

        start = time.perf_counter()
        engine_s, n = 0.0, 0
        pending = []
        docs = chain([first], docs)
        while batch := list(islice(docs, batch_size)):
            n += len(batch)
            if n % 5000 < batch_size and n > batch_size:
                print(f"  {n} invoices submitted, {time.perf_counter() - start:.0f} s, "
                      f"tree RSS {tree_rss_kb(os.getpid()) / 1024:.0f} MB", flush=True)
            pending.append(executor.submit(w_render_batch, batch, str(templates)))
            while len(pending) > workers * 2:  # bounded: memory must not grow with N
                engine_s += _collect(pending.pop(0).result(), out)
        for future in pending:
            engine_s += _collect(future.result(), out)
        wall = time.perf_counter() - start
    finally:
        executor.shutdown()
    return {"ms_per_invoice": wall / n * 1000, "invoices_per_s": n / wall, "warm_up_s": warm_s,
            "weasyprint_ms_per_invoice": engine_s / n * 1000,
            "overhead_ms_per_invoice": (wall * workers - engine_s) / n * 1000}


def _collect(results: list, out: Path) -> float:
    engine_s = 0.0
    for r in results:
        if r.pdf is None:
            raise SystemExit(f"render failed: {r.error}")
        assert hashlib.sha256(r.pdf).hexdigest() == r.sha256
        (out / f"{keys.safe_component(r.number)}.pdf").write_bytes(r.pdf)
        engine_s += r.engine_s
    return engine_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=400)
    parser.add_argument("--baseline-invoices", type=int, default=60)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=Settings().render.chunk_size,
                        help="invoices per worker job (settings.render.chunk_size)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-ours", action="store_true",
                        help="skip the baselines and the multi-page run (long memory runs)")
    args = parser.parse_args()
    os.environ.setdefault("SOURCE_DATE_EPOCH", DETERMINISTIC_EPOCH)

    settings = Settings()
    templates = settings.render.templates_dir
    docs = sample_documents(settings)
    out = Path(tempfile.mkdtemp(prefix="bench-render-"))
    figures: dict[str, object] = {"invoices": args.invoices, "workers": args.workers}

    with TreeRss() as rss:
        runs = [ours(workload(docs, args.invoices, 0.0), templates, args.workers,
                     args.batch_size, out)
                for _ in range(1 if args.only_ours else args.repeat)]
        c = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"(c) ours, {args.workers} workers: {c['ms_per_invoice']:.1f} ms/invoice, "
              f"WeasyPrint {c['weasyprint_ms_per_invoice']:.1f} ms, overhead "
              f"{c['overhead_ms_per_invoice']:.1f} ms", flush=True)
        figures.update({f"ours_{k}": round(v, 2) for k, v in c.items()})
        if not args.only_ours:
            base = list(workload(docs, args.baseline_invoices, 0.0))
            a = statistics.median(naive(base, templates) for _ in range(args.repeat))
            b = reference(args.baseline_invoices)
            print(f"(a) naive on our templates: {a:.1f} ms/invoice; (b) reference: {b} ms",
                  flush=True)
            multi = ours(workload(docs, args.invoices, 0.1), templates, args.workers,
                         args.batch_size, out)
            print(f"(c) with 10 % multi-page: {multi['ms_per_invoice']:.1f} ms/invoice",
                  flush=True)
            figures.update({
                "naive_ms_per_invoice": round(a, 2), "naive_invoices_per_s": round(1000 / a, 2),
                "ratio": round(a / c["ms_per_invoice"], 2),
                "multipage_ms_per_invoice": round(multi["ms_per_invoice"], 2),
                "multipage_invoices_per_s": round(multi["invoices_per_s"], 2),
            })
            if b:
                figures.update({"reference_ms_per_invoice": b,
                                "reference_invoices_per_s": round(1000 / b, 2),
                                "ratio_vs_reference": round(b / c["ms_per_invoice"], 2)})
    figures["peak_rss_mb"] = round(rss.peak_mb, 1)
    if args.only_ours:
        tenth = rss.samples[len(rss.samples) // 10][1] / 1024 if rss.samples else 0
        figures["rss_at_10pct_mb"] = round(tenth, 1)
        figures["rss_at_end_mb"] = round(rss.samples[-1][1] / 1024, 1) if rss.samples else 0
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
