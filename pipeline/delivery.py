"""Render and deliver one batch, exactly once per invoice and channel.

Per invoice: render (in a worker) -> archive the PDF -> claim in the ledger ->
send on the customer's channel -> archive what was sent -> mark sent or
failed -> index. Invoices already sent are skipped before rendering.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from pipeline import keys
from pipeline.archive import Archived, archive_pdf, write_index
from pipeline.batching import Batch
from pipeline.channels.base import Outgoing
from pipeline.context import RunContext
from pipeline.documents import InvoiceDocument, build_documents
from pipeline.errors import PipelineError
from pipeline.ingest import ExtractBundle
from pipeline.progress import progress
from pipeline.render.worker import Rendered, w_render_batch
from pipeline.storage import StoredObject

__all__ = ["RenderedBatch", "BatchReport", "render_batch", "deliver_batch"]


@dataclass(frozen=True)
class RenderedBatch:
    """A batch after rendering: its documents, their PDFs, and what was already sent."""

    batch: Batch
    docs: dict[str, InvoiceDocument]
    rendered: list[Rendered]
    already_delivered: dict[str, str]
    render_s: float
    error: str | None = None
    """Why the batch could not be prepared at all; every invoice of it then fails with it."""


@dataclass
class BatchReport:
    """The outcome of one batch; every invoice of the batch is in exactly one dict."""

    batch_id: str
    delivered: dict[str, str] = field(default_factory=dict)
    already_delivered: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    render_s: float = 0.0
    deliver_s: float = 0.0

    def by_channel(self) -> Counter[str]:
        """Delivered invoices (new or earlier) per channel."""
        return Counter(self.delivered.values()) + Counter(self.already_delivered.values())


def render_batch(bundle: ExtractBundle, batch: Batch, ctx: RunContext) -> RenderedBatch:
    """Build the batch's documents and render those not yet delivered."""
    start = time.perf_counter()
    try:
        docs = build_documents(bundle, batch.numbers, ctx.settings.seller)
    except Exception as exc:  # one bad batch must not stop the night: its invoices fail
        progress().advance("render", len(batch.numbers))
        return RenderedBatch(batch, {}, [], {}, time.perf_counter() - start,
                             error=f"batch {batch.batch_id} could not be prepared: "
                                   f"{type(exc).__name__}: {exc}")
    sent = ctx.ledger.sent_keys(keys.idempotency_key(d.number, d.channel) for d in docs)
    todo = [d for d in docs if keys.idempotency_key(d.number, d.channel) not in sent]
    already = {d.number: d.channel for d in docs if d not in todo}
    render = ctx.settings.render
    chunks = [todo[i:i + render.chunk_size] for i in range(0, len(todo), render.chunk_size)]
    futures = [ctx.executor.submit(w_render_batch, chunk, str(render.templates_dir),
                                   render.engine) for chunk in chunks]
    rendered = [result for future in futures for result in future.result()]
    progress().advance("render", len(docs))
    return RenderedBatch(batch, {d.number: d for d in docs}, rendered, already,
                         time.perf_counter() - start)


def deliver_batch(rendered: RenderedBatch, ctx: RunContext) -> BatchReport:
    """Archive, deliver and record every rendered document of the batch."""
    start = time.perf_counter()
    report = BatchReport(rendered.batch.batch_id,
                         already_delivered=dict(rendered.already_delivered),
                         render_s=rendered.render_s)
    if rendered.error:
        report.failed = dict.fromkeys(rendered.batch.numbers, rendered.error)
        progress().advance("deliver", len(rendered.batch.numbers))
        return report
    by_channel: dict[str, list[Outgoing]] = {}
    stored: dict[str, StoredObject] = {}
    for result in rendered.rendered:
        doc = rendered.docs[result.number]
        if result.pdf is None or result.sha256 is None:
            report.failed[doc.number] = result.error or "render produced no PDF"
            continue
        item = Outgoing(doc, result.pdf, result.sha256)
        key = keys.idempotency_key(doc.number, doc.channel)
        if not ctx.ledger.claim(key, doc.number, doc.channel, item.sha256, ctx.run_id):
            report.already_delivered[doc.number] = doc.channel
            continue
        try:
            stored[doc.number] = archive_pdf(ctx.storage, item)
        except (PipelineError, OSError, ValueError) as exc:  # this invoice only
            problem = f"invoice {doc.number}: not archived, not delivered: {exc}"
            ctx.ledger.finish(key, "failed", problem)
            report.failed[doc.number] = problem
            continue
        by_channel.setdefault(doc.channel, []).append(item)

    delivered_items: list[Archived] = []
    for channel_name, items in by_channel.items():
        channel = ctx.channels[channel_name]
        try:
            sent = channel.send(items, rendered.batch.batch_id)
        except Exception as exc:  # a channel bug fails its items of this batch, not the night
            problem = (f"{channel_name} channel failed for batch {rendered.batch.batch_id}: "
                       f"{type(exc).__name__}: {exc}")
            for item in items:
                ctx.ledger.finish(keys.idempotency_key(item.doc.number, channel_name), "failed",
                                  problem)
                report.failed[item.doc.number] = problem
            continue
        carried: dict[str, list[str]] = {}
        for file in sent.files:
            stored_file = ctx.storage.put(keys.delivery_key(channel_name, file.name), file.data)
            for number in file.numbers:
                carried.setdefault(number, []).append(stored_file.key)
        items_by_number = {i.doc.number: i for i in items}
        for receipt in sent.receipts:
            key = keys.idempotency_key(receipt.number, channel_name)
            if receipt.error:
                ctx.ledger.finish(key, "failed", receipt.error)
                report.failed[receipt.number] = receipt.error
            else:
                ctx.ledger.finish(key, "sent", receipt.detail)
                report.delivered[receipt.number] = channel_name
                delivered_items.append(Archived(items_by_number[receipt.number],
                                                stored[receipt.number],
                                                tuple(carried.get(receipt.number, ()))))
    if delivered_items:
        write_index(ctx.storage, rendered.batch.batch_id, delivered_items, ctx.run_id)
    report.deliver_s = time.perf_counter() - start
    progress().advance("deliver", len(rendered.docs))
    return report
