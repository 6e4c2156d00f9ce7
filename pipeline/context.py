"""RunContext: the side-effecting resources of one run, opened and closed in one place."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex

import jinja2

from pipeline.channels import Formatter, make_formatters, make_transports
from pipeline.channels.transports import Transport
from pipeline.executor import Executor, make_executor
from pipeline.journal import Journal
from pipeline.render.templates import make_environment
from pipeline.settings import Settings
from pipeline.storage import Storage, open_storage

__all__ = ["RunContext", "open_run"]


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

    def close(self) -> None:
        """Stop workers, close connections, and mark the run finished in the journal."""
        self.executor.shutdown()
        for transport in self.transports.values():
            transport.close()
        self.journal.end_run(self.run_id)
        self.journal.dispose()


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


def open_run(settings: Settings, extract_id: str, resend_in_doubt: bool = False) -> RunContext:
    """Create the home directory layout, claim a run id and open every resource of a run."""
    settings.home.mkdir(parents=True, exist_ok=True)
    run_id, reports_dir = _claim_run(settings.home / "reports", extract_id)
    env = make_environment(settings.render.templates_dir)
    journal = Journal(settings.ledger_url)
    journal.begin_run(run_id)
    return RunContext(
        settings=settings,
        run_id=run_id,
        reports_dir=reports_dir,
        journal=journal,
        storage=open_storage(settings),
        formatters=make_formatters(settings, env, journal),
        transports=make_transports(settings),
        executor=make_executor(settings.render.workers),
        env=env,
        resend_in_doubt=resend_in_doubt,
    )
