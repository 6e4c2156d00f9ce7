"""What auditors and customers ask of the archive: find an invoice, fetch its exact
bytes, and prove that what is stored is still what was archived.

Everything here reads the index and the store; nothing writes to the archive.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from pipeline.archive import read_artifacts, read_index
from pipeline.errors import PipelineError
from pipeline.storage import MissingObjectError, Storage
from pipeline.storage.base import check_key, sha256_of

__all__ = ["find", "fetch", "verify", "expected_objects", "Problem", "Verification",
           "NotInArchive"]


class NotInArchive(PipelineError):
    """The index has no such invoice, or the bytes read are not the ones archived."""


def find(index: pl.DataFrame, *, customer: str | None = None, number: str | None = None,
         date_from: date | None = None, date_to: date | None = None,
         status: str | None = None) -> pl.DataFrame:
    """Index rows matching every filter given, by issue date then number."""
    conditions = [pl.lit(True)]
    if customer:
        conditions.append(pl.col("customer_id") == customer)
    if number:
        conditions.append(pl.col("invoice_number") == number)
    if date_from:
        conditions.append(pl.col("issue_date") >= date_from)
    if date_to:
        conditions.append(pl.col("issue_date") <= date_to)
    if status:
        conditions.append(pl.col("status") == status)
    return index.filter(*conditions).sort("issue_date", "invoice_number", "channel")


def expected_objects(index: pl.DataFrame, artifacts: pl.DataFrame) -> dict[str, str | None]:
    """Every object the index names, with the sha256 it was archived with (None when only
    its key is known: a delivered file of an index row without its artifact row)."""
    expected: dict[str, str | None] = {}
    for key in index["delivered_keys"].explode().drop_nulls():
        expected[key] = None
    for key, digest in index.select("storage_key", "sha256").iter_rows():
        expected[key] = digest
    for key, digest in artifacts.select("storage_key", "sha256").iter_rows():
        expected[key] = digest
    return expected


def fetch(storage: Storage, number: str, out: Path) -> list[Path]:
    """Write the archived PDF and delivered files of invoice ``number`` under ``out``
    (keeping their keys as paths), each checked against its archived sha256."""
    index = find(read_index(storage), number=number)
    if not index.height:
        raise NotInArchive(f"invoice {number} is not in the archive index of "
                           f"{storage.location}")
    artifacts = read_artifacts(storage).filter(pl.col("invoice_numbers").list.contains(number))
    expected = expected_objects(index, artifacts)
    root = out.resolve()
    if root.exists() and not root.is_dir():
        raise NotInArchive(f"--out {out} is a file, not a folder")
    fetched: dict[Path, bytes] = {}
    for key, digest in sorted(expected.items()):  # every file checked before one is written
        try:
            data = storage.get(key)
        except MissingObjectError:
            raise NotInArchive(f"{key} is named by the index but missing from "
                               f"{storage.location}; nothing was written") from None
        if digest is not None and (found := sha256_of(data)) != digest:
            raise NotInArchive(f"{key}: stored bytes have sha256 {found}, the index says "
                               f"{digest}; the archive copy was altered; nothing was written")
        path = (root / check_key(key)).resolve()
        if not path.is_relative_to(root):
            raise NotInArchive(f"{key} would be written outside {root}")
        if path.exists() and path.read_bytes() != data:
            raise NotInArchive(f"{path} exists with other bytes; choose an empty --out folder")
        fetched[path] = data
    for path, data in fetched.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return list(fetched)


@dataclass(frozen=True)
class Problem:
    """An object the archive should hold but does not, as archived."""

    key: str
    kind: Literal["missing", "altered", "unindexed"]
    detail: str


@dataclass
class Verification:
    """The outcome of ``verify``: how many objects were re-read, and what was wrong."""

    objects: int
    checked: int
    problems: list[Problem] = field(default_factory=list)


def _check(storage: Storage, key: str, digest: str | None) -> Problem | None:
    try:
        data = storage.get(key)
    except MissingObjectError:
        return Problem(key, "missing", "named by the index, not in the store")
    if digest is not None and (found := sha256_of(data)) != digest:
        return Problem(key, "altered", f"index sha256 {digest}, stored bytes {found}")
    return None


def verify(storage: Storage, sample: float = 1.0, seed: int | None = None,
           workers: int = 8) -> Verification:
    """Re-read every object the index names (or a random ``sample`` share of them) and
    compare its bytes with the archived sha256."""
    if not 0 < sample <= 1:
        raise ValueError(f"sample must be in (0, 1], not {sample}")
    index, artifacts = read_index(storage), read_artifacts(storage)
    expected = expected_objects(index, artifacts)
    chosen: Iterable[str] = sorted(expected)
    if sample < 1 and expected:
        chosen = sorted(random.Random(seed).sample(sorted(expected),
                                                   max(1, round(len(expected) * sample))))
    keys = list(chosen)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = pool.map(lambda k: _check(storage, k, expected[k]), keys)
        problems = [p for p in found if p is not None]
    return Verification(len(expected), len(keys), problems + _unindexed(index, artifacts))


def _unindexed(index: pl.DataFrame, artifacts: pl.DataFrame) -> list[Problem]:
    """Archived invoice PDFs whose invoice has no index row: an index part was lost."""
    orphans = artifacts.filter(pl.col("kind") == "invoice-pdf").explode("invoice_numbers").filter(
        ~pl.col("invoice_numbers").is_in(index["invoice_number"].implode()))
    return [Problem(key, "unindexed", f"invoice {number} was archived as delivered but has "
                                      "no index row (an index part is missing)")
            for key, number in orphans.select("storage_key", "invoice_numbers").iter_rows()]
