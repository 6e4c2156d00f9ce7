"""Progress reporting, separate from logging: a protocol whose default does nothing.

The CLI installs a Rich progress bar; library code only calls ``progress()``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "progress", "set_progress"]


class Progress(Protocol):
    """Receives stage progress."""

    def start(self, stage: str, total: int) -> None:
        """A stage begins with ``total`` units of work."""

    def advance(self, stage: str, amount: int = 1) -> None:
        """``amount`` units of ``stage`` are done."""


class _Silent:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, amount: int = 1) -> None:
        pass


_current: Progress = _Silent()


def progress() -> Progress:
    """The installed progress reporter."""
    return _current


def set_progress(reporter: Progress | None) -> None:
    """Install a reporter (``None`` restores the silent default)."""
    global _current
    _current = reporter or _Silent()
