"""EDI and Peppol formatter: the Factur-X PDF plus the customer's electronic formats.

The formats come from the registry (``einvoice.registry``), by the names
``[edi]`` settings give each customer. A format grouped per invoice (UBL,
Peppol BIS 3) is one file per invoice; one grouped per partner (EDIFACT INVOIC,
X12 810) is one interchange per trading partner and batch, with control numbers
stored in the ledger. Before anything is written, each invoice's totals are read
back from the bytes by the format's own parser and compared with the document to
the cent (``crosscheck``); an interchange is also read back whole by a
receiver's parser and must match, segment for segment and value for value, what
the writer meant. An invoice whose identifiers cannot be written unaltered fails
alone; a problem found in an interchange withholds all of it. The parcels go to
the channel's transport (outbox folder or the partner's SFTP drop, ``partner`` =
the buyer's GLN).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipeline import keys
from pipeline.channels.base import Formatted, Outgoing
from pipeline.channels.transports.base import Parcel
from pipeline.einvoice import crosscheck, registry
from pipeline.einvoice.en16931 import Invoice, to_en16931
from pipeline.einvoice.registry import BuildContext, EInvoiceFormat
from pipeline.einvoice.segments import FieldError, Segment
from pipeline.journal import Journal
from pipeline.settings import EdiSettings, SellerSettings

__all__ = ["EdiFormatter"]

Format = EInvoiceFormat[Any]


def partner_of(item: Outgoing) -> str:
    """Who receives an EDI customer's files: its GLN, else its customer id."""
    return item.doc.gln or item.doc.customer_id


class EdiFormatter:
    """Parcels ``<invoice>.pdf`` and, per format, ``<invoice><suffix>`` (``.ubl.xml``) or
    ``<partner>-<control><suffix>`` (``.edi``, ``.x12``), each addressed to the buyer's
    partner."""

    name = "edi"

    def __init__(self, seller: SellerSettings, settings: EdiSettings, journal: Journal) -> None:
        self.seller, self.settings, self.journal = seller, settings, journal

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """Every item in each of its customer's formats; interchanges go out whole or not."""
        problems: dict[str, list[str]] = defaultdict(list)
        files: list[Parcel] = []
        partners: dict[tuple[str, str], list[Outgoing]] = defaultdict(list)
        for item in items:
            for name in self.settings.formats_for(item.doc.channel, item.doc.customer_id):
                fmt = registry.get(name)
                if fmt.grouping == "partner":
                    partners[(name, partner_of(item))].append(item)
                else:
                    self._single(fmt, item, files, problems)
        for (name, partner), group in sorted(partners.items()):
            self._interchange(registry.get(name), partner, group, files, problems)

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

    def _sender(self, fmt: Format) -> str:
        return self.settings.sender_gln if fmt.sender == "gln" else self.seller.siren

    def _single(self, fmt: Format, item: Outgoing, files: list[Parcel],
                problems: dict[str, list[str]]) -> None:
        """One file for one invoice, if its totals read back as the document's."""
        doc, partner = item.doc, partner_of(item)
        try:
            data = fmt.build([to_en16931(doc)], BuildContext(
                self._sender(fmt), partner, prepared=doc.issue_date))
        except FieldError as exc:
            problems[doc.number].append(str(exc))
            return
        mismatches = crosscheck.check(fmt, [doc], data)[doc.number]
        if mismatches:
            problems[doc.number].append(f"{fmt.title} totals differ: " + "; ".join(mismatches))
            return
        files.append(Parcel(fmt.file_name(doc.number), data, (doc.number,), partner=partner))

    def _interchange(self, fmt: Format, partner: str, group: list[Outgoing],
                     files: list[Parcel], problems: dict[str, list[str]]) -> None:
        """One interchange for the partner's invoices that can be written unaltered; it is
        read back with a receiver's parser and must match, segment for segment, what was
        meant, and carry each document's totals."""
        sender = self._sender(fmt)
        kept: list[Outgoing] = []
        invoices: list[Invoice] = []
        bodies: list[list[Segment]] = []
        for item in group:
            invoice = to_en16931(item.doc)
            if fmt.syntax is not None:
                try:
                    bodies.append(fmt.syntax.body(invoice, sender, partner))
                except FieldError as exc:  # this invoice only: the others go without it
                    problems[item.doc.number].append(str(exc))
                    continue
            kept.append(item)
            invoices.append(invoice)
        if not kept:
            return
        docs = [i.doc for i in kept]
        control = self.journal.next_control_number(partner, fmt.name)
        prepared = max(d.issue_date for d in docs)
        context = BuildContext(sender, partner, control, prepared)
        try:
            data = fmt.build(invoices, context)
        except FieldError as exc:
            for doc in docs:
                problems[doc.number].append(str(exc))
            return
        found: list[list[str]]
        if fmt.syntax is None:
            found = [[] for _ in kept]
            mismatches = crosscheck.check(fmt, docs, data)
        else:  # one parse serves the read-back and the totals
            syntax = fmt.syntax
            written = syntax.envelope(bodies, control, sender, partner, prepared)
            reading = syntax.read(data)
            found = crosscheck.interchange_differences(fmt.name, written, reading)
            mismatches = crosscheck.compare(fmt, docs, lambda: syntax.totals(reading))
        for doc, differences in zip(docs, found, strict=True):
            if differences:
                problems[doc.number].append(f"{fmt.title} interchange read back differs from "
                                            "what was written: " + "; ".join(differences))
            if mismatches[doc.number]:
                problems[doc.number].append(f"{fmt.title} totals differ: "
                                            + "; ".join(mismatches[doc.number]))
        files.append(Parcel(fmt.file_name(partner, control), data,
                            tuple(d.number for d in docs), partner=partner))
