#!/usr/bin/env python3
"""End-to-end benchmark of the nightly billing run.

Generates an extract of N invoices, runs ``invoices run`` on it R times (fresh
home each time), and, in the same run for comparison, the naive reference
render workload of ../shared/bench. A run with failed or in-doubt invoices is
refused: its speed would not be the speed of billing. Figures are over the
invoices delivered (rejected ones cost only validation), median of the runs:

- ``invoices_per_s``: wall time of the whole command, Prefect's temporary API
  start-up included (what a nightly run costs);
- ``flow_invoices_per_s``: inside the flow, without the orchestrator's start-up;
- ``dask_*``: the same runs with batches on a Dask ``LocalCluster`` of 2 worker
  processes (``DASK_ADDRESS``), against a ``prefect server`` this benchmark
  starts (Dask workers need a shared API; the server's start is not counted,
  the cluster's is reported apart). Both modes use the machine's 2 cores: the
  figures compare orchestration overheads, not cores.

Also per stage and the peak RSS of the whole process tree (CLI + Prefect's
temporary server + render workers). The last line is one JSON object with
every figure.

    .venv/bin/python bench/run.py --invoices 2000 [--repeat 3] [--no-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _measure import TreeRss

from pipeline.settings import SHARED_DIR

CLI = Path(sys.executable).parent / "invoices"
REFERENCE = SHARED_DIR / "bench" / "reference_render.py"


def run_measured(cmd: list[str], env: dict[str, str]
                 ) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall time and peak process-tree RSS (MB) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    with TreeRss(proc.pid) as rss:
        out, err = proc.communicate()
    return time.perf_counter() - start, rss.peak_mb, subprocess.CompletedProcess(
        cmd, proc.returncode, out, err)


def billing_runs(extract: Path, work: Path, repeat: int, label: str,
                 env: dict[str, str]) -> list[dict]:
    """``invoices run`` ``repeat`` times on fresh homes; refuses runs that failed invoices."""
    runs = []
    for i in range(repeat):
        home = work / f"{label}{i}"
        wall, peak_mb, result = run_measured([str(CLI), "run", str(extract), "--home", str(home)],
                                             env)
        summaries = list((home / "reports").glob("*/summary.json"))
        if result.returncode != 0 or not summaries:
            sys.exit(f"{label} run failed ({result.returncode}): a benchmark of a run that did "
                     f"not bill every accepted invoice means nothing\n{result.stderr[-3000:]}")
        summary = json.loads(summaries[0].read_text())
        runs.append({"wall_s": wall, "peak_rss_mb": peak_mb, **summary})
        print(f"{label} run {i + 1}: {wall:.1f} s wall, flow {summary['duration_s']:.1f} s, "
              f"{summary['delivered']} delivered, peak RSS {peak_mb:.0f} MB", flush=True)
    return runs


def start_prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``prefect server`` on a free loopback port (port by environment: pitfall 4)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    sys.exit("prefect server did not start")


def dask_runs(extract: Path, work: Path, repeat: int) -> tuple[list[dict], float]:
    """The same runs with batches on a local Dask cluster of 2 worker processes."""
    from distributed import LocalCluster

    server, url = start_prefect_server(work / "prefect-server")
    os.environ["PREFECT_API_URL"] = url  # the cluster's workers inherit it
    try:
        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            cluster_s = time.perf_counter() - start
            runs = billing_runs(extract, work, repeat, "dask", {
                "DASK_ADDRESS": cluster.scheduler_address, "PREFECT_API_URL": url})
    finally:
        del os.environ["PREFECT_API_URL"]
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return runs, cluster_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-invoices", type=int, default=100)
    parser.add_argument("--no-dask", action="store_true", help="Skip the Dask runs.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    extract = work / "extract"
    subprocess.run([str(CLI), "sample", "--out", str(extract), "--invoices", str(args.invoices),
                    "--seed", "2026", "--defects", "0.02"], check=True, capture_output=True)

    runs = billing_runs(extract, work, args.repeat, "threads", {})
    dask, cluster_s = ([], 0.0) if args.no_dask else dask_runs(extract, work, args.repeat)

    reference = None
    if REFERENCE.exists():
        ref = subprocess.run([sys.executable, str(REFERENCE), "--invoices",
                              str(args.reference_invoices)], capture_output=True, text=True,
                             check=True)
        reference = json.loads(ref.stdout.strip().splitlines()[-1])

    def med(key: str, source: str | None = None) -> float:
        return statistics.median((r[source][key] if source else r[key]) for r in runs)

    n = runs[0]["input_invoices"]
    delivered = runs[0]["delivered"]
    flow_s = med("duration_s")
    figures = {
        "invoices": n,
        "delivered": delivered,
        "rejected": runs[0]["rejected"],
        "failed": runs[0]["failed"],
        "runs": args.repeat,
        "wall_s": round(med("wall_s"), 2),
        "flow_s": round(flow_s, 2),
        "startup_s": round(med("wall_s") - flow_s, 2),
        "invoices_per_s": round(delivered / med("wall_s"), 2),
        "flow_invoices_per_s": round(delivered / flow_s, 2),
        "ms_per_invoice": round(med("wall_s") / delivered * 1000, 2),
        "stage_s": {k: round(statistics.median(r["stages_s"][k] for r in runs), 3)
                    for k in runs[0]["stages_s"]},
        "stage_invoices_per_s": {k: round(n / max(statistics.median(
            r["stages_s"][k] for r in runs), 1e-9), 1) for k in ("ingest", "validate",
                                                                  "render_deliver")},
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
    }
    if dask:
        dask_wall = statistics.median(r["wall_s"] for r in dask)
        dask_flow = statistics.median(r["duration_s"] for r in dask)
        figures |= {"dask_workers": 2, "dask_cluster_start_s": round(cluster_s, 2),
                    "dask_wall_s": round(dask_wall, 2), "dask_flow_s": round(dask_flow, 2),
                    "dask_invoices_per_s": round(delivered / dask_wall, 2),
                    "dask_flow_invoices_per_s": round(delivered / dask_flow, 2),
                    "dask_peak_rss_mb": round(max(r["peak_rss_mb"] for r in dask), 1)}
    if reference:
        # The reference renders on one core; the run uses every core of the machine, so
        # the comparison is per core: our wall time per invoice times the cores it had.
        cores = os.cpu_count() or 1
        figures["reference_ms_per_invoice"] = reference["ms_per_invoice"]
        figures["core_ms_per_invoice"] = round(figures["ms_per_invoice"] * cores, 2)
        figures["ratio_vs_reference_per_core"] = round(
            reference["ms_per_invoice"] / figures["core_ms_per_invoice"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
