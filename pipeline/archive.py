"""Archive artifacts and keep an append-only, queryable Parquet index of them.

Three datasets sit beside the archived objects, each partitioned by period
(hive style, ``<dataset>/period=YYYY-MM/<part>.parquet``):

- ``index/``: one row per delivered invoice and channel (its PDF's key and
  sha256, how it went out, the keys of what carried it);
- ``artifacts/``: one row per archived object (key, sha256, size, the invoices
  it carries), which ``invoices archive verify`` checks the store against;
- ``billed/``: the PO quantities each delivered invoice billed, so later runs
  check cumulative quantities against what was delivered.

A run writes one new part per batch and period, named ``<run_id>-<batch_id>``,
and never rewrites one: a retry that delivers the one invoice a batch failed the
night before adds a part beside the batch's first. ``compact`` merges a period's
parts into one file written before the parts are removed, and readers keep one
row per invoice and channel (per key for artifacts), so a reader racing a
compaction sees every row once.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import polars as pl

from pipeline import keys
from pipeline.documents import InvoiceDocument
from pipeline.schemas import ARTIFACTS, BILLED_LINES, INDEX
from pipeline.storage import ArchiveConflictError, Blob, MissingObjectError, Storage, StoredObject
from pipeline.storage.base import StorageError
from pipeline.validate import History

__all__ = ["Archived", "archive_pdfs", "archive_delivery", "index_rows", "artifact_rows",
           "billed_rows", "write_index", "read_index", "read_artifacts", "load_history",
           "indexed_pairs", "compact", "Compaction", "DATASETS"]

INDEX_PREFIX = "index"
ARTIFACTS_PREFIX = "artifacts"
BILLED_PREFIX = "billed"
READ_WORKERS = 16


def _pdf_blob(doc: InvoiceDocument, pdf: bytes) -> Blob:
    return Blob(keys.pdf_key(doc.number, doc.issue_date), pdf,
                {"invoice-number": doc.number, "kind": "invoice-pdf"})


def archive_pdfs(storage: Storage, pdfs: Sequence[tuple[InvoiceDocument, bytes]]
                 ) -> list[StoredObject | StorageError | ValueError]:
    """Archive the PDFs of invoices about to be sent, concurrently, one result each.

    An invoice is archived before it is sent, so a PDF rendered again for an invoice
    that never went out (a template fixed after the relay was down) may differ from the
    one archived the first time. The first stays, as evidence of what was prepared; the
    new one is kept beside it under a variant key (its digest before the suffix) and is
    the one sent and indexed.
    """
    blobs: list[Blob | ValueError] = []
    for doc, pdf in pdfs:
        try:
            blobs.append(_pdf_blob(doc, pdf))
        except ValueError as exc:  # a number no key can hold: this invoice only
            blobs.append(exc)
    valid = [b for b in blobs if isinstance(b, Blob)]
    stored = iter(storage.put_many(valid))
    results: list[StoredObject | StorageError | ValueError] = []
    for blob in blobs:
        result = blob if isinstance(blob, ValueError) else next(stored)
        if isinstance(blob, Blob) and isinstance(result, ArchiveConflictError):
            try:
                result = storage.put(keys.variant_key(blob.key, result.offered), blob.data,
                                     blob.metadata)
            except StorageError as exc:
                result = exc
        results.append(result)
    return results


def archive_delivery(storage: Storage, channel: str, name: str, data: bytes,
                     numbers: Sequence[str], day: date) -> StoredObject:
    """Keep the exact bytes of a delivered file.

    A name delivered again with other bytes (a print file re-sent on another day by
    ``--resend-in-doubt``) is kept too, under a variant key, never over the first.
    """
    key = keys.delivery_key(channel, name, day)
    metadata = {"invoice-number": _fitting(numbers), "kind": f"delivery-{channel}"}
    try:
        return storage.put(key, data, metadata)
    except ArchiveConflictError as exc:
        return storage.put(keys.variant_key(key, exc.offered), data, metadata)


def _fitting(numbers: Sequence[str], limit: int = 1024) -> str:
    """As many whole invoice numbers as fit object metadata (S3 allows 2 KB in all)."""
    kept: list[str] = []
    for number in numbers:
        if len(" ".join([*kept, number])) > limit:
            return " ".join(kept) + f" (+{len(numbers) - len(kept)})"
        kept.append(number)
    return " ".join(kept)


@dataclass(frozen=True)
class Archived:
    """A delivered invoice: its document, its archived PDF, the channel it went out on,
    ``sent``, ``deposited`` or ``written``, and the archived files that carried it."""

    doc: InvoiceDocument
    pdf: StoredObject
    channel: str
    outcome: str
    carried: tuple[StoredObject, ...]
    run_id: str
    """The run that delivered it."""


def _period(day: date) -> str:
    return f"{day:%Y-%m}"


def index_rows(archived: Sequence[Archived]) -> pl.DataFrame:
    """One index row per delivered invoice and channel."""
    rows = [{
        "invoice_number": a.doc.number, "customer_id": a.doc.customer_id,
        "invoice_type": a.doc.invoice_type, "issue_date": a.doc.issue_date,
        "due_date": a.doc.due_date, "total_net": a.doc.total_net,
        "total_vat": a.doc.total_vat, "total_gross": a.doc.total_gross,
        "currency": a.doc.currency, "credited_invoice_number": a.doc.credited_invoice_number,
        "channel": a.channel, "status": a.outcome,
        "storage_key": a.pdf.key, "sha256": a.pdf.sha256, "bytes": a.pdf.bytes,
        "delivered_keys": [c.key for c in a.carried], "period": _period(a.doc.issue_date),
        "run_id": a.run_id,
    } for a in archived]
    return pl.DataFrame(rows, schema=INDEX)


def artifact_rows(archived: Sequence[Archived]) -> pl.DataFrame:
    """One row per archived object: each PDF, and each delivered file once even when it
    carries several invoices (a print file, an EDI interchange)."""
    found: dict[str, dict[str, object]] = {}
    for a in archived:
        for kind, stored in [("invoice-pdf", a.pdf)] + [(f"delivery-{a.channel}", c)
                                                         for c in a.carried]:
            row = found.setdefault(stored.key, {
                "storage_key": stored.key, "sha256": stored.sha256, "bytes": stored.bytes,
                "kind": kind, "invoice_numbers": [], "period": _period(a.doc.issue_date),
                "run_id": a.run_id})
            row["invoice_numbers"].append(a.doc.number)  # type: ignore[attr-defined]
    return pl.DataFrame(list(found.values()), schema=ARTIFACTS)


def billed_rows(docs: Iterable[InvoiceDocument]) -> pl.DataFrame:
    """The PO lines each delivered invoice billed, with their quantities."""
    rows = [{"invoice_number": d.number, "line_no": line.line_no, "po_number": d.po_number,
             "po_line_no": line.po_line_no, "quantity": line.quantity,
             "period": _period(d.issue_date)}
            for d in docs if d.po_number for line in d.lines if line.po_line_no]
    return pl.DataFrame(rows, schema={**BILLED_LINES, "period": pl.String()})


def _parquet(rows: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    rows.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


def _write_parts(storage: Storage, prefix: str, part: str, rows: pl.DataFrame) -> None:
    for (period,), rows_of in rows.group_by("period", maintain_order=True):
        storage.put(f"{prefix}/period={period}/{part}.parquet", _parquet(rows_of),
                    retain=False)


def write_index(storage: Storage, batch_id: str, archived: Sequence[Archived],
                run_id: str) -> None:
    """Write the batch's index, artifact and billed-line rows: new parts, never rewritten.

    The index part goes last: a run killed in between leaves artifacts listed
    that no index row names yet, which the next run's recovery completes.
    """
    if not archived:
        return
    part = f"{run_id}-{batch_id}"
    ordered = sorted(archived, key=lambda a: (a.doc.number, a.channel))
    _write_parts(storage, ARTIFACTS_PREFIX, part, artifact_rows(ordered))
    billed = billed_rows(a.doc for a in ordered)
    if billed.height:
        _write_parts(storage, BILLED_PREFIX, part, billed)
    _write_parts(storage, INDEX_PREFIX, part, index_rows(ordered))


def _parts(storage: Storage, prefix: str, period: str | None = None) -> list[str]:
    where = f"{prefix}/period={period}" if period else prefix
    return [k for k in storage.list(where) if k.endswith(".parquet")]


def _frames(storage: Storage, parts: Sequence[str]) -> list[pl.DataFrame]:
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        return [pl.read_parquet(io.BytesIO(data)) for data in pool.map(storage.get, parts)]


def _read_parts(storage: Storage, prefix: str, schema: pl.Schema) -> pl.DataFrame:
    """Every part of a dataset, fetched concurrently (a month of nightly runs is
    thousands of parts until it is compacted). A part a compaction removed while it was
    being read is found again in the compacted file, so the listing is taken again."""
    for attempt in range(5):
        try:
            frames = _frames(storage, _parts(storage, prefix))
            break
        except MissingObjectError:
            if attempt == 4:
                raise
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="diagonal_relaxed").select(list(schema)).cast(schema)


def _first_per(rows: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """One row per ``key``, the earliest run's."""
    return (rows.sort("run_id", *key).unique(key, keep="first", maintain_order=True)
            .sort(key))


def read_index(storage: Storage) -> pl.DataFrame:
    """Every delivered invoice and channel once (the first delivery recorded); empty with
    the index schema if there is none."""
    return _first_per(_read_parts(storage, INDEX_PREFIX, INDEX), ["invoice_number", "channel"])


def read_artifacts(storage: Storage) -> pl.DataFrame:
    """Every archived object once, with the digest it was archived with."""
    return _first_per(_read_parts(storage, ARTIFACTS_PREFIX, ARTIFACTS), ["storage_key"])


def load_history(storage: Storage) -> History:
    """What earlier runs delivered, for validation: the index, and the billed lines of
    the invoices it holds (a run stopped before its index part leaves billed lines the
    next run counts only once it has written the invoices' index rows again)."""
    index = read_index(storage)
    billed = _read_parts(storage, BILLED_PREFIX, BILLED_LINES).unique(maintain_order=True)
    return History(index, billed.filter(pl.col("invoice_number").is_in(
        index["invoice_number"].implode())))


def indexed_pairs(index: pl.DataFrame) -> frozenset[tuple[str, str]]:
    """(invoice, channel) of every index row."""
    return frozenset(index.select("invoice_number", "channel").iter_rows())


@dataclass(frozen=True)
class Compaction:
    """What ``compact`` did to one period of one dataset."""

    dataset: str
    period: str
    parts: int
    rows: int
    key: str


_DEDUP: dict[str, tuple[pl.Schema, Callable[[pl.DataFrame], pl.DataFrame]]] = {
    INDEX_PREFIX: (INDEX, lambda f: _first_per(f, ["invoice_number", "channel"])),
    ARTIFACTS_PREFIX: (ARTIFACTS, lambda f: _first_per(f, ["storage_key"])),
    BILLED_PREFIX: (pl.Schema({**BILLED_LINES, "period": pl.String()}),
                    lambda f: f.unique(maintain_order=True).sort("invoice_number", "line_no")),
}
DATASETS = tuple(_DEDUP)


def _periods(storage: Storage, prefix: str) -> list[str]:
    return sorted({k.split("/")[1].removeprefix("period=") for k in _parts(storage, prefix)})


def compact(storage: Storage, period: str | None = None) -> list[Compaction]:
    """Merge each period's parts into one file, every row kept once.

    The merged file is named after the parts it replaces and written (write-once,
    atomically) before they are removed; a compaction stopped in between leaves rows
    twice, which readers and the next compaction fold into one.
    """
    done: list[Compaction] = []
    for prefix, (schema, dedup) in _DEDUP.items():
        for each in [period] if period else _periods(storage, prefix):
            parts = _parts(storage, prefix, each)
            if len(parts) < 2:
                continue
            merged = dedup(pl.concat(_frames(storage, parts), how="diagonal_relaxed")
                           .select(list(schema)).cast(schema))
            key = f"{prefix}/period={each}/compacted-{keys.digest(*parts)[:16]}.parquet"
            try:
                storage.put(key, _parquet(merged), retain=False)
            except StorageError as exc:
                raise StorageError(f"compacting {prefix}/period={each}: {exc}") from exc
            storage.delete([k for k in parts if k != key])
            done.append(Compaction(prefix, each, len(parts), merged.height, key))
    return done
