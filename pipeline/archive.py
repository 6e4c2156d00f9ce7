"""Archive artifacts and keep a queryable Parquet index of every delivered invoice.

The index is append-only: one part per run, batch and period,
``index/period=YYYY-MM/<run_id>-<batch_id>.parquet``, holding the invoices that
run delivered in that batch; a re-run that delivers nothing writes nothing, and
``read_index`` sees every part as one table. Beside it,
``billed/`` keeps the PO quantities each delivered invoice billed, so later
runs check cumulative quantities against what was delivered.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from pipeline import keys
from pipeline.channels.base import Outgoing
from pipeline.schemas import BILLED_LINES, INDEX
from pipeline.storage import Storage, StoredObject
from pipeline.validate import History

__all__ = ["Archived", "archive_pdf", "index_rows", "billed_rows", "write_index", "read_index",
           "load_history"]

INDEX_PREFIX = "index"
BILLED_PREFIX = "billed"


def archive_pdf(storage: Storage, item: Outgoing) -> StoredObject:
    """Store an invoice's PDF under its deterministic key."""
    return storage.put(keys.pdf_key(item.doc.number, item.doc.issue_date), item.pdf)


@dataclass(frozen=True)
class Archived:
    """A delivered invoice: its PDF in the archive and the delivered files that carry it."""

    item: Outgoing
    pdf: StoredObject
    delivered_keys: tuple[str, ...]


def index_rows(archived: Sequence[Archived], run_id: str) -> pl.DataFrame:
    """One index row per delivered invoice."""
    items = [(a.item, a.pdf, a.delivered_keys) for a in archived]
    rows = [{
        "invoice_number": o.doc.number, "customer_id": o.doc.customer_id,
        "invoice_type": o.doc.invoice_type, "issue_date": o.doc.issue_date,
        "due_date": o.doc.due_date, "total_net": o.doc.total_net,
        "total_vat": o.doc.total_vat, "total_gross": o.doc.total_gross,
        "currency": o.doc.currency, "credited_invoice_number": o.doc.credited_invoice_number,
        "channel": o.doc.channel, "status": "delivered",
        "storage_key": stored.key, "sha256": stored.sha256, "bytes": stored.bytes,
        "delivered_keys": list(delivered), "period": f"{o.doc.issue_date:%Y-%m}",
        "run_id": run_id,
    } for o, stored, delivered in items]
    return pl.DataFrame(rows, schema=INDEX)


def billed_rows(items: Sequence[Outgoing]) -> pl.DataFrame:
    """The PO lines each delivered invoice billed, with their quantities."""
    rows = [{"invoice_number": o.doc.number, "po_number": o.doc.po_number,
             "po_line_no": line.po_line_no, "quantity": line.quantity,
             "period": f"{o.doc.issue_date:%Y-%m}"}
            for o in items if o.doc.po_number for line in o.doc.lines if line.po_line_no]
    return pl.DataFrame(rows, schema={**BILLED_LINES, "period": pl.String()})


def _write_parts(storage: Storage, prefix: str, part: str, rows: pl.DataFrame) -> None:
    for (period,), rows_of in rows.sort("invoice_number").group_by("period",
                                                                    maintain_order=True):
        buffer = io.BytesIO()
        rows_of.write_parquet(buffer, compression="zstd")
        storage.put(f"{prefix}/period={period}/{part}.parquet", buffer.getvalue())


def write_index(storage: Storage, batch_id: str, archived: Sequence[Archived],
                run_id: str) -> None:
    """Write the batch's index rows and billed lines: one new part per run, batch and period.

    Parts are never rewritten: a retry that delivers the one invoice a batch failed the
    night before adds a part of one row beside the batch's first part, instead of
    replacing it.
    """
    part = f"{run_id}-{batch_id}"
    _write_parts(storage, INDEX_PREFIX, part, index_rows(archived, run_id))
    billed = billed_rows([a.item for a in archived])
    if billed.height:
        _write_parts(storage, BILLED_PREFIX, part, billed)


def _read_parts(storage: Storage, prefix: str, schema: pl.Schema) -> pl.DataFrame:
    parts = [pl.read_parquet(io.BytesIO(storage.get(k)))
             for k in storage.list(prefix) if k.endswith(".parquet")]
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts, how="diagonal_relaxed").select(list(schema)).cast(schema)


def read_index(storage: Storage) -> pl.DataFrame:
    """Every index part as one frame, one row per invoice and channel (the first delivery
    recorded), empty with the index schema if there is none."""
    return (_read_parts(storage, INDEX_PREFIX, INDEX).sort("run_id", "invoice_number")
            .unique(["invoice_number", "channel"], keep="first", maintain_order=True)
            .sort("invoice_number"))


def load_history(storage: Storage) -> History:
    """What earlier runs delivered, for validation."""
    return History(read_index(storage),
                   _read_parts(storage, BILLED_PREFIX, BILLED_LINES).unique(maintain_order=True))
