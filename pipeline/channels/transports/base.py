"""The transport protocol: how bytes leave the machine, whatever they are.

A formatter (``channels/``) decides *what* goes out: an email message, an EDI
interchange, a print file. A transport moves those bytes and says honestly what
happened: an outbox transport has ``written`` a file, a server transport has
``sent`` it. Transports are registered by name and chosen per channel in
settings, so a new one (the PA platform of a later issue) plugs in the same way.

A transport raises ``TransientDeliveryError`` when the same call may succeed
later (a 4xx reply, a timeout, a refused or dropped connection: it has already
retried within its own budget) and ``TerminalDeliveryError`` when it will not
(a 5xx reply, a refused address, a rejected key). The delivery stage turns
either into a per-invoice failure; no exception leaves a journal row ``started``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pipeline.errors import PipelineError, Terminal, Transient

__all__ = ["Parcel", "TransportReceipt", "Transport", "TransientDeliveryError",
           "TerminalDeliveryError", "TRANSPORTS", "register_transport", "Outcome"]

Outcome = Literal["sent", "written", "deposited"]


@dataclass(frozen=True)
class Parcel:
    """One file or message to move, and the invoices it carries.

    ``name`` is a safe file name (``keys.safe_component`` already applied) under which a
    file transport stores it; a mail transport ignores it. ``recipients`` and ``sender``
    are the SMTP envelope (``To``, ``Cc`` and ``Bcc`` together); file transports ignore them.
    ``partner`` names the destination of file transports that have several (an EDI
    partner's SFTP server); empty means the channel's default destination.
    """

    name: str
    data: bytes
    numbers: tuple[str, ...]
    recipients: tuple[str, ...] = ()
    sender: str = ""
    partner: str = ""
    addressees: tuple[str, ...] = ()
    """The recipients it is meant for (To): if the server refuses all of them, the parcel is
    not delivered, even if it accepted copies (Cc, Bcc) for others."""


@dataclass(frozen=True)
class TransportReceipt:
    """What a transport did with one parcel.

    ``refused`` lists envelope recipients a server refused while accepting the others
    (SMTP): the parcel went out, but not to them.
    """

    outcome: Outcome
    reply: str
    refused: dict[str, str] = field(default_factory=dict)


class TransientDeliveryError(PipelineError, Transient):
    """The parcel did not go out, and trying again later may succeed."""


class TerminalDeliveryError(PipelineError, Terminal):
    """The parcel did not go out, and trying again will not help until something changes."""


class Transport(Protocol):
    """Moves parcels to one destination (an outbox folder, an SMTP relay, SFTP servers)."""

    name: str
    """The registered name: ``outbox``, ``smtp``, ``sftp``."""

    def deliver(self, parcel: Parcel) -> TransportReceipt:
        """Move one parcel, or raise ``TransientDeliveryError`` / ``TerminalDeliveryError``."""
        ...

    def close(self) -> None:
        """Release connections; the transport may be used again afterwards."""
        ...


TransportFactory = Callable[..., Transport]
TRANSPORTS: dict[str, TransportFactory] = {}


def register_transport(name: str) -> Callable[[TransportFactory], TransportFactory]:
    """Register a transport factory under ``name`` (the value settings use)."""
    def register(factory: TransportFactory) -> TransportFactory:
        if name in TRANSPORTS:
            raise ValueError(f"transport {name} registered twice")
        TRANSPORTS[name] = factory
        return factory
    return register
