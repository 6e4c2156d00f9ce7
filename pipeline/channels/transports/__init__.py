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
from pipeline.channels.transports.sftp import SftpTransport
from pipeline.channels.transports.smtp import SmtpTransport

__all__ = ["TRANSPORTS", "Parcel", "Transport", "TransportReceipt", "TransientDeliveryError",
           "TerminalDeliveryError", "OutboxTransport", "SftpTransport", "SmtpTransport"]
