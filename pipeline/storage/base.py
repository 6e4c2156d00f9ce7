"""The storage protocol: put/get/exists/list by key, with content checksums."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Storage", "StoredObject"]


@dataclass(frozen=True)
class StoredObject:
    """Where a blob went and what it was."""

    key: str
    sha256: str
    bytes: int


class Storage(Protocol):
    """An archive store addressed by deterministic keys."""

    def put(self, key: str, data: bytes) -> StoredObject:
        """Store ``data`` under ``key`` (atomically: readers never see half a file)."""
        ...

    def get(self, key: str) -> bytes:
        """Read a stored blob."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a blob."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix``, sorted."""
        ...
