"""One executor abstraction with a serial default.

``SerialExecutor`` runs in the calling process (tests, ``workers=1``);
``ProcessExecutor`` runs spawn-started worker processes (fork after
WeasyPrint is imported measured 4x slower). Both hand out futures, so the
caller code is the same.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "make_executor"]

T = TypeVar("T")
STOP_WAIT_S = 10.0


class Executor(Protocol):
    """What the pipeline needs from an executor."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Schedule ``fn(*args)``."""
        ...

    def shutdown(self) -> None:
        """Release workers."""
        ...


class SerialExecutor:
    """Runs each call immediately in this process."""

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Run now; the future is already done."""
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        """Nothing to release."""


class ProcessExecutor:
    """Spawned worker processes, each keeping its renderer between batches."""

    def __init__(self, workers: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers,
                                         mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Queue ``fn(*args)`` on a worker."""
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        """Stop the workers; one still busy (a render stuck past its batch's time limit)
        is killed after ``STOP_WAIT_S`` rather than holding the run open."""
        # The pool keeps its processes in _processes; shutdown() offers no timeout.
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.join(timeout=STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()


def make_executor(workers: int) -> Executor:
    """Serial for one worker, processes otherwise."""
    return SerialExecutor() if workers <= 1 else ProcessExecutor(workers)
