"""The embedded default transport: a local pickup folder per channel.

Nothing leaves the machine, so what it does is ``written``, never ``sent``.
Files are written under a temporary name and renamed, so a pickup job never
reads half a file; the same parcel written again is the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.channels.transports.base import (
    Parcel,
    TerminalDeliveryError,
    TransportReceipt,
    register_transport,
)
from pipeline.storage.local import write_atomic

__all__ = ["OutboxTransport"]


@register_transport("outbox")
class OutboxTransport:
    """Writes each parcel to ``<folder>/<parcel.name>``."""

    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def deliver(self, parcel: Parcel) -> TransportReceipt:
        """Write the parcel's bytes; a full disk or a bad folder fails it for good."""
        path = self.folder / parcel.name
        try:
            write_atomic(path, parcel.data)
        except OSError as exc:
            raise TerminalDeliveryError(f"cannot write {path}: {exc}. Check free space and "
                                        "permissions of the outbox, then re-run.") from exc
        return TransportReceipt("written", f"written to {path}")

    def close(self) -> None:
        """Nothing to release."""
