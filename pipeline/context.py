"""RunContext: the side-effecting resources of one run, opened and closed in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

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
    ledger: Ledger
    storage: Storage
    channels: dict[str, Channel]
    executor: Executor
    env: jinja2.Environment

    def close(self) -> None:
        """Stop workers and close the ledger."""
        self.executor.shutdown()
        self.ledger.dispose()


def open_run(settings: Settings, extract_id: str) -> RunContext:
    """Create the home directory layout and open every resource of a run."""
    settings.home.mkdir(parents=True, exist_ok=True)
    env = make_environment(settings.render.templates_dir)
    ledger = Ledger(settings.ledger_url)
    return RunContext(
        settings=settings,
        run_id=f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{extract_id}",
        ledger=ledger,
        storage=LocalStorage(settings.archive_dir),
        channels=make_channels(settings.home / "outbox", settings, env, ledger),
        executor=make_executor(settings.render.workers),
        env=env,
    )
