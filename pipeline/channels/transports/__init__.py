"""Transports: how a channel's bytes leave the machine (outbox, smtp, sftp)."""

from pipeline.channels.transports.base import (
    TRANSPORTS,
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
    Transport,
    TransportReceipt,
)
from pipeline.channels.transports.outbox import OutboxTransport

__all__ = ["TRANSPORTS", "Parcel", "Transport", "TransportReceipt", "TransientDeliveryError",
           "TerminalDeliveryError", "OutboxTransport"]
