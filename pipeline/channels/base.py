"""A channel is a formatter (what goes out) plus a transport (how the bytes move).

Which transport serves a channel is a setting; ``make_transports`` and
``make_formatters`` build them for a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import jinja2

from pipeline.channels.transports.base import Parcel, Transport
from pipeline.documents import InvoiceDocument
from pipeline.journal import Journal
from pipeline.schemas import CHANNELS
from pipeline.settings import Settings

__all__ = ["Outgoing", "Formatted", "Formatter", "transport_name", "make_transports",
           "make_formatters"]


@dataclass(frozen=True)
class Outgoing:
    """A rendered document ready to be delivered."""

    doc: InvoiceDocument
    pdf: bytes
    sha256: str


@dataclass
class Formatted:
    """What a formatter made of a batch's items of one channel.

    Every item ends in exactly one place: carried by one or more parcels (an
    interchange may carry several invoices, an invoice may travel in several
    parcels: its PDF, its UBL, its interchange), or in ``failures`` with the reason.
    """

    parcels: list[Parcel] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


class Formatter(Protocol):
    """Builds what goes out on one channel; it never moves bytes itself (transports do)."""

    name: str

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """Parcels for the items; an item that cannot be formatted fails alone."""
        ...


def transport_name(channel: str, settings: Settings) -> str:
    """The transport a channel uses: the setting if given, else what is configured."""
    chosen = settings.delivery.transports.get(channel)
    if chosen:
        return chosen
    if channel == "pa":
        return "platform" if settings.pa.configured else "outbox"
    if channel == "email":
        return "smtp" if settings.smtp.host else "outbox"
    if channel == "print":
        return "sftp" if settings.delivery.print_partner in settings.sftp else "outbox"
    partners = set(settings.sftp) - {settings.delivery.print_partner}
    return "sftp" if partners else "outbox"


def make_transports(settings: Settings, resend_in_doubt: bool = False
                    ) -> dict[str, Transport]:
    """One transport per channel, as settings choose (the outbox when nothing is set).

    ``resend_in_doubt``: the run re-sends what a stopped run left in doubt, so a transport
    that can ask whether it went out (the platform) asks first.

    Raises:
        ValueError: a channel is set to a transport its settings cannot serve.
    """
    from pipeline.channels.transports.outbox import OutboxTransport
    from pipeline.channels.transports.platform import PlatformTransport
    from pipeline.channels.transports.sftp import SftpTransport
    from pipeline.channels.transports.smtp import SmtpTransport

    outbox = settings.home / "outbox"
    transports: dict[str, Transport] = {}
    for channel in CHANNELS:
        name = transport_name(channel, settings)
        if name == "outbox":
            folder = outbox / ("edi" if channel == "peppol" else channel)
            transports[channel] = OutboxTransport(folder)
        elif name == "smtp":
            if channel != "email" or not settings.smtp.host:
                raise ValueError(f"[delivery.transports] {channel} = 'smtp' needs the email "
                                 "channel and INVOICES_SMTP__HOST")
            transports[channel] = SmtpTransport(settings.smtp)
        elif name == "platform":
            if channel != "pa" or not settings.pa.configured:
                raise ValueError(f"[delivery.transports] {channel} = 'platform' needs the pa "
                                 "channel and INVOICES_PA__URL")
            transports[channel] = PlatformTransport(settings.pa, resend_in_doubt)
        else:
            default = settings.delivery.print_partner if channel == "print" else ""
            if channel == "print" and default not in settings.sftp:
                raise ValueError(f"[delivery.transports] print = 'sftp' needs [sftp.{default}]")
            transports[channel] = SftpTransport(settings.sftp, default_partner=default)
    return transports


def make_formatters(settings: Settings, env: jinja2.Environment,
                    journal: Journal) -> dict[str, Formatter]:
    """What each channel sends: email messages, EDI and Peppol files, print files, and the
    Factur-X each invoice deposits on the platform."""
    from pipeline.channels.edi import EdiFormatter
    from pipeline.channels.email import EmailFormatter
    from pipeline.channels.platform import PlatformFormatter
    from pipeline.channels.printfile import PrintFormatter

    edi = EdiFormatter(settings.seller, settings.edi, journal)
    return {"email": EmailFormatter(settings.seller, env, settings.smtp),
            "print": PrintFormatter(settings.render.templates_dir, settings.seller),
            "edi": edi, "peppol": edi, "pa": PlatformFormatter()}
