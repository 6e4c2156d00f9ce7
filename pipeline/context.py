"""The resources of a run, opened where the work runs.

A run is described by a ``RunSpec``: plain, picklable data (settings as a dict,
the run id, the extract's location). The process that starts the run opens it
with ``open_run``, which registers the run in the journal; any process that
works on it (a thread of the same process, a worker process, a Dask worker on
another machine) calls ``context_for(spec)`` and gets the run's journal,
archive, channels and renderer, opened once per process and reused by every
batch that process handles.
"""

from __future__ import annotations

import atexit
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from secrets import token_hex
from typing import Any

import jinja2

from pipeline.channels import Formatter, make_formatters, make_transports
from pipeline.channels.transports import Transport
from pipeline.executor import Executor, SerialExecutor, make_executor
from pipeline.ingest import ExtractBundle, load_extract
from pipeline.journal import Journal
from pipeline.render.templates import make_environment
from pipeline.settings import Settings
from pipeline.storage import Storage, open_storage

__all__ = ["RunSpec", "RunContext", "open_run", "context_for", "extract_for", "close_all"]


@dataclass(frozen=True)
class RunSpec:
    """A run as plain data: what a task needs to open the run's resources anywhere."""

    settings: dict[str, Any]
    run_id: str
    reports_dir: str
    extract_dir: str
    resend_in_doubt: bool = False
    render_in_process: bool = False
    """Render in the task's own process (on a Dask worker: the workers are the pool)."""

    def load_settings(self) -> Settings:
        """The run's settings, with the secrets of this process's environment."""
        return Settings(**self.settings)


@dataclass
class RunContext:
    """Settings plus the journal, archive, channels and render executor of a run."""

    settings: Settings
    run_id: str
    reports_dir: Path
    journal: Journal
    storage: Storage
    formatters: dict[str, Formatter]
    transports: dict[str, Transport]
    executor: Executor
    env: jinja2.Environment
    resend_in_doubt: bool = False
    """Re-send deliveries a stopped run left in doubt (an operator's decision)."""
    indexed: frozenset[tuple[str, str]] = frozenset()
    """(invoice, channel) pairs the archive index holds when the run starts."""
    locks: dict[str, threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock))
    """One per channel: batches deliver in parallel threads, a connection serves one."""
    owner: bool = False
    """This process registered the run (``open_run``) and ends it when it closes."""
    _issued: dict[str, date] | None = field(default=None, repr=False)

    def issue_dates(self, numbers: Iterable[str]) -> dict[str, date]:
        """Issue dates of invoices billed by earlier runs (the archive index, read once):
        a credit note names the date of the invoice it corrects (BT-26)."""
        wanted = set(numbers)
        if not wanted:
            return {}
        if self._issued is None:
            from pipeline.archive import read_index
            index = read_index(self.storage).select("invoice_number", "issue_date")
            self._issued = dict(index.iter_rows())
        return {n: self._issued[n] for n in wanted if n in self._issued}

    def spec(self, extract_dir: str, render_in_process: bool = False) -> RunSpec:
        """This run as plain data, for tasks that may run in another process."""
        return RunSpec(self.settings.as_plain_data(), self.run_id,
                       str(self.reports_dir), extract_dir, self.resend_in_doubt,
                       render_in_process)

    def close(self) -> None:
        """Stop workers and close connections; the owner also marks the run finished."""
        _OPEN.pop(self.run_id, None)
        self.executor.shutdown()
        for transport in self.transports.values():
            transport.close()
        if self.owner:
            self.journal.end_run(self.run_id)
        self.journal.dispose()


_OPEN: dict[str, RunContext] = {}
_EXTRACTS: dict[str, ExtractBundle] = {}
"""The extract of each run this process works on, by run id."""
_LOCK = threading.Lock()


def _claim_run(reports: Path, extract_id: str) -> tuple[str, Path]:
    """A run id no other run has, with its reports folder, created by this call alone.

    The id starts with the start time to the microsecond, so ids sort by start;
    a random suffix separates runs started in the same microsecond, and the
    exclusive ``mkdir`` settles the rest: two processes can never both create
    the folder, so the loser draws another id instead of sharing the folder.
    """
    reports.mkdir(parents=True, exist_ok=True)
    while True:
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{extract_id}-{token_hex(3)}"
        try:
            (reports / run_id).mkdir()
        except FileExistsError:
            continue
        return run_id, reports / run_id


def _open(settings: Settings, run_id: str, reports_dir: Path, resend_in_doubt: bool,
          executor: Executor, owner: bool) -> RunContext:
    env = make_environment(settings.render.templates_dir)
    journal = Journal(settings.ledger_url)
    if owner:
        journal.begin_run(run_id)
    ctx = RunContext(
        settings=settings, run_id=run_id, reports_dir=reports_dir, journal=journal,
        storage=open_storage(settings), formatters=make_formatters(settings, env, journal),
        transports=make_transports(settings, resend_in_doubt), executor=executor, env=env,
        resend_in_doubt=resend_in_doubt, owner=owner)
    _OPEN[run_id] = ctx
    return ctx


def open_run(settings: Settings, extract_id: str, resend_in_doubt: bool = False) -> RunContext:
    """Create the home directory layout, claim a run id, register the run in the journal
    and open its resources in this process."""
    settings.home.mkdir(parents=True, exist_ok=True)
    run_id, reports_dir = _claim_run(settings.home / "reports", extract_id)
    return _open(settings, run_id, reports_dir, resend_in_doubt,
                 make_executor(settings.render.workers), owner=True)


def context_for(spec: RunSpec) -> RunContext:
    """The run's resources in this process: those ``open_run`` opened here, or new ones,
    opened once and kept until the process ends (a worker serves many batches)."""
    with _LOCK:
        if (ctx := _OPEN.get(spec.run_id)) is not None:
            return ctx
        for earlier in [c for c in _OPEN.values() if not c.owner]:
            earlier.close()  # a long-lived worker keeps one run's connections, not every night's
        settings = spec.load_settings()
        from pipeline.archive import indexed_pairs, read_index  # archive imports this module

        executor = SerialExecutor() if spec.render_in_process else make_executor(
            settings.render.workers)
        ctx = _open(settings, spec.run_id, Path(spec.reports_dir), spec.resend_in_doubt,
                    executor, owner=False)
        ctx.indexed = indexed_pairs(read_index(ctx.storage))
        return ctx


def extract_for(spec: RunSpec) -> ExtractBundle:
    """The run's extract, read once per process and run (the flow's own reading is
    registered with ``remember_extract`` so that threads of its process do not read it
    again); keyed by run, so an extract re-exported under the same path is read anew."""
    with _LOCK:
        if spec.run_id not in _EXTRACTS:
            for earlier in [r for r in _EXTRACTS if r not in _OPEN]:
                del _EXTRACTS[earlier]  # runs this process no longer works on
            _EXTRACTS[spec.run_id] = load_extract(Path(spec.extract_dir),
                                                  spec.load_settings().ingest.error_rows)
        return _EXTRACTS[spec.run_id]


def remember_extract(run_id: str, bundle: ExtractBundle) -> None:
    """Keep the extract a run's own process has read, for ``extract_for``."""
    with _LOCK:
        _EXTRACTS[run_id] = bundle


def forget_extract(run_id: str) -> None:
    """Drop a run's extract when the run is over."""
    with _LOCK:
        _EXTRACTS.pop(run_id, None)


@atexit.register
def close_all() -> None:
    """Close what worker processes opened (their contexts outlive each task)."""
    for ctx in list(_OPEN.values()):
        ctx.close()
