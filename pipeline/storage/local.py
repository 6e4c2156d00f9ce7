"""A directory as archive store (the embedded default)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import StorageError
from pipeline.storage.base import StoredObject

__all__ = ["LocalStorage", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outbox files from the print house
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage:
    """Blobs as files under ``root``; keys are relative POSIX paths."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError(f"archive key {key!r} escapes the archive root {self.root}")
        return path

    def put(self, key: str, data: bytes) -> StoredObject:
        """Store ``data`` atomically under ``key``."""
        try:
            write_atomic(self._path(key), data)
        except OSError as exc:
            raise StorageError(f"cannot write {key} under {self.root}: {exc}. "
                               "Check free space and permissions, then re-run.") from exc
        return StoredObject(key, hashlib.sha256(data).hexdigest(), len(data))

    def get(self, key: str) -> bytes:
        """Read the blob under ``key``."""
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix``."""
        base = self.root / prefix
        if not base.exists():
            return iter(())
        return iter(sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                           if p.is_file() and not p.name.startswith(".tmp-")))
