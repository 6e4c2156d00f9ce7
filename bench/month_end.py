#!/usr/bin/env python3
"""Month-end projection: how long 500,000 invoices take to render on 2, 16 and 64 cores.

Runs ``bench/render.py`` (or reads the JSON last line of an earlier run with
``--render-json``) and projects from two of its measured figures:

  time(c) = invoices x per_core_ms / (c x efficiency(c))

``per_core_ms`` is the CPU time of one core per invoice of our renderer on one
worker (workers' and parent's CPU, pinned to one core); ``efficiency(c)`` is the
scaling efficiency, invoices/s on N workers / (N x invoices/s on 1 worker),
measured here with N = the cores of this machine. For more cores than were
measured the efficiency is an ASSUMPTION: the measured N-worker efficiency held
constant. Nothing here measured 16 or 64 cores; the real one is lower if the
single parent process that collects and writes the PDFs becomes the bottleneck
(its ceiling, 1000 / parent ms per invoice invoices/s, is printed) or if
machines are added through Dask (network, shared archive store).

On a shared machine a neighbour taking a core lowers the measured efficiency;
the table also shows the time at ``cpu_scaling_efficiency`` (CPU per invoice on
1 worker / on N, what running N at once costs our own code, no idle time
counted): a lower bound, for cores that are ours alone and never wait. The
render benchmark's ``other_cores_busy`` says how busy the neighbours were.

Beyond rendering (optional): ``--run-json`` takes the JSON last line of
``bench/run.py`` (end to end through the flow, on this machine, all cores) and
projects from its own figures only (its invoices are its generated extract's,
not the render benchmark's): the render-and-deliver stage per invoice, scaled
to c cores like rendering (x N / c, same efficiency assumption); the rest of
the flow (ingest, validation, planning, reports) per invoice, assumed not to
get faster with more cores (it runs once, in the flow's process); and the
start-up (command line and Prefect), once, not scaled.

Prints a table and, as the last line, one JSON object with the machine it was
measured on. Timings are printed, never asserted.

    .venv/bin/python bench/month_end.py [--invoices 500000] [--cores 2,16,64]
        [--render-json FILE] [--run-json FILE] [--render-args "--invoices 100 --repeat 3"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def last_json(text: str) -> dict[str, Any]:
    """The last line that is a JSON object (a saved log may have lines after it)."""
    return json.loads(next(line for line in reversed(text.strip().splitlines())
                           if line.startswith("{")))


def run_render(extra: list[str]) -> dict[str, Any]:
    """Run bench/render.py, echoing its lines, and return its JSON last line."""
    cmd = [sys.executable, str(BENCH / "render.py"), "--no-multipage", *extra]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print("  |", line, end="", flush=True)
    if proc.wait():
        sys.exit(f"bench/render.py failed ({proc.returncode})")
    return last_json("".join(lines))


def hours(seconds: float) -> str:
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def end_to_end(run: dict[str, Any]) -> dict[str, float] | None:
    """What an end-to-end run (bench/run.py's JSON) spends per invoice, by kind of part."""
    stages = run.get("stage_s", {})
    n = run.get("accepted") or run.get("delivered") or run.get("invoices")
    if not n or "render_deliver" not in stages or "flow_s" not in run:
        print(f"--run-json: no flow_s / stage_s.render_deliver / invoice count in {run}")
        return None
    serial_s = run["flow_s"] - stages["render_deliver"]
    return {"invoices": n, "serial_ms": serial_s / n * 1000,
            "render_deliver_ms": stages["render_deliver"] / n * 1000,
            "startup_s": run.get("wall_s", run["flow_s"]) - run["flow_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=500_000)
    parser.add_argument("--cores", default="2,16,64")
    parser.add_argument("--render-json", type=Path,
                        help="a file whose last line is bench/render.py's JSON (else it runs)")
    parser.add_argument("--render-args", default="",
                        help="arguments passed to bench/render.py, e.g. '--invoices 210'")
    parser.add_argument("--run-json", type=Path,
                        help="a file whose last line is bench/run.py's JSON (end to end)")
    args = parser.parse_args()

    render = (last_json(args.render_json.read_text()) if args.render_json
              else run_render(shlex.split(args.render_args)))
    per_core, measured_n = render["per_core_ms"], render["workers"]
    eff, cpu_eff = render["scaling_efficiency"], render["cpu_scaling_efficiency"]
    parent_ms = render["ours_n_parent_ms"]
    parent_ceiling = 1000 / parent_ms if parent_ms > 0 else float("inf")
    e2e = end_to_end(last_json(args.run_json.read_text())) if args.run_json else None
    machine = render["machine"]
    assumption = (f"scaling efficiency measured on {measured_n} workers ({eff:.2f}) held "
                  f"constant for more cores; not measured beyond {measured_n}")

    print(f"\n{args.invoices:,} invoices, measured on {machine['cpu']}, {machine['cores']} "
          f"cores, {machine['memory_gb']} GB: {per_core:.1f} ms of one core per invoice "
          f"({render['lines_per_invoice']} lines on average), scaling efficiency {eff:.2f} "
          f"on {measured_n} workers (other processes used {render['ours_n_other_cores_busy']:.2f}"
          f" cores meanwhile), CPU efficiency {cpu_eff:.2f}")
    head = f"  {'cores':>5} {'efficiency':>10} {'invoices/s':>10} {'render time':>12} " \
           f"{'at CPU eff.':>12}" + (f" {'end to end':>12}" if e2e else "")
    print(head)
    projection: dict[str, dict[str, Any]] = {}
    for cores in (int(c) for c in args.cores.split(",")):
        assumed = cores not in (1, measured_n)
        efficiency = 1.0 if cores == 1 else eff
        rate = cores * efficiency * 1000 / per_core
        seconds = args.invoices / rate
        dedicated = args.invoices * per_core / (cores * (1.0 if cores == 1 else cpu_eff)) / 1000
        row: dict[str, Any] = {
            "efficiency": round(efficiency, 3), "efficiency_assumed": assumed,
            "invoices_per_s": round(rate, 1), "render_s": round(seconds),
            "render_hours": round(seconds / 3600, 2),
            "render_hours_at_cpu_efficiency": round(dedicated / 3600, 2),
            "parent_load": round(rate / parent_ceiling, 2),
        }
        line = (f"  {cores:>5} {efficiency:>9.2f}{'*' if assumed else ' '} {rate:>10.1f} "
                f"{hours(seconds):>12} {hours(dedicated):>12}")
        if e2e:
            total = (e2e["startup_s"] + args.invoices * e2e["serial_ms"] / 1000
                     + args.invoices * e2e["render_deliver_ms"] / 1000 * measured_n / cores
                     * eff / efficiency)
            row["end_to_end_hours"] = round(total / 3600, 2)
            line += f" {hours(total):>12}"
        projection[str(cores)] = row
        print(line)
    print(f"  * assumption: {assumption}.")
    if render["ours_n_other_cores_busy"] > 0.25 * measured_n:
        print(f"  Shared machine: other processes used {render['ours_n_other_cores_busy']:.2f} "
              f"of the {measured_n} cores during the measurement, so the measured efficiency "
              f"is partly theirs; on cores of its own the time lies between the two columns.")
    print(f"  Check: measured on {measured_n} workers {render['ours_n_invoices_per_s']:.2f} "
          f"invoices/s; per_core_ms is CPU time, so the projection for {measured_n} is higher "
          f"when the pinned 1-worker run did not have its core to itself (it used "
          f"{render['ours_1_cores_used']:.2f} of it).")
    print(f"  One parent process collects and writes the PDFs at {parent_ms:.2f} ms of CPU "
          f"per invoice: its ceiling is {parent_ceiling:.0f} invoices/s ("
          + ", ".join(f"{c} cores: {r['parent_load']:.0%} of it"
                      for c, r in projection.items()) + ").")
    if e2e:
        print(f"  End to end (bench/run.py, {e2e['invoices']} invoices on {measured_n} "
              f"workers): render and deliver {e2e['render_deliver_ms']:.1f} ms per invoice, "
              f"scaled like rendering; the rest of the flow {e2e['serial_ms']:.2f} ms per "
              f"invoice, not parallel; start-up {e2e['startup_s']:.0f} s once.")

    print(json.dumps({
        "invoices": args.invoices, "machine": machine,
        "measured": {"per_core_ms": per_core, "workers": measured_n,
                     "scaling_efficiency": eff, "cpu_scaling_efficiency": cpu_eff,
                     "invoices_per_s_on_workers": render["ours_n_invoices_per_s"],
                     "other_cores_busy": render["ours_n_other_cores_busy"],
                     "one_worker_cores_used": render["ours_1_cores_used"],
                     "parent_ms": parent_ms, "lines_per_invoice": render["lines_per_invoice"],
                     "render_invoices": render["invoices"], "repeat": render["repeat"]},
        "assumption": assumption,
        "end_to_end": {k: round(v, 3) for k, v in e2e.items()} if e2e else None,
        "projection": projection,
    }))


if __name__ == "__main__":
    main()
