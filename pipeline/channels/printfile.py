"""Print delivery: one merged print-ready PDF and a CSV manifest per batch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from pipeline import keys
from pipeline.channels.base import ChannelResult, DeliveredFile, Outgoing, Receipt
from pipeline.storage.local import write_atomic

__all__ = ["PrintOutbox"]

MANIFEST_COLUMNS = ("sequence", "invoice_number", "customer_id", "name", "address_line1",
                    "address_line2", "postcode", "city", "country", "first_page", "pages",
                    "sha256")


class PrintOutbox:
    """Writes ``<outbox>/<batch_id>-<digest>.pdf`` and ``.csv`` for the print house."""

    name = "print"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def send(self, items: list[Outgoing], batch_id: str) -> ChannelResult:
        """Merge the batch's print documents in order, with one manifest row each."""
        if not items:
            return ChannelResult()
        writer = PdfWriter()
        manifest = io.StringIO()
        rows = csv.writer(manifest, lineterminator="\n")
        rows.writerow(MANIFEST_COLUMNS)
        page = 1
        for sequence, item in enumerate(items, start=1):
            reader = PdfReader(io.BytesIO(item.pdf))
            for p in reader.pages:
                writer.add_page(p)
            b = item.doc.buyer
            rows.writerow((sequence, item.doc.number, item.doc.customer_id, b.name,
                           b.address_line1, b.address_line2 or "", b.postcode, b.city,
                           b.country, page, len(reader.pages), item.sha256))
            page += len(reader.pages)
        merged = io.BytesIO()
        writer.write(merged)
        numbers = tuple(i.doc.number for i in items)
        # A re-run that prints only the batch's remaining invoices must not overwrite the
        # earlier print file, hence the digest of the exact invoices in the name.
        stem = f"{batch_id}-{keys.digest(*numbers)[:8]}"
        pdf_name, csv_name = f"{stem}.pdf", f"{stem}.csv"
        write_atomic(self.outbox / pdf_name, merged.getvalue())
        write_atomic(self.outbox / csv_name, manifest.getvalue().encode())
        return ChannelResult(
            receipts=[Receipt(n, detail=f"print file {pdf_name}") for n in numbers],
            files=[DeliveredFile(pdf_name, merged.getvalue(), numbers),
                   DeliveredFile(csv_name, manifest.getvalue().encode(), numbers)])
