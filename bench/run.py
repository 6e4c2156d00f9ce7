#!/usr/bin/env python3
"""End-to-end benchmark of the nightly billing run.

Generates an extract of N invoices, runs ``invoices run`` on it R times (fresh
home each time), and, in the same run for comparison, the naive reference
render workload of ../shared/bench. Prints invoices per second end to end and
per stage (median of the runs) and the peak RSS of the whole process tree
(CLI + Prefect's temporary server + render workers). The last line is one
JSON object with every figure.

    .venv/bin/python bench/run.py --invoices 2000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import TreeRss

from pipeline.settings import SHARED_DIR

CLI = Path(sys.executable).parent / "invoices"
REFERENCE = SHARED_DIR / "bench" / "reference_render.py"


def run_measured(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall time and peak process-tree RSS (MB) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeRss(proc.pid) as rss:
        out, err = proc.communicate()
    return time.perf_counter() - start, rss.peak_mb, subprocess.CompletedProcess(
        cmd, proc.returncode, out, err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-invoices", type=int, default=100)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    extract = work / "extract"
    subprocess.run([str(CLI), "sample", "--out", str(extract), "--invoices", str(args.invoices),
                    "--seed", "2026", "--defects", "0.02"], check=True, capture_output=True)

    runs = []
    for i in range(args.repeat):
        home = work / f"home{i}"
        wall, peak_mb, result = run_measured([str(CLI), "run", str(extract), "--home", str(home)])
        if result.returncode not in (0, 1):
            sys.exit(f"run failed ({result.returncode}):\n{result.stderr[-3000:]}")
        summary = json.loads(next((home / "reports").glob("*/summary.json")).read_text())
        runs.append({"wall_s": wall, "peak_rss_mb": peak_mb, **summary})
        print(f"run {i + 1}: {wall:.1f} s wall, flow {summary['duration_s']:.1f} s, "
              f"{summary['invoices_per_s']:.1f} inv/s, peak RSS {peak_mb:.0f} MB", flush=True)

    reference = None
    if REFERENCE.exists():
        ref = subprocess.run([sys.executable, str(REFERENCE), "--invoices",
                              str(args.reference_invoices)], capture_output=True, text=True,
                             check=True)
        reference = json.loads(ref.stdout.strip().splitlines()[-1])

    def med(key: str, source: str | None = None) -> float:
        return statistics.median((r[source][key] if source else r[key]) for r in runs)

    n = runs[0]["input_invoices"]
    flow_s = med("duration_s")
    figures = {
        "invoices": n,
        "delivered": runs[0]["delivered"],
        "rejected": runs[0]["rejected"],
        "failed": runs[0]["failed"],
        "runs": args.repeat,
        "wall_s": round(med("wall_s"), 2),
        "flow_s": round(flow_s, 2),
        "invoices_per_s": round(n / med("wall_s"), 2),
        "flow_invoices_per_s": round(n / flow_s, 2),
        "ms_per_invoice": round(med("wall_s") / n * 1000, 2),
        "stage_s": {k: round(statistics.median(r["stages_s"][k] for r in runs), 3)
                    for k in runs[0]["stages_s"]},
        "stage_invoices_per_s": {k: round(n / max(statistics.median(
            r["stages_s"][k] for r in runs), 1e-9), 1) for k in ("ingest", "validate",
                                                                  "render_deliver")},
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
    }
    if reference:
        figures["reference_ms_per_invoice"] = reference["ms_per_invoice"]
        figures["ratio_vs_reference"] = round(reference["ms_per_invoice"]
                                              / figures["ms_per_invoice"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
