"""EDI and Peppol formatter: the Factur-X PDF plus the customer's electronic formats.

UBL (Peppol BIS 3) is one file per invoice; EDIFACT INVOIC and X12 810 are one
interchange per trading partner and batch, with control numbers stored in the
ledger. Before anything is written, each invoice's totals are read back from
the artifact and compared with the document to the cent (``crosscheck``); an
interchange is also read back whole by a receiver's parser and must match,
segment for segment and value for value, what the writer meant. An invoice
whose identifiers cannot be written unaltered fails alone; a problem found in
an interchange withholds all of it. The parcels go to the channel's transport
(outbox folder or the partner's SFTP drop, ``partner`` = the buyer's GLN).
"""

from __future__ import annotations

from collections import defaultdict

from pipeline import keys
from pipeline.channels.base import Formatted, Outgoing
from pipeline.channels.transports.base import Parcel
from pipeline.einvoice import crosscheck, edifact, ubl, x12
from pipeline.einvoice.en16931 import to_en16931
from pipeline.einvoice.segments import FieldError, Reading, Segment, Syntax
from pipeline.journal import Journal
from pipeline.settings import EdiSettings, SellerSettings

__all__ = ["EdiFormatter"]


def partner_of(item: Outgoing) -> str:
    """Who receives an EDI customer's files: its GLN, else its customer id."""
    return item.doc.gln or item.doc.customer_id


class EdiFormatter:
    """Parcels ``<invoice>.pdf``, ``<invoice>.ubl.xml``, ``<partner>-<control>.edi`` (EDIFACT)
    and ``<partner>-<control>.x12``, each addressed to the buyer's partner."""

    name = "edi"

    def __init__(self, seller: SellerSettings, settings: EdiSettings, journal: Journal) -> None:
        self.seller, self.settings, self.journal = seller, settings, journal

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """Every item in each of its customer's formats; interchanges go out whole or not."""
        problems: dict[str, list[str]] = defaultdict(list)
        files: list[Parcel] = []
        partners: dict[tuple[str, str], list[Outgoing]] = defaultdict(list)
        for item in items:
            for fmt in self.settings.formats_for(item.doc.channel, item.doc.customer_id):
                if fmt == "ubl":
                    self._ubl(item, files, problems)
                else:
                    partners[(fmt, partner_of(item))].append(item)
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
        pdfs = [Parcel(f"{keys.safe_component(i.doc.number)}.pdf", i.pdf, (i.doc.number,),
                       partner=partner_of(i)) for i in items if i.doc.number not in problems]
        return Formatted(parcels=kept + pdfs,
                         failures={n: "; ".join(p) for n, p in problems.items()})

    def _ubl(self, item: Outgoing, files: list[Parcel],
             problems: dict[str, list[str]]) -> None:
        xml = ubl.to_ubl(to_en16931(item.doc))
        mismatches = crosscheck.differences(crosscheck.expected_totals(item.doc),
                                            crosscheck.ubl_totals(xml))
        if mismatches:
            problems[item.doc.number].append("UBL totals differ: " + "; ".join(mismatches))
            return
        files.append(Parcel(f"{keys.safe_component(item.doc.number)}.ubl.xml", xml,
                            (item.doc.number,), partner=partner_of(item)))

    def _interchange(self, fmt: str, partner: str, group: list[Outgoing],
                     files: list[Parcel], problems: dict[str, list[str]]) -> None:
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
        control = self.journal.next_control_number(partner, fmt)
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
        files.append(Parcel(f"{keys.safe_component(partner)}-{control:06d}.{suffix}", data,
                            tuple(i.doc.number for i in kept), partner=partner))

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
