"""The accredited-platform channel (French 2026 reform): each invoice's Factur-X, alone.

A platform takes one invoice per flow (XP Z12-013: ``POST /v1/flows``), so each parcel is
the invoice's Factur-X PDF, addressed (``partner``) to the buyer's SIREN, which the
transport looks up in the platform's Directory before the first deposit for that buyer.
Which invoices take this channel is decided by ``route``: French buyers with a SIREN once a
platform is configured, as the reform requires, and customers whose channel is ``pa``.
"""

from __future__ import annotations

import dataclasses

from pipeline import keys
from pipeline.channels.base import Formatted, Outgoing
from pipeline.channels.transports.base import Parcel
from pipeline.documents import InvoiceDocument
from pipeline.einvoice.en16931 import domestic_b2b
from pipeline.settings import Settings

__all__ = ["PlatformFormatter", "route", "CHANNEL"]

CHANNEL = "pa"


def route(doc: InvoiceDocument, settings: Settings) -> InvoiceDocument:
    """The document on the channel it really goes out on: ``pa`` for a domestic French
    B2B invoice once a platform is configured (a Factur-X by email is no longer a valid
    invoice for such a buyer), its customer's channel otherwise."""
    if settings.pa.configured and settings.pa.french_b2b and domestic_b2b(doc):
        return dataclasses.replace(doc, channel=CHANNEL)
    return doc


class PlatformFormatter:
    """Parcels ``<invoice>.pdf``: the Factur-X, to be deposited as one flow."""

    name = CHANNEL

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """One parcel per invoice; an invoice whose buyer has no SIREN cannot be routed."""
        formatted = Formatted()
        for item in items:
            siren = item.doc.buyer.siren
            if not siren:
                formatted.failures[item.doc.number] = (
                    "the buyer has no SIREN: the platform cannot route it (set "
                    "customers.siren, or another channel for this customer)")
                continue
            formatted.parcels.append(Parcel(
                name=f"{keys.safe_component(item.doc.number)}.pdf", data=item.pdf,
                numbers=(item.doc.number,), partner=siren))
        return formatted
