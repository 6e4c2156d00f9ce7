"""A directory as archive store (the embedded default).

Write-once without a race: the bytes go to a temporary file that is then
hard-linked to the key's path, and ``link`` fails if the path exists, so of two
runs writing the same key at once exactly one creates it and the other compares.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pipeline.errors import StorageError
from pipeline.storage.base import (
    ArchiveConflictError,
    Blob,
    MissingObjectError,
    StoredObject,
    check_key,
    put_concurrently,
    sha256_of,
)

__all__ = ["LocalStorage", "write_atomic", "folder_problem"]


def _temporary(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide outbox files from the print house
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    tmp = _temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def folder_problem(path: Path, writing: bool) -> str | None:
    """Why ``path`` cannot serve as a folder (a missing one is created by the run), or None."""
    existing = path
    try:
        while not existing.exists():
            existing = existing.parent
    except OSError as exc:
        return f"{existing} cannot be looked at: {exc.strerror}"
    if not existing.is_dir():
        return ("it is a file, not a folder" if existing == path
                else f"{existing} is a file, so no folder can be created under it")
    if writing:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            return f"{existing} is not writable: {exc.strerror}"
    elif existing == path and not os.access(path, os.R_OK | os.X_OK):
        return "the folder cannot be read"
    return None


class LocalStorage:
    """Objects as files under ``root``; keys are relative POSIX paths."""

    def __init__(self, root: Path, workers: int = 4) -> None:
        self.root = root.resolve()
        self.location = str(self.root)
        self.workers = workers

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StorageError(f"archive key {key!r} escapes the archive root {self.root}")
        return path

    def put(self, key: str, data: bytes,
            metadata: Mapping[str, str] | None = None, *, retain: bool = True) -> StoredObject:
        """Store ``data`` under ``key`` unless it is there already (metadata and retention
        live in the index and the file system's permissions: a plain folder has nowhere
        portable to keep them)."""
        path, digest = self._path(key), sha256_of(data)
        try:
            tmp = _temporary(path, data)
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                created = False
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise StorageError(f"cannot write {key} under {self.root}: {exc}. "
                               "Check free space and permissions, then re-run.") from exc
        if not created and (stored := sha256_of(path.read_bytes())) != digest:
            raise ArchiveConflictError(self.location, key, stored, digest)
        return StoredObject(key, digest, len(data), created)

    def put_many(self, blobs: Sequence[Blob]) -> list[StoredObject | StorageError]:
        """Store several objects over a few threads."""
        return put_concurrently(self, blobs, self.workers)

    def get(self, key: str) -> bytes:
        """Read the object under ``key``."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingObjectError(f"{self.location}: no object {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} under {self.root}: {exc}") from exc

    def head(self, key: str) -> StoredObject | None:
        """Digest and size of the stored file (read in full: a folder keeps no digest)."""
        try:
            data = self.get(key)
        except MissingObjectError:
            return None
        return StoredObject(key, sha256_of(data), len(data), created=False)

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix``."""
        base = self.root / prefix
        if not base.is_dir():
            return iter(())
        return iter(sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                           if p.is_file() and not p.name.startswith(".tmp-")))

    def delete(self, keys: Sequence[str]) -> None:
        """Remove merged index parts."""
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def check(self, writing: bool) -> str | None:
        """A path that is not a folder, or one that cannot be written, stops the run."""
        return folder_problem(self.root, writing)
