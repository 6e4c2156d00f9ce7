"""The channel protocol and the registry that maps a customer's channel to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import jinja2

from pipeline.channels.transports.base import Parcel
from pipeline.documents import InvoiceDocument
from pipeline.ledger import Ledger
from pipeline.settings import Settings

__all__ = ["Outgoing", "Receipt", "DeliveredFile", "ChannelResult", "Channel", "make_channels",
           "Formatted", "Formatter"]


@dataclass(frozen=True)
class Outgoing:
    """A rendered document ready to be delivered."""

    doc: InvoiceDocument
    pdf: bytes
    sha256: str


@dataclass(frozen=True)
class Receipt:
    """What happened to one document on its channel."""

    number: str
    error: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class DeliveredFile:
    """A file a channel produced, archived under ``deliveries/<channel>/<name>``."""

    name: str
    data: bytes
    numbers: tuple[str, ...]


@dataclass
class ChannelResult:
    """Receipts per document and the files produced for the batch."""

    receipts: list[Receipt] = field(default_factory=list)
    files: list[DeliveredFile] = field(default_factory=list)


@dataclass
class Formatted:
    """What a formatter made of a batch's items of one channel.

    Every item ends in exactly one place: carried by one or more parcels (an
    interchange may carry several invoices, an invoice may travel in several
    parcels: its PDF, its UBL, its interchange), or in ``failures`` with the reason.
    """

    parcels: list[Parcel] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


class Formatter(Protocol):
    """Builds what goes out on one channel; it never moves bytes itself (transports do)."""

    name: str

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """Parcels for the items; an item that cannot be formatted fails alone."""
        ...


class Channel(Protocol):
    """Delivers a batch's documents of one channel."""

    name: str

    def send(self, items: list[Outgoing], batch_id: str) -> ChannelResult:
        """Deliver; a failing document gets an error receipt, the others go on."""
        ...


def make_channels(outbox: Path, settings: Settings, env: jinja2.Environment,
                  ledger: Ledger) -> dict[str, Channel]:
    """The embedded-default channels, writing under ``outbox``."""
    from pipeline.channels.edi import EdiOutbox
    from pipeline.channels.email import EmailOutbox
    from pipeline.channels.printfile import PrintOutbox

    seller = settings.seller
    edi = EdiOutbox(outbox / "edi", seller, settings.edi, ledger)
    return {"email": EmailOutbox(outbox / "email", seller, env),
            "print": PrintOutbox(outbox / "print"),
            "edi": edi, "peppol": edi}
