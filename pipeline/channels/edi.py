"""EDI and Peppol delivery: the Factur-X PDF plus the customer's electronic formats.

UBL (Peppol BIS 3) is one file per invoice; EDIFACT INVOIC and X12 810 are one
interchange per trading partner and batch, with control numbers stored in the
ledger. Before anything is written, each invoice's totals are read back from
the artifact and compared with the document to the cent (``crosscheck``); an
interchange is also read back whole by a receiver's parser and must match,
segment for segment and value for value, what the writer meant. An invoice
whose identifiers cannot be written unaltered fails alone; a problem found in
an interchange withholds all of it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pipeline import keys
from pipeline.channels.base import ChannelResult, DeliveredFile, Outgoing, Receipt
from pipeline.einvoice import crosscheck, edifact, ubl, x12
from pipeline.einvoice.en16931 import to_en16931
from pipeline.einvoice.segments import FieldError, Reading, Segment, Syntax
from pipeline.ledger import Ledger
from pipeline.settings import EdiSettings, SellerSettings
from pipeline.storage.local import write_atomic

__all__ = ["EdiOutbox"]


class EdiOutbox:
    """Writes under ``<outbox>``: ``<invoice>.pdf``, ``<invoice>.ubl.xml``,
    ``<partner>-<control>.edi`` (EDIFACT) and ``<partner>-<control>.x12``."""

    name = "edi"

    def __init__(self, outbox: Path, seller: SellerSettings, settings: EdiSettings,
                 ledger: Ledger) -> None:
        self.outbox, self.seller, self.settings, self.ledger = outbox, seller, settings, ledger

    def send(self, items: list[Outgoing], batch_id: str) -> ChannelResult:
        """Deliver every item in each of its customer's formats."""
        problems: dict[str, list[str]] = defaultdict(list)
        files: list[DeliveredFile] = []
        partners: dict[tuple[str, str], list[Outgoing]] = defaultdict(list)
        for item in items:
            for fmt in self.settings.formats_for(item.doc.channel, item.doc.customer_id):
                if fmt == "ubl":
                    self._ubl(item, files, problems)
                else:
                    partners[(fmt, item.doc.gln or item.doc.customer_id)].append(item)
        for (standard, partner), group in sorted(partners.items()):
            self._interchange(standard, partner, group, files, problems)

        withheld = True
        while withheld:  # an interchange goes out whole or not at all
            withheld = False
            for file in files:
                failed = [n for n in file.numbers if n in problems]
                for number in file.numbers:
                    if failed and number not in problems:
                        problems[number].append(f"{file.name} withheld: {failed[0]} in the same "
                                                "interchange failed its cross-check")
                        withheld = True
        kept = [f for f in files if not any(n in problems for n in f.numbers)]
        result = ChannelResult()
        for item in items:
            number = item.doc.number
            if number in problems:
                result.receipts.append(Receipt(number, error="; ".join(problems[number])))
                continue
            stem = keys.safe_component(number)
            write_atomic(self.outbox / f"{stem}.pdf", item.pdf)
            names = [f.name for f in kept if number in f.numbers]
            result.receipts.append(Receipt(number, detail="edi outbox " + ", ".join(
                [f"{stem}.pdf", *names])))
        for file in kept:
            write_atomic(self.outbox / file.name, file.data)
        result.files = kept
        return result

    def _ubl(self, item: Outgoing, files: list[DeliveredFile],
             problems: dict[str, list[str]]) -> None:
        xml = ubl.to_ubl(to_en16931(item.doc))
        mismatches = crosscheck.differences(crosscheck.expected_totals(item.doc),
                                            crosscheck.ubl_totals(xml))
        if mismatches:
            problems[item.doc.number].append("UBL totals differ: " + "; ".join(mismatches))
            return
        files.append(DeliveredFile(f"{keys.safe_component(item.doc.number)}.ubl.xml", xml,
                                   (item.doc.number,)))

    def _interchange(self, fmt: str, partner: str, group: list[Outgoing],
                     files: list[DeliveredFile], problems: dict[str, list[str]]) -> None:
        """One interchange for the partner's invoices that can be written unaltered; it is
        read back with a receiver's parser and must match, segment for segment, what was
        meant, and carry each document's totals."""
        syntax: Syntax = edifact if fmt == "edifact" else x12
        sender = self.settings.sender_gln if fmt == "edifact" else self.seller.siren
        kept: list[Outgoing] = []
        bodies: list[list[Segment]] = []
        for item in group:
            try:
                bodies.append(syntax.body(to_en16931(item.doc), sender, partner))
            except FieldError as exc:  # this invoice only: the others go without it
                problems[item.doc.number].append(str(exc))
                continue
            kept.append(item)
        if not kept:
            return
        control = self.ledger.next_control_number(partner, fmt)
        try:
            written = syntax.envelope(bodies, control, sender, partner,
                                      max(i.doc.issue_date for i in kept))
        except FieldError as exc:
            for item in kept:
                problems[item.doc.number].append(str(exc))
            return
        data = syntax.serialize(written)
        reading = syntax.read(data)
        found = crosscheck.interchange_differences(fmt, written, reading)
        for item, differences in zip(kept, found, strict=True):
            if differences:
                problems[item.doc.number].append(f"{fmt} interchange read back differs from "
                                                 "what was written: " + "; ".join(differences))
        if not any(found):  # the structure is sound, so the totals can be read from it
            self._check_totals(fmt, reading, kept, problems)
        suffix = "edi" if fmt == "edifact" else "x12"
        files.append(DeliveredFile(f"{keys.safe_component(partner)}-{control:06d}.{suffix}", data,
                                   tuple(i.doc.number for i in kept)))

    @staticmethod
    def _check_totals(fmt: str, reading: Reading, kept: list[Outgoing],
                      problems: dict[str, list[str]]) -> None:
        parsed = crosscheck.totals_read_back(fmt, reading)
        for item in kept:
            expected = crosscheck.expected_totals(item.doc)
            actual = {k: v for k, v in parsed.get(item.doc.number, {}).items() if k != "lines"}
            if fmt == "x12":  # X12 TXI carries no VAT category
                expected, actual = crosscheck.by_rate(expected), crosscheck.by_rate(actual)
            mismatches = crosscheck.differences(expected, actual)
            if mismatches:
                problems[item.doc.number].append(f"{fmt} totals differ: " + "; ".join(mismatches))
