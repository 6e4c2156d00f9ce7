"""Measuring helpers shared by the benchmarks: process-tree RSS, medians."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

__all__ = ["TreeRss", "tree_rss_kb"]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def tree_rss_kb(root: int) -> int:
    """Resident memory of a process and all its descendants, in kB (Linux /proc)."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo += _children(pid)
    return total


class TreeRss:
    """Polls the RSS of a process tree in the background; ``peak_mb`` after ``stop``."""

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        self.pid, self.interval = pid or os.getpid(), interval
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        start = time.perf_counter()
        while not self._done.is_set():
            self.samples.append((time.perf_counter() - start, tree_rss_kb(self.pid)))
            time.sleep(self.interval)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        """Largest sample, in MB."""
        return max((kb for _, kb in self.samples), default=0) / 1024
