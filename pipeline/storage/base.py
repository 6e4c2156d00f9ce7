"""The storage protocol: write-once objects addressed by deterministic keys.

An archived object is evidence: the exact bytes an invoice went out with. So a
store never overwrites. Writing a key again with the same bytes is a no-op (a
re-run finds its own work); with other bytes it is an ``ArchiveConflictError``
naming the key and both digests, and the stored object stays as it was.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.errors import StorageError

__all__ = ["Storage", "StoredObject", "Blob", "ArchiveConflictError", "MissingObjectError",
           "check_key", "sha256_of", "put_concurrently"]


@dataclass(frozen=True)
class StoredObject:
    """Where a blob is and what it holds; ``created`` is False when the same bytes were
    already there (nothing was uploaded)."""

    key: str
    sha256: str
    bytes: int
    created: bool = True


@dataclass(frozen=True)
class Blob:
    """An object to store: its key, bytes and metadata (the invoice number it belongs to)."""

    key: str
    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)


class ArchiveConflictError(StorageError):
    """The key already holds other bytes: the archive keeps the first, and says so."""

    def __init__(self, where: str, key: str, stored: str, offered: str) -> None:
        super().__init__(
            f"{where}: {key} already holds other bytes (stored sha256 {stored}, new sha256 "
            f"{offered}); archived objects are never overwritten, the stored one is unchanged")
        self.key, self.stored, self.offered = key, stored, offered


class MissingObjectError(StorageError):
    """No object under the key."""


# Keys are built by ``pipeline.keys`` from escaped components; this is the last line of
# defence, the same for every backend: relative, printable ASCII, no empty, "." or ".."
# component, no backslash.
_KEY = re.compile(r"[\x21-\x7e]+")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise StorageError."""
    parts = key.split("/")
    if (not _KEY.fullmatch(key) or "\\" in key
            or any(p in ("", ".", "..") for p in parts)):
        raise StorageError(f"archive key {key!r} is not a safe relative key")
    return key


def sha256_of(data: bytes) -> str:
    """Hex sha256, the digest the index and object metadata carry."""
    return hashlib.sha256(data).hexdigest()


class Storage(Protocol):
    """An archive store; ``location`` says where, for messages."""

    location: str

    def put(self, key: str, data: bytes,
            metadata: Mapping[str, str] | None = None, *, retain: bool = True) -> StoredObject:
        """Store ``data`` under ``key`` once; readers never see half an object. ``retain``
        False marks what compaction may later remove (index parts)."""
        ...

    def put_many(self, blobs: Sequence[Blob]) -> list[StoredObject | StorageError]:
        """Store several objects concurrently; each result is its object or its error."""
        ...

    def get(self, key: str) -> bytes:
        """The stored bytes; MissingObjectError if there are none."""
        ...

    def head(self, key: str) -> StoredObject | None:
        """The stored object's digest and size, or None."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (a folder-like prefix ending without "/"), sorted."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove index parts a compaction merged (never an archived artifact)."""
        ...

    def check(self, writing: bool) -> str | None:
        """What stops a run from using the store (unreachable, unwritable), or None."""
        ...


def put_concurrently(storage: Storage, blobs: Sequence[Blob],
                     workers: int) -> list[StoredObject | StorageError]:
    """``storage.put`` over a bounded thread pool, results in the order of ``blobs``."""

    def one(blob: Blob) -> StoredObject | StorageError:
        try:
            return storage.put(blob.key, blob.data, blob.metadata)
        except StorageError as exc:
            return exc
        except (OSError, ValueError) as exc:
            return StorageError(f"{storage.location}: cannot write {blob.key}: {exc}")

    if workers <= 1 or len(blobs) <= 1:
        return [one(b) for b in blobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(blobs)),
                            thread_name_prefix="archive-upload") as pool:
        return list(pool.map(one, blobs))
