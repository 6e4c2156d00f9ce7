"""EDI and Peppol delivery, first cut: the PDF plus an interim JSON record.

The real EDIFACT/X12/UBL formats come later; until then the record is named
``*.interim-record.json`` and says so in its ``format`` field, so nobody
mistakes it for a standard message.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline import keys
from pipeline.channels.base import ChannelResult, DeliveredFile, Outgoing, Receipt
from pipeline.settings import SellerSettings
from pipeline.storage.local import write_atomic

__all__ = ["EdiOutbox", "interim_record"]

INTERIM_FORMAT = "invoice-pipeline/interim-json-record/v1 (not an EDI standard)"


def interim_record(item: Outgoing, seller: SellerSettings) -> dict[str, Any]:
    """The invoice data as a JSON-ready dict; money as strings, never floats."""
    doc = asdict(item.doc)
    doc.pop("seller_legal")
    return {"format": INTERIM_FORMAT, "seller_gln_or_siren": seller.siren,
            "pdf_sha256": item.sha256, "invoice": doc}


class EdiOutbox:
    """Writes ``<outbox>/<invoice>.pdf`` and ``<invoice>.interim-record.json``."""

    name = "edi"

    def __init__(self, outbox: Path, seller: SellerSettings) -> None:
        self.outbox, self.seller = outbox, seller

    def send(self, items: list[Outgoing], batch_id: str) -> ChannelResult:
        """Write the PDF and the record of each document."""
        result = ChannelResult()
        for item in items:
            stem = keys.safe_component(item.doc.number)
            record = json.dumps(interim_record(item, self.seller), default=str,
                                ensure_ascii=False, indent=1, sort_keys=True).encode()
            write_atomic(self.outbox / f"{stem}.pdf", item.pdf)
            write_atomic(self.outbox / f"{stem}.interim-record.json", record)
            result.receipts.append(Receipt(item.doc.number, detail=f"edi outbox {stem}"))
            result.files.append(DeliveredFile(f"{stem}.interim-record.json", record,
                                              (item.doc.number,)))
        return result
