"""The delivery stage: each rendered invoice delivered exactly once on its channel.

Per invoice: archive the PDF -> claim the delivery in the journal (one winner
across runs) -> the channel's formatter builds the parcels -> its transport
moves them -> the journal records ``sent`` (a server took it), ``written`` (an
outbox holds it) or ``failed`` (with the error's class and the server's reply)
-> the archive keeps what went out and the index lists it. Every exception
becomes a per-invoice failure: no journal row is ever left ``started`` by a
run that goes on, and one bad invoice never stops its batch.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline import keys
from pipeline.archive import Archived, archive_delivery, archive_pdfs, write_index
from pipeline.channels.base import Outgoing
from pipeline.channels.transports.base import (
    Outcome,
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
)
from pipeline.context import RunContext
from pipeline.documents import InvoiceDocument
from pipeline.errors import PipelineError
from pipeline.journal import Delivery, TDeliveryState, TErrorClass
from pipeline.progress import progress
from pipeline.render.stage import RenderedBatch
from pipeline.storage import StoredObject

__all__ = ["BatchReport", "deliver_batch"]

POLL_S = 0.5


@dataclass
class BatchReport:
    """The outcome of one batch; every invoice of the batch is in exactly one of
    ``delivered``, ``already_delivered``, ``failed`` and ``in_doubt``."""

    batch_id: str
    delivered: dict[str, str] = field(default_factory=dict)
    """Invoice -> channel, delivered by this run."""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """Invoice -> ``sent``, ``deposited`` or ``written``, for those delivered by this run."""
    already_delivered: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    failure_class: dict[str, TErrorClass] = field(default_factory=dict)
    in_doubt: dict[str, str] = field(default_factory=dict)
    bounced: set[str] = field(default_factory=set)
    """Failed invoices a server refused for good (5xx): the print fallback takes them."""
    notes: list[str] = field(default_factory=list)
    """Problems around the deliveries that did not change their outcome."""
    render_s: float = 0.0
    deliver_s: float = 0.0

    def by_channel(self) -> Counter[str]:
        """Delivered invoices (new or earlier) per channel."""
        return Counter(self.delivered.values()) + Counter(self.already_delivered.values())

    def fail(self, number: str, problem: str, error_class: TErrorClass = "terminal") -> None:
        """Record an invoice that did not go out."""
        self.failed[number] = problem
        self.failure_class[number] = error_class


class _ChannelDelivery:
    """One channel's items of one batch, through formatter and transport.

    Each parcel's invoices are claimed just before the parcel goes out, under the
    channel's lock, and recorded as soon as their last parcel is done: a run that
    dies leaves in doubt only what was on the wire, never what was merely queued.
    """

    def __init__(self, ctx: RunContext, channel: str, items: list[Outgoing],
                 pdfs: dict[str, StoredObject], report: BatchReport,
                 waiting: dict[str, str]) -> None:
        self.ctx, self.channel, self.items, self.report = ctx, channel, items, report
        self.pdfs = pdfs
        """The archived PDF of each invoice."""
        self.waiting = waiting
        self.by_number = {i.doc.number: i for i in items}
        self.open: set[str] = set()
        """Claimed by this run, without an outcome yet."""
        self.settled: set[str] = set()
        """Not to be sent by this run any more (delivered, failed, elsewhere, in doubt)."""
        self.replies: dict[str, list[str]] = defaultdict(list)
        self.outcomes: dict[str, set[Outcome]] = defaultdict(set)
        self.carried: dict[str, list[StoredObject]] = defaultdict(list)
        self.delivered: list[Archived] = []

    def run(self) -> list[Archived]:
        """Deliver; returns the delivered invoices with their archived PDF and the archived
        files that carried them."""
        try:
            formatted = self.ctx.formatters[self.channel].format(
                self.items, self.report.batch_id)
            remaining = Counter(n for p in formatted.parcels for n in p.numbers)
            for number, reason in formatted.failures.items():
                if self._claim([number]):
                    self._fail(number, reason, "terminal")
            for number in self.by_number.keys() - remaining.keys() - formatted.failures.keys():
                if self._claim([number]):
                    self._fail(number, f"the {self.channel} formatter produced nothing for it",
                               "terminal")
            for parcel in formatted.parcels:
                with self.ctx.locks[self.channel]:
                    if self._claim(parcel.numbers):
                        self._deliver(parcel)
                    else:
                        self._not_ours(parcel)
                    for number in parcel.numbers:
                        remaining[number] -= 1
                        if remaining[number] == 0:
                            self._conclude(number)
        except Exception as exc:  # a formatter or journal bug: account for every invoice
            problem = f"{self.channel} delivery failed: {type(exc).__name__}: {exc}"
            for number in list(self.open):
                if self.outcomes[number]:  # it went out: never call that a failure
                    self.open.discard(number)
                    self.settled.add(number)
                    self.report.in_doubt[number] = (
                        f"{self.channel}: went out, but the outcome could not be recorded "
                        f"({problem}); check before re-sending with --resend-in-doubt")
                else:
                    self._fail(number, problem, "terminal")
            for number in self.by_number.keys() - self.settled:
                self.report.fail(number, problem, "terminal")
        return self.delivered

    def _claim(self, numbers: Sequence[str]) -> bool:
        """Claim every invoice of a parcel not yet held by this run, all or none: a file
        carrying several invoices (a print file, an interchange) goes out whole, by the
        one run that holds all of them. True when this run holds them all."""
        wanted = [n for n in numbers if n not in self.open]
        if any(n in self.settled for n in wanted):
            return False
        if not wanted:
            return True
        status = self.ctx.journal.claim_all(
            [Delivery(keys.idempotency_key(n, self.channel), n, self.channel,
                      self.by_number[n].sha256) for n in wanted],
            self.ctx.run_id, self.ctx.transports[self.channel].name, self.ctx.resend_in_doubt)
        by_number = {n: status[keys.idempotency_key(n, self.channel)] for n in wanted}
        if all(v == "claimed" for v in by_number.values()):
            self.open.update(wanted)
            return True
        for number, claim in by_number.items():
            if claim == "free":  # claimable, but its file is held elsewhere: next run
                continue
            self.settled.add(number)
            if claim == "delivered":
                self.report.already_delivered[number] = self.channel
            elif claim == "in_flight":
                self.waiting[number] = self.channel
            else:
                self.report.in_doubt[number] = (
                    f"{self.channel}: started by a run that stopped before recording the "
                    "outcome; re-send with --resend-in-doubt")
        return False

    def _not_ours(self, parcel: Parcel) -> None:
        """A parcel this run does not send: some of its invoices are held elsewhere."""
        held = next(n for n in parcel.numbers if n in self.settled)
        problem = f"{parcel.name} not sent: {held} in it is not this run's to deliver"
        for number in parcel.numbers:
            if number in self.open:
                self._fail(number, problem, "transient")
            elif number not in self.settled:  # never claimed: nothing to record in the journal
                self.settled.add(number)
                self.report.fail(number, problem, "transient")

    def _deliver(self, parcel: Parcel) -> None:
        try:
            receipt = self.ctx.transports[self.channel].deliver(parcel)
        except TransientDeliveryError as exc:
            if getattr(exc, "in_doubt", False):  # it may have gone out: never resent blindly
                for number in parcel.numbers:
                    self._doubt(number, f"{parcel.name}: {exc}")
                return
            for number in parcel.numbers:
                self._fail(number, f"{parcel.name}: {exc}", "transient")
            return
        except TerminalDeliveryError as exc:
            bounced = getattr(exc, "code", 0) // 100 == 5  # a server refused it for good
            for number in parcel.numbers:
                self._fail(number, f"{parcel.name}: {exc}", "terminal", bounced)
            return
        except Exception as exc:  # a transport bug fails the parcel's invoices, not the batch
            for number in parcel.numbers:
                self._fail(number, f"{parcel.name}: {type(exc).__name__}: {exc}", "terminal")
            return
        reply = receipt.reply + ("; refused " + ", ".join(f"{a} ({r})" for a, r in
                                                          receipt.refused.items())
                                 if receipt.refused else "")
        if parcel.addressees and set(parcel.addressees) <= set(receipt.refused):
            bounced = all(r[:1] == "5" for r in receipt.refused.values())
            for number in parcel.numbers:  # only copies went out (Cc, Bcc): not delivered
                self._fail(number, f"{parcel.name}: every addressee refused; {reply}",
                           "terminal", bounced)
            return
        archived = self._archive(parcel)
        for number in parcel.numbers:
            self.outcomes[number].add(receipt.outcome)
            self.replies[number].append(reply)
            if archived:
                self.carried[number].append(archived)

    def _archive(self, parcel: Parcel) -> StoredObject | None:
        """Keep the exact bytes that went out; they went out even if this fails."""
        day = max(self.by_number[n].doc.issue_date for n in parcel.numbers)
        try:
            return archive_delivery(self.ctx.storage, self.channel, parcel.name, parcel.data,
                                    parcel.numbers, day)
        except (PipelineError, OSError, ValueError) as exc:
            self.report.notes.append(f"{parcel.name} went out but was not archived: {exc}")
            for number in parcel.numbers:
                self.replies[number].append(f"{parcel.name} not archived: {exc}")
            return None

    def _conclude(self, number: str) -> None:
        """The invoice's last parcel is done: record it delivered if all of them went out."""
        if number not in self.open:
            return
        outcome: Outcome = next(o for o in ("sent", "deposited", "written")
                                if o in self.outcomes[number])
        self.open.discard(number)
        self.settled.add(number)
        try:
            self.ctx.journal.finish(keys.idempotency_key(number, self.channel),
                                    self.ctx.run_id, outcome, "; ".join(self.replies[number]),
                                    archived=[c.key for c in self.carried[number]])
        except Exception as exc:  # it went out: in doubt, never failed (a retry would resend)
            self.report.in_doubt[number] = (f"{self.channel}: went out, but the journal could "
                                            f"not record it ({exc}); check before re-sending")
            return
        self.report.delivered[number] = self.channel
        self.report.outcomes[number] = outcome
        self.delivered.append(Archived(self.by_number[number].doc, self.pdfs[number],
                                       self.channel, outcome, tuple(self.carried[number]),
                                       self.ctx.run_id))

    def _doubt(self, number: str, problem: str) -> None:
        if number not in self.open:
            return
        self.open.discard(number)
        self.settled.add(number)
        self.report.in_doubt[number] = (f"{self.channel}: {problem}; check, then re-send with "
                                        "--resend-in-doubt")
        self._record(number, "in_doubt", problem, None)

    def _fail(self, number: str, problem: str, error_class: TErrorClass,
              bounced: bool = False) -> None:
        if number not in self.open:
            return
        if self.outcomes[number]:  # part of it went out (an earlier parcel): not a failure
            self._doubt(number, f"partly delivered, then {problem}")
            return
        self.open.discard(number)
        self.settled.add(number)
        self.report.fail(number, problem, error_class)
        if bounced:
            self.report.bounced.add(number)
        self._record(number, "failed", problem, error_class)

    def _record(self, number: str, state: TDeliveryState, reply: str,
                error_class: TErrorClass | None) -> None:
        """Record an outcome; if the journal cannot, the row stays ``started`` and the next
        run lists it in doubt, which errs on the side of never sending twice."""
        try:
            self.ctx.journal.finish(keys.idempotency_key(number, self.channel),
                                    self.ctx.run_id, state, reply, error_class)
        except Exception as exc:
            self.report.notes.append(f"{number}: outcome '{state}' not recorded: {exc}")


def _wait_for_others(ctx: RunContext, waiting: dict[str, str], report: BatchReport) -> None:
    """Deliveries another live run has started: wait for their outcome, within limits."""
    deadline = time.monotonic() + ctx.settings.delivery.wait_for_other_runs_s
    while waiting:
        for number, channel in list(waiting.items()):
            state = ctx.journal.settle(keys.idempotency_key(number, channel))
            if state == "in_flight":
                continue
            del waiting[number]
            if state == "delivered":
                report.already_delivered[number] = channel
            elif state == "in_doubt":
                report.in_doubt[number] = (f"{channel}: started by a run that stopped before "
                                           "recording the outcome")
            else:
                report.fail(number, f"{channel}: another run's attempt {state}; the next run "
                                    "retries it", "transient")
        if waiting and time.monotonic() > deadline:
            for number, channel in waiting.items():
                report.fail(number, f"{channel}: still being delivered by another run after "
                                    f"{ctx.settings.delivery.wait_for_other_runs_s:.0f} s",
                            "transient")
            return
        if waiting:
            time.sleep(POLL_S)


def _fallbacks(ctx: RunContext, emails: list[Outgoing], report: BatchReport) -> list[Outgoing]:
    """Email invoices a server refused for good (5xx) that go to print instead, when
    settings say so.

    The journal keeps both deliveries: the email ``failed`` with the server's reply,
    then the print one; the invoice counts once, as delivered by print if that works.
    """
    if not ctx.settings.delivery.fallback_to_print:
        return []
    moved = []
    for item in emails:
        number, buyer = item.doc.number, item.doc.buyer
        if number in report.bounced and number in report.failed \
                and buyer.address_line1.strip() and buyer.city.strip():
            del report.failed[number], report.failure_class[number]
            moved.append(item)
    return moved


def _unindexed(ctx: RunContext, docs: dict[str, InvoiceDocument],
               report: BatchReport) -> list[Archived]:
    """Invoices delivered by a run that stopped before writing its index part: their rows
    again, from the journal (state, and the keys of what carried them) and the archive
    (the PDF's digest), so every delivered invoice has its index row."""
    wanted = [k for n in report.already_delivered for k in keys.delivered_keys(n)
              if (n, k.partition(":")[0]) not in ctx.indexed]
    if not wanted:
        return []
    found: list[Archived] = []
    for row in ctx.journal.final_rows(wanted).values():
        doc = docs[row.invoice_number]
        key = keys.pdf_key(doc.number, doc.issue_date)
        try:  # the PDF that was sent: the journal has its digest
            pdf = ctx.storage.head(key)
            if pdf is not None and row.sha256 and pdf.sha256 != row.sha256:
                pdf = ctx.storage.head(keys.variant_key(key, row.sha256))
            carried = [c for k in row.archived if (c := ctx.storage.head(k)) is not None]
        except (PipelineError, ValueError) as exc:
            report.notes.append(f"{doc.number}: delivered, index row not rebuilt: {exc}")
            continue
        if pdf is None or (row.sha256 and pdf.sha256 != row.sha256):
            report.notes.append(f"{doc.number}: delivered by run {row.run_id}, but the PDF "
                                f"it was sent with (sha256 {row.sha256}) is not in the archive")
            continue
        found.append(Archived(doc, pdf, row.channel, row.state, tuple(carried),
                              row.run_id or ctx.run_id))
    return found


def deliver_batch(rendered: RenderedBatch, ctx: RunContext) -> BatchReport:
    """Archive, claim, deliver, record and index every rendered document of the batch."""
    start = time.perf_counter()
    report = BatchReport(rendered.batch.batch_id,
                         already_delivered=dict(rendered.already_delivered),
                         render_s=rendered.render_s)
    if rendered.error:
        for number in rendered.batch.numbers:
            report.fail(number, rendered.error)
        progress().advance("deliver", len(rendered.batch.numbers))
        return report
    todo: dict[str, list[Outgoing]] = defaultdict(list)
    waiting: dict[str, str] = {}
    done = ctx.journal.delivered_keys(
        key for r in rendered.rendered for key in keys.delivered_keys(r.number))
    items: list[Outgoing] = []
    for result in rendered.rendered:
        doc = rendered.docs[result.number]
        if result.pdf is None or result.sha256 is None:
            report.fail(doc.number, result.error or "render produced no PDF")
        elif done.intersection(keys.delivered_keys(doc.number)):
            report.already_delivered[doc.number] = doc.channel
        else:
            items.append(Outgoing(doc, result.pdf, result.sha256))
    stored: dict[str, StoredObject] = {}
    # Every PDF is archived before anything is sent, all of the batch's at once.
    for item, pdf in zip(items, archive_pdfs(ctx.storage, [(i.doc, i.pdf) for i in items]),
                         strict=True):
        if isinstance(pdf, StoredObject):
            stored[item.doc.number] = pdf
            todo[item.doc.channel].append(item)
        else:  # this invoice only
            report.fail(item.doc.number, f"invoice {item.doc.number}: not archived, not "
                                         f"delivered: {pdf}")

    delivered: list[Archived] = []
    for channel in sorted(todo, key=lambda c: c == "print"):  # print last: it takes fallbacks
        chosen = todo[channel] + (_fallbacks(ctx, todo.get("email", []), report)
                                  if channel == "print" else [])
        delivered += _ChannelDelivery(ctx, channel, chosen, stored, report, waiting).run()
    if "print" not in todo and (fallbacks := _fallbacks(ctx, todo.get("email", []), report)):
        delivered += _ChannelDelivery(ctx, "print", fallbacks, stored, report, waiting).run()
    _wait_for_others(ctx, waiting, report)
    delivered += _unindexed(ctx, rendered.docs, report)
    try:
        write_index(ctx.storage, rendered.batch.batch_id, delivered, ctx.run_id)
    except (PipelineError, OSError) as exc:  # delivered all the same: the next run indexes
        report.notes.append(f"batch {rendered.batch.batch_id}: index not written ({exc}); "
                            "the next run writes the missing rows")
    report.deliver_s = time.perf_counter() - start
    progress().advance("deliver", len(rendered.docs))
    return report
