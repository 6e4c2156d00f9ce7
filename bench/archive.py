#!/usr/bin/env python3
"""Archive upload benchmark: concurrent uploads against sequential ones, to a local S3 server.

Starts a moto S3 server (``python -m moto.server``) in a process of its own on
loopback, builds N invoice-PDF-sized objects once (``--size-kb`` random bytes
each, seeded, as incompressible as a real PDF's streams, keyed
``invoices/2026/11/BENCH-{run}-{i:06d}.pdf`` with their invoice number as
metadata), then uploads the same objects ``--repeat`` times each way through
``S3Storage.put_many``, in calls of ``--batch`` objects as the delivery stage
does (one call per render batch):

  (a) sequential: ``S3Storage(workers=1)``, one PUT after the other;
  (b) concurrent: ``S3Storage(workers=--workers)``, the pipeline's bounded thread pool.

Like with like: the same payloads, the same server, the same client code, in
the same run; every measurement writes to a fresh, empty bucket (archived
objects are write-once) on a freshly reset server, and the order of (a) and
(b) alternates between runs. After each measurement the bucket is listed (N
keys) and a few objects are read back and compared by sha256, so the figures
are for uploads that really landed. Prints objects per second (median of the
runs), ``ratio`` = (b)/(a), and, as the last line, one JSON object.

Where the gain comes from. Concurrent uploads are meant to overlap waits (HTTP
round trips), not to buy CPU. But the server here is a Python process on the
same machine (2 shared cores), so in (a) the "wait" for each PUT is mostly the
server's own CPU time, and in (b) client and server can simply run at once on
two cores. A ratio that credits a second core to the thread pool would be
wrong, so the benchmark also reports the CPU time per object of the client
(``time.process_time``, all its threads) and of the moto server (utime + stime
from /proc), and ``cores_busy`` = (client + server CPU) / wall time for each
mode: a gain that comes with cores_busy going from ~1 to ~2 is the second
core's, one at equal cores_busy is overlapped waiting. The machine is shared:
``other_cores_busy`` is what every other process used meanwhile (/proc/stat),
so a run slowed by a neighbour can be told from one slowed by our own code. ``--rtt-ms`` adds a
simulated network round trip (a sleep before each PUT is sent, no CPU) to see
the case concurrency is for, a store across a network; it is 0 by default.
Peak RSS is that of the whole process tree (benchmark + server). Timings are
printed, never asserted.

    .venv/bin/python bench/archive.py [--objects 5000] [--workers 16] [--repeat 3]
        [--batch 50] [--size-kb 20-60] [--rtt-ms 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _measure import TreeRss

from pipeline.settings import Settings
from pipeline.storage import Blob, StoredObject
from pipeline.storage.s3 import S3Storage

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}
CHECKED_READS = 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used so far (/proc/stat, all cores)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle and iowait


# -- the server, in its own process ------------------------------------------------------


class MotoServer:
    """``python -m moto.server`` on a free loopback port, as the test suite starts it."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    sys.exit("moto_server did not start")
                time.sleep(0.1)

    def reset(self) -> None:
        """Forget every bucket and object (the server's memory does not grow over runs)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=60).close()

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# -- the objects ---------------------------------------------------------------------------


def payloads(n: int, low_kb: int, high_kb: int, seed: int = 2026) -> list[bytes]:
    """n PDF-sized blobs of random bytes, sizes uniform in [low_kb, high_kb]."""
    rng = random.Random(seed)
    return [b"%PDF-1.7\n" + rng.randbytes(rng.randint(low_kb * 1024, high_kb * 1024) - 9)
            for _ in range(n)]


def blobs(datas: list[bytes], run: int) -> list[Blob]:
    """The run's objects: fresh keys, the invoice number as metadata."""
    out = []
    for i, data in enumerate(datas):
        number = f"BENCH-{run}-{i:06d}"
        out.append(Blob(f"invoices/2026/11/{number}.pdf", data, {"invoice-number": number}))
    return out


# -- one measurement -----------------------------------------------------------------------


def measure(server: MotoServer, items: list[Blob], workers: int, batch: int, rtt_ms: float,
            bucket: str) -> dict[str, float]:
    """Upload ``items`` to a fresh bucket with ``workers`` threads; time, CPU, checks."""
    server.reset()
    storage = S3Storage(bucket, endpoint_url=server.url, workers=workers)
    storage.client.create_bucket(Bucket=bucket)
    if rtt_ms:
        def round_trip(**_: object) -> None:
            time.sleep(rtt_ms / 1000)
        storage.client.meta.events.register("before-send.s3.PutObject", round_trip)

    server_cpu, client_cpu, machine = server.cpu_s(), time.process_time(), machine_busy_s()
    start = time.perf_counter()
    results = []
    for first in range(0, len(items), batch):
        results += storage.put_many(items[first:first + batch])
    wall = time.perf_counter() - start
    client_cpu, server_cpu = time.process_time() - client_cpu, server.cpu_s() - server_cpu
    machine = machine_busy_s() - machine

    failed = [r for r in results if not isinstance(r, StoredObject) or not r.created]
    if failed:
        sys.exit(f"{workers} worker(s): {len(failed)} of {len(items)} uploads did not create "
                 f"their object; first: {failed[0]}")
    listed = list(storage.list("invoices"))
    if len(listed) != len(items):
        sys.exit(f"{workers} worker(s): {len(listed)} objects listed, {len(items)} uploaded")
    for item in random.Random(len(items)).sample(items, min(CHECKED_READS, len(items))):
        if hashlib.sha256(storage.get(item.key)).digest() != hashlib.sha256(item.data).digest():
            sys.exit(f"{workers} worker(s): {item.key} reads back other bytes")
    storage.client.close()
    n = len(items)
    return {"wall_s": wall, "objects_per_s": n / wall,
            "client_cpu_ms_per_object": client_cpu / n * 1000,
            "server_cpu_ms_per_object": server_cpu / n * 1000,
            "cores_busy": (client_cpu + server_cpu) / wall,
            "other_cores_busy": max(0.0, machine - client_cpu - server_cpu) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16,
                        help="upload threads of the concurrent mode (archive.upload_workers)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=Settings().render.batch_size,
                        help="objects per put_many call, as per delivery batch "
                             "(settings.render.batch_size)")
    parser.add_argument("--size-kb", default="20-60", help="object sizes, MIN-MAX kB")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="simulated network round trip before each PUT (0: none)")
    args = parser.parse_args()
    low_kb, _, high_kb = args.size_kb.partition("-")
    low, high = int(low_kb), int(high_kb or low_kb)
    os.environ.update(S3_ENV)

    datas = payloads(args.objects, low, high)
    object_kb = statistics.mean(len(d) for d in datas) / 1024
    print(f"{len(datas)} objects of {object_kb:.1f} kB on average ({low}-{high} kB), "
          f"put_many calls of {args.batch}, {args.workers} workers against 1, "
          f"simulated RTT {args.rtt_ms:g} ms, {os.cpu_count()} CPUs", flush=True)

    modes = {"sequential": 1, "concurrent": args.workers}
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    server = MotoServer()
    start = time.perf_counter()
    try:
        with TreeRss() as rss:
            # Untimed warm-up: the server's lazy imports, the client's endpoint resolution.
            warm = blobs(datas[:min(100, len(datas))], 0)
            for mode, workers in modes.items():
                measure(server, warm, workers, args.batch, args.rtt_ms, f"bench-warm-{mode}")
            for run in range(1, args.repeat + 1):
                items = blobs(datas, run)
                order = list(modes) if run % 2 else list(reversed(modes))
                for mode in order:
                    got = measure(server, items, modes[mode], args.batch, args.rtt_ms,
                                  f"bench-{run}-{mode}")
                    runs[mode].append(got)
                    print(f"run {run}, {mode} ({modes[mode]} worker(s)): {got['wall_s']:.2f} s, "
                          f"{got['objects_per_s']:.0f} objects/s, CPU per object: client "
                          f"{got['client_cpu_ms_per_object']:.2f} ms, server "
                          f"{got['server_cpu_ms_per_object']:.2f} ms, cores busy "
                          f"{got['cores_busy']:.2f} (others {got['other_cores_busy']:.2f})",
                          flush=True)
            server.reset()
    finally:
        server.stop()
    total_s = time.perf_counter() - start

    med = {mode: {k: statistics.median(r[k] for r in results) for k in results[0]}
           for mode, results in runs.items()}
    per_s = {mode: args.objects / m["wall_s"] for mode, m in med.items()}
    print(f"\n{'mode':<10}  {'workers':>7}  {'median s':>9}  {'objects/s':>9}  "
          f"{'client ms/obj':>13}  {'server ms/obj':>13}  {'cores busy':>10}")
    for mode, m in med.items():
        print(f"{mode:<10}  {modes[mode]:>7}  {m['wall_s']:>9.2f}  {per_s[mode]:>9.0f}  "
              f"{m['client_cpu_ms_per_object']:>13.2f}  {m['server_cpu_ms_per_object']:>13.2f}  "
              f"{m['cores_busy']:>10.2f}")
    ratio = per_s["concurrent"] / per_s["sequential"]
    print(f"concurrent / sequential: {ratio:.2f}x (cores busy "
          f"{med['sequential']['cores_busy']:.2f} -> {med['concurrent']['cores_busy']:.2f})")

    figures: dict[str, object] = {
        "objects": args.objects, "workers": args.workers, "batch": args.batch,
        "object_kb": round(object_kb, 1), "rtt_ms": args.rtt_ms,
        "sequential_objects_per_s": round(per_s["sequential"], 1),
        "concurrent_objects_per_s": round(per_s["concurrent"], 1),
        "ratio": round(ratio, 2),
    }
    for mode, m in med.items():
        figures[f"client_cpu_ms_per_object_{mode}"] = round(m["client_cpu_ms_per_object"], 3)
        figures[f"server_cpu_ms_per_object_{mode}"] = round(m["server_cpu_ms_per_object"], 3)
        figures[f"cores_busy_{mode}"] = round(m["cores_busy"], 2)
        figures[f"other_cores_busy_{mode}"] = round(m["other_cores_busy"], 2)
    figures.update({
        "peak_rss_mb": round(rss.peak_mb, 1),
        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "repeat": args.repeat, "cpus": os.cpu_count(), "total_s": round(total_s, 1),
    })
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
