#!/usr/bin/env python3
"""Render benchmark: per-core cost of our renderer against two naive baselines, same invoices.

The invoices. ``--invoices`` documents of the committed sample extract: its 210
one-page invoices (at most 14 lines, 7.1 on average) in a fixed shuffled order,
cycled under new numbers beyond 210; the default 100 average 7.0 lines
(``--invoices 210`` takes each once). All three paths render *this same list*:

  (a) naive: our templates, one fresh ``HTML(string=...).write_pdf()`` per invoice,
      stylesheet by <link>, default fetcher, one process, no Factur-X;
  (b) ../shared/bench/reference_render.py (the reference workload), imported and
      driven invoice for invoice: for our i-th invoice of k lines it renders its
      own invoice i built with ``make_invoice(i, nlines=k)``, through its own
      ``render_naive``. Its template and data are its own (a reference is only a
      reference if left as it is), but the line counts are ours, one by one, not
      its default 12 lines against our 7.1 on average;
  (c) ours: documents rendered by spawned worker processes through the pipeline's
      ``ProcessExecutor`` and ``render_documents`` (what ``w_render_batch`` runs:
      HTML from the templates, WeasyPrint, EN 16931 mapping to the embedded
      Factur-X CII, PDF/A-3b, the totals read back from the PDF, sha256), in jobs
      of ``--batch-size`` invoices, PDFs written to disk by the parent as the
      archive does; on 1 worker and on ``--workers`` (default: all cores).

Per core, like with like. The ratios compare ms of one core per invoice, never
one process against all cores: per-core times are CPU time per invoice
(``time.process_time`` in the process that renders; for ours, the workers'
``time.process_time`` plus the parent's ``resource.getrusage``, pickling and
writing included). The 1-worker run of (c) and the loops (a) and (b) are pinned
to one CPU (``sched_setaffinity``, inherited by the spawned worker), so the
parent cannot borrow the second core and the 1-worker wall time is one core's.
Scaling across workers is reported separately: ``scaling_efficiency`` =
invoices/s on N workers / (N x invoices/s on 1 worker), both wall time, same
invoices. On a shared machine it also falls when a neighbour takes a core, so
``ours_n_cores_used`` (our processes' CPU / wall time) and
``cpu_scaling_efficiency`` (CPU per invoice on 1 worker / on N: what running N
at once costs our own code) are printed beside it.

Overhead. ``overhead_ms`` is the CPU time per invoice of everything of ours
outside WeasyPrint: templating, the EN 16931 mapping and CII XML (counted as
ours, although the engine calls it inside its timed block), the cross-check of
the totals read back from the PDF, hashing, moving documents and PDFs between
processes, writing the files. It is measured in the worker by timing the
engine's ``html``, ``factur_x`` and ``render`` methods with
``time.process_time`` (WeasyPrint = render - html - factur_x), not with wall
clocks, so a neighbour on the shared machine does not land in it.

The machine is shared: ``other_cores_busy`` is the CPU every other process
used during the runs of (c) (/proc/stat), in cores, so a slowed run can be
told from slow code. Every figure is the median of ``--repeat`` runs; the
modes alternate within each repeat. A second run of (c) on all workers has 10 %
multi-page invoices (skipped with ``--no-multipage``). Peak RSS is that of the
process tree. Timings are printed, never asserted. The last line is one JSON
object with all figures (used by ``bench/month_end.py``).

    .venv/bin/python bench/render.py [--invoices 100] [--workers 2] [--repeat 3]
        [--no-multipage] [--only-ours]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import cycle, islice
from pathlib import Path
from types import ModuleType
from typing import Any

from _measure import TreeRss, tree_rss_kb

from pipeline import keys
from pipeline.documents import InvoiceDocument, build_documents
from pipeline.executor import ProcessExecutor
from pipeline.ingest import load_extract
from pipeline.render.engine import DETERMINISTIC_EPOCH, make_engine
from pipeline.render.worker import Rendered, render_documents
from pipeline.settings import PROJECT_ROOT, SHARED_DIR, Settings
from pipeline.validate import validate

REFERENCE = SHARED_DIR / "bench" / "reference_render.py"
ONE_PAGE_MAX_LINES = 14
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- machine -------------------------------------------------------------------------------

def machine() -> dict[str, object]:
    """CPU model, cores usable, memory: what a figure was measured on."""
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(mem_kb / 1024 / 1024, 1), "python": platform.python_version()}


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used so far (/proc/stat, all cores)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle and iowait


def parent_cpu_s() -> float:
    """CPU seconds of this process, all its threads (executor threads pickle and unpickle)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Pinned:
    """Runs the block on one CPU; processes spawned inside inherit it."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu, self.saved = cpu, os.sched_getaffinity(0)

    def __enter__(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc: object) -> None:
        os.sched_setaffinity(0, self.saved)


# -- the invoices --------------------------------------------------------------------------

def sample_documents(settings: Settings) -> list[InvoiceDocument]:
    bundle = load_extract(PROJECT_ROOT / "sample_data" / "extract")
    accepted = validate(bundle, settings.seller, settings.validation).accepted
    return build_documents(bundle, sorted(accepted["invoice_number"]), settings.seller)


def workload(docs: list[InvoiceDocument], n: int, multipage_share: float
             ) -> Iterator[InvoiceDocument]:
    """n documents, one in 1/share multi-page, numbers made unique; produced lazily so the
    harness itself does not grow with n. The one-page invoices come in a fixed shuffled
    order, so the first n of them are a fair sample of the extract's line counts."""
    shuffled = [d for d in docs if len(d.lines) <= ONE_PAGE_MAX_LINES]
    random.Random(2026).shuffle(shuffled)
    one_page = cycle(shuffled)
    long = cycle([d for d in docs if len(d.lines) >= 40])
    every = round(1 / multipage_share) if multipage_share else 0
    for i in range(n):
        source = next(long) if every and i % every == every - 1 else next(one_page)
        yield dataclasses.replace(source, number=f"{source.number}-{i:06d}")


# -- (a) and (b): one process ----------------------------------------------------------------

def timed_loop(render: Callable[[Any], object], items: list[Any]) -> dict[str, float]:
    """CPU and wall ms per item of ``render`` over items, after one warm-up call."""
    render(items[0])
    cpu, wall = time.process_time(), time.perf_counter()
    for item in items:
        render(item)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"per_core_ms": cpu / len(items) * 1000, "wall_ms": wall / len(items) * 1000}


def naive(docs: list[InvoiceDocument], templates: Path) -> dict[str, float]:
    """(a): one fresh WeasyPrint document per invoice with our templates, one process."""
    from weasyprint import HTML

    from pipeline.render.templates import TemplateSet
    template_set = TemplateSet(templates)
    base_url = (templates / "assets").as_uri() + "/"
    link = '<link rel="stylesheet" href="invoice.css"></head>'
    return timed_loop(lambda doc: HTML(string=template_set.html(doc).replace("</head>", link),
                                       base_url=base_url).write_pdf(), docs)


def load_reference() -> ModuleType | None:
    if not REFERENCE.exists():
        return None
    spec = importlib.util.spec_from_file_location("reference_render", REFERENCE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.setup_assets()
    return module


def reference(ref: ModuleType, docs: list[InvoiceDocument]) -> dict[str, float]:
    """(b): the reference's own invoices and naive render, with our line counts one by one."""
    invoices = [ref.make_invoice(i, nlines=len(doc.lines)) for i, doc in enumerate(docs)]
    return timed_loop(ref.render_naive, invoices)


# -- (c) ours: worker processes --------------------------------------------------------------

_engine: Any = None
_cpu = {"render": 0.0, "html": 0.0, "mapping": 0.0}


def _timed(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _cpu[key] += time.process_time() - start
    return timed


def w_bench_batch(docs: list[InvoiceDocument], templates_dir: str
                  ) -> tuple[list[Rendered], dict[str, float]]:
    """Worker: ``render_documents`` as ``w_render_batch`` runs it, with the engine's methods
    timed in CPU time; returns the results and this process's CPU clock readings."""
    global _engine
    if _engine is None:
        _engine = make_engine("weasyprint", Path(templates_dir))
        # Instance attributes win over the methods ``render`` calls through ``self``.
        _engine.html = _timed(_engine.html, "html")
        _engine.factur_x = _timed(_engine.factur_x, "mapping")
        _engine.render = _timed(_engine.render, "render")
    before = dict(_cpu)
    start = time.process_time()
    results = render_documents(_engine, docs)
    cpu = {"pid": os.getpid(), "start": start, "end": time.process_time()}
    cpu.update({k: _cpu[k] - before[k] for k in _cpu})
    return results, cpu


def ours(docs: Iterable[InvoiceDocument], templates: Path, workers: int, batch_size: int,
         out: Path, progress: bool = False) -> dict[str, float]:
    """(c): the pipeline's renderer on ``workers`` processes; PDFs hashed and written."""
    executor = ProcessExecutor(workers)
    docs = iter(docs)
    try:
        # Start every worker (spawn, imports, fonts) before timing: paid once per run.
        first = next(docs)
        warm, seen = time.perf_counter(), set()
        for _ in range(5):
            futures = [executor.submit(w_bench_batch, [first], str(templates))
                       for _ in range(workers)]
            seen |= {f.result()[1]["pid"] for f in futures}
            if len(seen) >= workers:
                break
        warm_s = time.perf_counter() - warm

        spans: dict[int, list[float]] = {}
        parts = {"render": 0.0, "html": 0.0, "mapping": 0.0}

        def collect(future: Any) -> None:
            results, cpu = future.result()
            _write(results, out)
            span = spans.setdefault(cpu["pid"], [cpu["start"], cpu["end"]])
            span[0], span[1] = min(span[0], cpu["start"]), max(span[1], cpu["end"])
            for k in parts:
                parts[k] += cpu[k]

        n, pending = 0, []
        busy, parent, start = machine_busy_s(), parent_cpu_s(), time.perf_counter()
        docs = _prepend(first, docs)
        while batch := list(islice(docs, batch_size)):
            n += len(batch)
            if progress and n % 5000 < batch_size and n > batch_size:
                print(f"  {n} invoices submitted, {time.perf_counter() - start:.0f} s, "
                      f"tree RSS {tree_rss_kb(os.getpid()) / 1024:.0f} MB", flush=True)
            pending.append(executor.submit(w_bench_batch, batch, str(templates)))
            while len(pending) > workers * 2:  # bounded: memory must not grow with N
                collect(pending.pop(0))
        for future in pending:
            collect(future)
        wall = time.perf_counter() - start
        parent = parent_cpu_s() - parent
        busy = machine_busy_s() - busy
    finally:
        executor.shutdown()
    # Worker CPU: each worker's clock from its first timed job's start to its last job's end
    # (unpickling the next job and pickling results in between included).
    worker = sum(end - begin for begin, end in spans.values())
    weasyprint = parts["render"] - parts["html"] - parts["mapping"]
    ms = 1000 / n
    return {
        "ms_per_invoice": wall * ms, "invoices_per_s": n / wall, "warm_up_s": warm_s,
        "per_core_ms": (worker + parent) * ms,
        "weasyprint_ms": weasyprint * ms,
        "overhead_ms": (worker + parent - weasyprint) * ms,
        "templating_ms": parts["html"] * ms,
        "mapping_ms": parts["mapping"] * ms,
        "worker_rest_ms": (worker - parts["render"]) * ms,
        "parent_ms": parent * ms,
        "cores_used": (worker + parent) / wall,
        "other_cores_busy": max(busy - worker - parent, 0.0) / wall,
    }


def _prepend(first: InvoiceDocument, rest: Iterator[InvoiceDocument]
             ) -> Iterator[InvoiceDocument]:
    yield first
    yield from rest


def _write(results: list[Rendered], out: Path) -> None:
    for r in results:
        if r.pdf is None:
            raise SystemExit(f"render failed: {r.error}")
        assert hashlib.sha256(r.pdf).hexdigest() == r.sha256
        (out / f"{keys.safe_component(r.number)}.pdf").write_bytes(r.pdf)


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def r2(figures: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": round(v, 2) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100,
                        help="invoices of every measurement (210: each one-page sample once)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-size", type=int, default=Settings().render.chunk_size,
                        help="invoices per worker job (settings.render.chunk_size)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-multipage", action="store_true",
                        help="skip the run with 10 %% multi-page invoices")
    parser.add_argument("--only-ours", action="store_true",
                        help="ours on all workers only, invoices generated lazily (long "
                             "memory runs); no baselines, no 1-worker run")
    args = parser.parse_args()
    os.environ.setdefault("SOURCE_DATE_EPOCH", DETERMINISTIC_EPOCH)

    settings = Settings()
    templates = settings.render.templates_dir
    docs = sample_documents(settings)
    out = Path(tempfile.mkdtemp(prefix="bench-render-"))
    one_cpu = min(os.sched_getaffinity(0))
    figures: dict[str, object] = {"invoices": args.invoices, "workers": args.workers,
                                  "batch_size": args.batch_size, "repeat": args.repeat,
                                  "machine": machine()}

    if args.only_ours:
        with TreeRss() as rss:
            c = ours(workload(docs, args.invoices, 0.0), templates, args.workers,
                     args.batch_size, out, progress=True)
        print(f"(c) ours, {args.workers} workers: {c['ms_per_invoice']:.1f} ms/invoice, "
              f"{c['per_core_ms']:.1f} ms of CPU per invoice", flush=True)
        figures.update({"repeat": 1, **r2(c, "ours_n_")})
        figures["peak_rss_mb"] = round(rss.peak_mb, 1)
        tenth = rss.samples[len(rss.samples) // 10][1] / 1024 if rss.samples else 0
        figures["rss_at_10pct_mb"] = round(tenth, 1)
        figures["rss_at_end_mb"] = round(rss.samples[-1][1] / 1024, 1) if rss.samples else 0
        print(json.dumps(figures))
        return

    same = list(workload(docs, args.invoices, 0.0))
    lines = statistics.mean(len(d.lines) for d in same)
    figures["lines_per_invoice"] = round(lines, 2)
    ref = load_reference()
    print(f"{len(same)} invoices, {lines:.2f} lines on average, the same for (a), (b), (c); "
          f"(a), (b) and (c) on 1 worker pinned to CPU {one_cpu}", flush=True)
    a_runs: list[dict[str, float]] = []
    b_runs: list[dict[str, float]] = []
    c1_runs: list[dict[str, float]] = []
    cn_runs: list[dict[str, float]] = []
    with TreeRss() as rss:
        for i in range(args.repeat):
            # Alternate the order so a slow spell of the shared machine hits each mode.
            modes = ["a", "b", "c1", "cn"] if i % 2 == 0 else ["cn", "c1", "b", "a"]
            for mode in modes:
                if mode == "a":
                    with Pinned(one_cpu):
                        a_runs.append(naive(same, templates))
                elif mode == "b" and ref:
                    with Pinned(one_cpu):
                        b_runs.append(reference(ref, same))
                elif mode == "c1":
                    with Pinned(one_cpu):
                        c1_runs.append(ours(same, templates, 1, args.batch_size, out))
                elif mode == "cn":
                    cn_runs.append(ours(same, templates, args.workers, args.batch_size, out))
            print(f"  repeat {i + 1}: (a) {a_runs[-1]['per_core_ms']:.1f}, "
                  + (f"(b) {b_runs[-1]['per_core_ms']:.1f}, " if b_runs else "")
                  + f"(c) {c1_runs[-1]['per_core_ms']:.1f} ms of one core per invoice; "
                  f"(c) on {args.workers}: {cn_runs[-1]['invoices_per_s']:.1f} invoices/s, "
                  f"other processes {cn_runs[-1]['other_cores_busy']:.2f} cores", flush=True)
        multi = None
        if not args.no_multipage:
            multi = ours(workload(docs, args.invoices, 0.1), templates, args.workers,
                         args.batch_size, out)
    a, c1, cn = median(a_runs), median(c1_runs), median(cn_runs)
    b = median(b_runs) if b_runs else None
    efficiency = cn["invoices_per_s"] / (args.workers * c1["invoices_per_s"])
    cpu_efficiency = c1["per_core_ms"] / cn["per_core_ms"]

    print(f"\nms of one core per invoice (CPU time), {len(same)} invoices, median of "
          f"{args.repeat}:")
    rows = [("(a) naive, our templates", a["per_core_ms"], a["wall_ms"]),
            *([("(b) reference, same line counts", b["per_core_ms"], b["wall_ms"])] if b
              else []),
            ("(c) ours, 1 worker", c1["per_core_ms"], c1["ms_per_invoice"])]
    print(f"  {'':34} {'per core ms':>11} {'wall ms':>8} {'inv/s':>7} {'vs ours':>8}")
    for name, per_core, wall in rows:
        print(f"  {name:34} {per_core:11.1f} {wall:8.1f} {1000 / wall:7.1f} "
              f"{per_core / c1['per_core_ms']:7.2f}x")
    print(f"  ours: WeasyPrint {c1['weasyprint_ms']:.1f} ms, overhead {c1['overhead_ms']:.1f} "
          f"ms (templating {c1['templating_ms']:.1f}, EN 16931 mapping "
          f"{c1['mapping_ms']:.1f}, cross-check/hash/pickling {c1['worker_rest_ms']:.1f}, "
          f"parent {c1['parent_ms']:.1f})")
    print(f"scaling: {c1['invoices_per_s']:.1f} invoices/s on 1 worker, "
          f"{cn['invoices_per_s']:.1f} on {args.workers}; efficiency {efficiency:.2f}; ours "
          f"kept {cn['cores_used']:.2f} cores busy, other processes "
          f"{cn['other_cores_busy']:.2f}; CPU per invoice on {args.workers} workers "
          f"{cn['per_core_ms']:.1f} ms (CPU efficiency {cpu_efficiency:.2f})")
    if multi:
        print(f"ours with 10 % multi-page, {args.workers} workers: "
              f"{multi['ms_per_invoice']:.1f} ms/invoice, {multi['per_core_ms']:.1f} ms of "
              f"CPU per invoice")

    figures.update({
        "per_core_ms": round(c1["per_core_ms"], 2),
        "naive_per_core_ms": round(a["per_core_ms"], 2),
        "reference_per_core_ms": round(b["per_core_ms"], 2) if b else None,
        "ratio": round(a["per_core_ms"] / c1["per_core_ms"], 2),
        "ratio_vs_reference": round(b["per_core_ms"] / c1["per_core_ms"], 2) if b else None,
        "scaling_efficiency": round(efficiency, 3),
        "cpu_scaling_efficiency": round(cpu_efficiency, 3),
        "overhead_ms": round(c1["overhead_ms"], 2),
        "weasyprint_ms": round(c1["weasyprint_ms"], 2),
        "naive_invoices_per_s": round(1000 / a["wall_ms"], 2),
        "naive_wall_ms": round(a["wall_ms"], 2),
        "reference_invoices_per_s": round(1000 / b["wall_ms"], 2) if b else None,
        "reference_wall_ms": round(b["wall_ms"], 2) if b else None,
        **r2(c1, "ours_1_"), **r2(cn, "ours_n_"),
    })
    if multi:
        figures.update(r2({k: multi[k] for k in ("ms_per_invoice", "invoices_per_s",
                                                  "per_core_ms")}, "multipage_"))
    figures["peak_rss_mb"] = round(rss.peak_mb, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
