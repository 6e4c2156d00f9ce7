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
from dataclasses import dataclass, field

from pipeline import keys
from pipeline.archive import Archived, archive_pdf, write_index
from pipeline.channels.base import Outgoing
from pipeline.channels.transports.base import (
    Outcome,
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
)
from pipeline.context import RunContext
from pipeline.errors import PipelineError
from pipeline.journal import TDeliveryState, TErrorClass
from pipeline.progress import progress
from pipeline.render.stage import RenderedBatch
from pipeline.storage import StoredObject

__all__ = ["BatchReport", "deliver_batch"]

POLL_S = 0.5
# Journal rows of whole files (``parcel:<channel>:<name>``), beside the invoices' rows.
PARCEL_CHANNEL = "parcel"


@dataclass
class BatchReport:
    """The outcome of one batch; every invoice of the batch is in exactly one of
    ``delivered``, ``already_delivered``, ``failed`` and ``in_doubt``."""

    batch_id: str
    delivered: dict[str, str] = field(default_factory=dict)
    """Invoice -> channel, delivered by this run."""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """Invoice -> ``sent`` or ``written``, for those delivered by this run."""
    already_delivered: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    failure_class: dict[str, TErrorClass] = field(default_factory=dict)
    in_doubt: dict[str, str] = field(default_factory=dict)
    render_s: float = 0.0
    deliver_s: float = 0.0

    def by_channel(self) -> Counter[str]:
        """Delivered invoices (new or earlier) per channel."""
        return Counter(self.delivered.values()) + Counter(self.already_delivered.values())

    def fail(self, number: str, problem: str, error_class: TErrorClass = "terminal") -> None:
        """Record an invoice that did not go out."""
        self.failed[number] = problem
        self.failure_class[number] = error_class


def _error_class(exc: BaseException) -> TErrorClass:
    return "transient" if isinstance(exc, TransientDeliveryError) else "terminal"


class _ChannelDelivery:
    """One channel's items of one batch, through formatter and transport.

    Each parcel's invoices are claimed just before the parcel goes out, under the
    channel's lock, and recorded as soon as their last parcel is done: a run that
    dies leaves in doubt only what was on the wire, never what was merely queued.
    """

    def __init__(self, ctx: RunContext, channel: str, items: list[Outgoing],
                 report: BatchReport, waiting: dict[str, str]) -> None:
        self.ctx, self.channel, self.items, self.report = ctx, channel, items, report
        self.waiting = waiting
        self.by_number = {i.doc.number: i for i in items}
        self.open: set[str] = set()
        """Claimed by this run, without an outcome yet."""
        self.settled: set[str] = set()
        """Not to be sent by this run any more (delivered, failed, elsewhere, in doubt)."""
        self.replies: dict[str, list[str]] = defaultdict(list)
        self.outcomes: dict[str, set[Outcome]] = defaultdict(set)
        self.carried: dict[str, list[str]] = defaultdict(list)
        self.delivered: list[tuple[Outgoing, tuple[str, ...]]] = []

    def run(self) -> list[tuple[Outgoing, tuple[str, ...]]]:
        """Deliver; returns the delivered items with the archive keys of what carried them."""
        try:
            formatted = self.ctx.formatters[self.channel].format(
                self.items, self.report.batch_id)
            remaining = Counter(n for p in formatted.parcels for n in p.numbers)
            for number, reason in formatted.failures.items():
                if self._claim(number):
                    self._fail(number, reason, "terminal")
            for number in self.by_number.keys() - remaining.keys() - formatted.failures.keys():
                if self._claim(number):
                    self._fail(number, f"the {self.channel} formatter produced nothing for it",
                               "terminal")
            for parcel in formatted.parcels:
                with self.ctx.locks[self.channel]:
                    if not self._claim_parcel(parcel):
                        self._yield(parcel)
                    elif all(self._claim(n) for n in parcel.numbers):
                        self._deliver(parcel)
                        self._finish_parcel(parcel)
                    else:
                        self._withhold(parcel)
                        self._finish_parcel(parcel)
                    for number in parcel.numbers:
                        remaining[number] -= 1
                        if remaining[number] == 0:
                            self._conclude(number)
        except Exception as exc:  # a formatter or journal bug: fail what is still open
            problem = f"{self.channel} delivery failed: {type(exc).__name__}: {exc}"
            for number in list(self.open):
                self._fail(number, problem, "terminal")
            for number in self.by_number.keys() - self.settled:
                self.report.fail(number, problem, "terminal")
        return self.delivered

    def _claim(self, number: str) -> bool:
        """True when this run holds the delivery (now or from an earlier parcel)."""
        if number in self.open:
            return True
        if number in self.settled:
            return False
        item = self.by_number[number]
        claim = self.ctx.journal.claim(
            keys.idempotency_key(number, self.channel), number, self.channel, item.sha256,
            self.ctx.run_id, self.ctx.transports[self.channel].name, self.ctx.resend_in_doubt)
        if claim == "claimed":
            self.open.add(number)
            return True
        self.settled.add(number)
        if claim == "delivered":
            self.report.already_delivered[number] = self.channel
        elif claim == "in_flight":
            self.waiting[number] = self.channel
        else:
            self.report.in_doubt[number] = (
                f"{self.channel}: started by a run that stopped before recording the outcome; "
                "re-send with --resend-in-doubt")
        return False

    def _parcel_key(self, parcel: Parcel) -> str:
        return f"{PARCEL_CHANNEL}:{self.channel}:{parcel.name}"

    def _claim_parcel(self, parcel: Parcel) -> bool:
        """A file carrying several invoices (a print file, an interchange) is claimed whole
        first: two runs building the same batch build the same file, and only one of them
        sends it, instead of each holding part of its invoices."""
        if len(parcel.numbers) < 2:
            return True
        return self.ctx.journal.claim(
            self._parcel_key(parcel), parcel.name, PARCEL_CHANNEL, "", self.ctx.run_id,
            self.ctx.transports[self.channel].name, self.ctx.resend_in_doubt) == "claimed"

    def _finish_parcel(self, parcel: Parcel) -> None:
        if len(parcel.numbers) < 2:
            return
        outcomes = [self.outcomes[n] for n in parcel.numbers]
        state: TDeliveryState = ("failed" if not all(outcomes) else
                                 "sent" if any("sent" in o for o in outcomes) else "written")
        self.ctx.journal.finish(self._parcel_key(parcel), self.ctx.run_id, state,
                                f"{len(parcel.numbers)} invoices: " +
                                ", ".join(parcel.numbers[:20]))

    def _yield(self, parcel: Parcel) -> None:
        """Another run holds this file: it delivers all of it; this run waits for the
        outcome of its invoices."""
        for number in parcel.numbers:
            if number in self.open:
                self._fail(number, f"{parcel.name} is being delivered by another run",
                           "transient")
            elif number not in self.settled:
                self.settled.add(number)
                self.waiting[number] = self.channel

    def _withhold(self, parcel: Parcel) -> None:
        """A parcel not to send: one of its invoices is not ours to deliver (any more)."""
        other = next(n for n in parcel.numbers if n not in self.open)
        problem = (f"{parcel.name} withheld: {other} travels in it and is not being delivered "
                   "by this run")
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
            for number in parcel.numbers:
                self._fail(number, f"{parcel.name}: {exc}", _error_class(exc))
            return
        except Exception as exc:  # a transport bug fails the parcel's invoices, not the batch
            for number in parcel.numbers:
                self._fail(number, f"{parcel.name}: {type(exc).__name__}: {exc}", "terminal")
            return
        reply = receipt.reply + ("; refused " + ", ".join(f"{a} ({r})" for a, r in
                                                          receipt.refused.items())
                                 if receipt.refused else "")
        archived = self._archive(parcel)
        for number in parcel.numbers:
            self.outcomes[number].add(receipt.outcome)
            self.replies[number].append(reply)
            if archived:
                self.carried[number].append(archived)

    def _archive(self, parcel: Parcel) -> str | None:
        """Keep the exact bytes that went out; they went out even if this fails."""
        try:
            return self.ctx.storage.put(keys.delivery_key(self.channel, parcel.name),
                                        parcel.data).key
        except (PipelineError, OSError, ValueError) as exc:
            for number in parcel.numbers:
                self.replies[number].append(f"{parcel.name} not archived: {exc}")
            return None

    def _conclude(self, number: str) -> None:
        """The invoice's last parcel is done: record it delivered if all of them went out."""
        if number not in self.open:
            return
        outcome: Outcome = "sent" if "sent" in self.outcomes[number] else "written"
        self.ctx.journal.finish(keys.idempotency_key(number, self.channel), self.ctx.run_id,
                                outcome, "; ".join(self.replies[number]))
        self.open.discard(number)
        self.settled.add(number)
        self.report.delivered[number] = self.channel
        self.report.outcomes[number] = outcome
        self.delivered.append((self.by_number[number], tuple(self.carried[number])))

    def _doubt(self, number: str, problem: str) -> None:
        if number not in self.open:
            return
        self.open.discard(number)
        self.settled.add(number)
        self.ctx.journal.finish(keys.idempotency_key(number, self.channel), self.ctx.run_id,
                                "in_doubt", problem)
        self.report.in_doubt[number] = (f"{self.channel}: {problem}; check, then re-send with "
                                        "--resend-in-doubt")

    def _fail(self, number: str, problem: str, error_class: TErrorClass) -> None:
        if number not in self.open:
            return
        self.open.discard(number)
        self.settled.add(number)
        self.ctx.journal.finish(keys.idempotency_key(number, self.channel), self.ctx.run_id,
                                "failed", problem, error_class)
        self.report.fail(number, problem, error_class)


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
    """Email invoices refused for good that go to print instead, when settings say so.

    The journal keeps both deliveries: the email ``failed`` with the server's reply,
    then the print one; the invoice counts once, as delivered by print if that works.
    """
    if not ctx.settings.delivery.fallback_to_print:
        return []
    moved = []
    for item in emails:
        number, buyer = item.doc.number, item.doc.buyer
        if report.failure_class.get(number) == "terminal" and buyer.address_line1.strip() \
                and buyer.city.strip():
            del report.failed[number], report.failure_class[number]
            moved.append(item)
    return moved


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
    stored: dict[str, StoredObject] = {}
    waiting: dict[str, str] = {}
    done = ctx.journal.delivered_keys(keys.idempotency_key(r.number, rendered.docs[r.number]
                                                           .channel) for r in rendered.rendered)
    for result in rendered.rendered:
        doc = rendered.docs[result.number]
        if result.pdf is None or result.sha256 is None:
            report.fail(doc.number, result.error or "render produced no PDF")
            continue
        if keys.idempotency_key(doc.number, doc.channel) in done:  # by a run since rendering
            report.already_delivered[doc.number] = doc.channel
            continue
        item = Outgoing(doc, result.pdf, result.sha256)
        try:
            stored[doc.number] = archive_pdf(ctx.storage, item)
        except (PipelineError, OSError, ValueError) as exc:  # this invoice only
            report.fail(doc.number, f"invoice {doc.number}: not archived, not delivered: {exc}")
            continue
        todo[doc.channel].append(item)

    delivered: list[Archived] = []
    for channel in sorted(todo, key=lambda c: c == "print"):  # print last: it takes fallbacks
        items = todo[channel] + (_fallbacks(ctx, todo.get("email", []), report)
                                 if channel == "print" else [])
        for item, carried in _ChannelDelivery(ctx, channel, items, report, waiting).run():
            delivered.append(Archived(item, stored[item.doc.number], carried))
    if "print" not in todo and (fallbacks := _fallbacks(ctx, todo.get("email", []), report)):
        for item, carried in _ChannelDelivery(ctx, "print", fallbacks, report, waiting).run():
            delivered.append(Archived(item, stored[item.doc.number], carried))
    _wait_for_others(ctx, waiting, report)
    if delivered:
        write_index(ctx.storage, rendered.batch.batch_id, delivered, ctx.run_id)
    report.deliver_s = time.perf_counter() - start
    progress().advance("deliver", len(rendered.docs))
    return report
