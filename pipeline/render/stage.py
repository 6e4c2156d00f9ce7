"""The render stage: a batch's documents, rendered in the worker processes.

Invoices the journal already records as delivered on their channel are not
rendered again; what is rendered goes on to the delivery stage (``delivery``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from pipeline import keys
from pipeline.batching import Batch
from pipeline.channels.platform import route
from pipeline.context import RunContext
from pipeline.documents import InvoiceDocument, build_documents
from pipeline.ingest import ExtractBundle
from pipeline.progress import progress
from pipeline.render.worker import Rendered, w_render_batch

__all__ = ["RenderedBatch", "render_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderedBatch:
    """A batch after rendering: its documents, their PDFs, and what was already delivered."""

    batch: Batch
    docs: dict[str, InvoiceDocument]
    rendered: list[Rendered]
    already_delivered: dict[str, str]
    render_s: float
    error: str | None = None
    """Why the batch could not be prepared at all; every invoice of it then fails with it."""


def _credited_elsewhere(bundle: ExtractBundle, numbers: Sequence[str]) -> list[str]:
    """The invoices the batch's credit notes correct that this extract does not hold."""
    credited = bundle.invoices.filter(
        pl.col("invoice_number").is_in(pl.Series(numbers, dtype=pl.String).implode())
        & pl.col("credited_invoice_number").is_not_null())["credited_invoice_number"]
    return sorted(set(credited) - set(bundle.invoices["invoice_number"]))


def render_batch(bundle: ExtractBundle, batch: Batch, ctx: RunContext) -> RenderedBatch:
    """Build the batch's documents and render those not yet delivered."""
    start = time.perf_counter()
    try:
        docs = [route(doc, ctx.settings) for doc in build_documents(
            bundle, batch.numbers, ctx.settings.seller,
            ctx.issue_dates(_credited_elsewhere(bundle, batch.numbers)))]
    except Exception as exc:  # one bad batch must not stop the night: its invoices fail
        progress().advance("render", len(batch.numbers))
        return RenderedBatch(batch, {}, [], {}, time.perf_counter() - start,
                             error=f"batch {batch.batch_id} could not be prepared: "
                                   f"{type(exc).__name__}: {exc}")
    done = ctx.journal.delivered_keys(k for d in docs for k in keys.delivered_keys(d.number))
    todo = [d for d in docs if not done.intersection(keys.delivered_keys(d.number))]
    waiting = {d.number for d in todo}
    already = {d.number: d.channel for d in docs if d.number not in waiting}
    render = ctx.settings.render
    chunks = [todo[i:i + render.chunk_size] for i in range(0, len(todo), render.chunk_size)]
    futures = [ctx.executor.submit(w_render_batch, chunk, str(render.templates_dir),
                                   render.engine) for chunk in chunks]
    rendered: list[Rendered] = []
    deadline = time.monotonic() + render.batch_timeout_s
    for chunk, future in zip(chunks, futures, strict=True):
        try:
            rendered += future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            future.cancel()
            rendered += [Rendered(d.number, None, None, f"invoice {d.number}: not rendered "
                                  f"within the batch's {render.batch_timeout_s:.0f} s "
                                  "(INVOICES_RENDER__BATCH_TIMEOUT_S)") for d in chunk]
        except Exception as exc:  # a worker that died fails its chunk, not the night
            rendered += [Rendered(d.number, None, None, f"invoice {d.number}: render worker "
                                  f"failed: {type(exc).__name__}: {exc}") for d in chunk]
    for result in rendered:  # the workers' log records, in the run's log
        for level, name, message in result.logs:
            log.log(level, "batch %s invoice %s: %s: %s", batch.batch_id, result.number, name,
                    message)
    progress().advance("render", len(docs))
    return RenderedBatch(batch, {d.number: d for d in docs}, rendered, already,
                         time.perf_counter() - start)
