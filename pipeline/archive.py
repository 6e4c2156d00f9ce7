"""Archive artifacts and keep a queryable Parquet index of every delivered invoice.

The index is written as one part per batch and period,
``index/period=YYYY-MM/<batch_id>.parquet``, holding only the invoices that
batch delivered for the first time; a re-run that delivers nothing writes
nothing, and ``read_index`` sees every part as one table.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import polars as pl

from pipeline import keys
from pipeline.channels.base import Outgoing
from pipeline.schemas import INDEX
from pipeline.storage import Storage, StoredObject

__all__ = ["archive_pdf", "index_rows", "write_index", "read_index", "archived_numbers"]

INDEX_PREFIX = "index"


def archive_pdf(storage: Storage, item: Outgoing) -> StoredObject:
    """Store an invoice's PDF under its deterministic key."""
    return storage.put(keys.pdf_key(item.doc.number, item.doc.issue_date), item.pdf)


def index_rows(items: Sequence[tuple[Outgoing, StoredObject]], run_id: str) -> pl.DataFrame:
    """One index row per delivered invoice."""
    rows = [{
        "invoice_number": o.doc.number, "customer_id": o.doc.customer_id,
        "invoice_type": o.doc.invoice_type, "issue_date": o.doc.issue_date,
        "due_date": o.doc.due_date, "total_net": o.doc.total_net,
        "total_vat": o.doc.total_vat, "total_gross": o.doc.total_gross,
        "currency": o.doc.currency, "channel": o.doc.channel, "status": "delivered",
        "storage_key": stored.key, "sha256": stored.sha256, "bytes": stored.bytes,
        "period": f"{o.doc.issue_date:%Y-%m}", "run_id": run_id,
    } for o, stored in items]
    return pl.DataFrame(rows, schema=INDEX)


def write_index(storage: Storage, batch_id: str, rows: pl.DataFrame) -> list[str]:
    """Write the batch's index rows, one part per period; returns the keys written."""
    written = []
    for (period,), part in rows.sort("invoice_number").group_by("period", maintain_order=True):
        buffer = io.BytesIO()
        part.write_parquet(buffer, compression="zstd")
        key = f"{INDEX_PREFIX}/period={period}/{batch_id}.parquet"
        storage.put(key, buffer.getvalue())
        written.append(key)
    return written


def read_index(storage: Storage) -> pl.DataFrame:
    """Every index part as one frame (empty with the index schema if none)."""
    parts = [pl.read_parquet(io.BytesIO(storage.get(k)))
             for k in storage.list(INDEX_PREFIX) if k.endswith(".parquet")]
    if not parts:
        return pl.DataFrame(schema=INDEX)
    return pl.concat(parts, how="vertical_relaxed").sort("invoice_number")


def archived_numbers(storage: Storage) -> pl.Series:
    """Numbers of every invoice already in the archive."""
    return read_index(storage)["invoice_number"]
