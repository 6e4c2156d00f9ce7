"""RunContext: the side-effecting resources of one run, opened and closed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex

import jinja2

from pipeline.channels import Channel, make_channels
from pipeline.executor import Executor, make_executor
from pipeline.ledger import Ledger
from pipeline.render.templates import make_environment
from pipeline.settings import Settings
from pipeline.storage import LocalStorage, Storage

__all__ = ["RunContext", "open_run"]


@dataclass
class RunContext:
    """Settings plus the ledger, archive, channels and render executor of a run."""

    settings: Settings
    run_id: str
    reports_dir: Path
    ledger: Ledger
    storage: Storage
    channels: dict[str, Channel]
    executor: Executor
    env: jinja2.Environment

    def close(self) -> None:
        """Stop workers and close the ledger."""
        self.executor.shutdown()
        self.ledger.dispose()


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


def open_run(settings: Settings, extract_id: str) -> RunContext:
    """Create the home directory layout, claim a run id and open every resource of a run."""
    settings.home.mkdir(parents=True, exist_ok=True)
    run_id, reports_dir = _claim_run(settings.home / "reports", extract_id)
    env = make_environment(settings.render.templates_dir)
    ledger = Ledger(settings.ledger_url)
    return RunContext(
        settings=settings,
        run_id=run_id,
        reports_dir=reports_dir,
        ledger=ledger,
        storage=LocalStorage(settings.archive_dir),
        channels=make_channels(settings.home / "outbox", settings, env, ledger),
        executor=make_executor(settings.render.workers),
        env=env,
    )
