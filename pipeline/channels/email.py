"""Email delivery, first cut: one ``.eml`` per invoice in an outbox directory.

Messages are deterministic (Message-ID and Date derive from the invoice), so
a re-written message is byte-identical. Headers are built with the stdlib's
header registry, which refuses line breaks: customer data can never inject a
header even if validation were switched off.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

import jinja2

from pipeline import keys
from pipeline.channels.base import ChannelResult, DeliveredFile, Outgoing, Receipt
from pipeline.errors import PipelineError
from pipeline.render.templates import render_template
from pipeline.settings import SellerSettings
from pipeline.storage.local import write_atomic

__all__ = ["EmailOutbox", "build_message"]


def _single_line(text: str) -> str:
    return " ".join(text.split())


def build_message(item: Outgoing, seller: SellerSettings, env: jinja2.Environment) -> bytes:
    """The complete RFC 5322 message of one invoice, PDF attached."""
    doc = item.doc
    if not doc.email or any(c in doc.email for c in "\r\n"):
        raise ValueError(f"invoice {doc.number}: unusable email address {doc.email!r}")
    lang = doc.language if doc.language in ("fr", "en", "de") else "fr"
    context = {"doc": doc, "lang": lang}
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(display_name=seller.legal_name, addr_spec=seller.email)
    message["To"] = [Address(addr_spec=a.strip()) for a in doc.email.split(",")]
    message["Subject"] = _single_line(render_template(env, f"emails/{lang}/subject.txt",
                                                      **context))
    message["Date"] = format_datetime(datetime.combine(doc.issue_date, time(6, 0), UTC))
    message["Message-ID"] = keys.message_id(doc.number, item.sha256,
                                            seller.email.rpartition("@")[2])
    message.set_content(render_template(env, f"emails/{lang}/body.txt", **context))
    message.add_attachment(item.pdf, maintype="application", subtype="pdf",
                           filename=f"{keys.safe_component(doc.number)}.pdf")
    # "=_" cannot occur in quoted-printable or base64 bodies, so this fixed boundary is safe.
    message.set_boundary(f"=_{keys.digest(doc.number, item.sha256)[:32]}")
    return message.as_bytes()


class EmailOutbox:
    """Writes ``<outbox>/<invoice>.eml``; an SMTP relay channel comes later."""

    name = "email"

    def __init__(self, outbox: Path, seller: SellerSettings, env: jinja2.Environment) -> None:
        self.outbox, self.seller, self.env = outbox, seller, env

    def send(self, items: list[Outgoing], batch_id: str) -> ChannelResult:
        """Write one message file per document."""
        result = ChannelResult()
        for item in items:
            name = f"{keys.safe_component(item.doc.number)}.eml"
            try:
                data = build_message(item, self.seller, self.env)
                write_atomic(self.outbox / name, data)
            except (ValueError, OSError, PipelineError) as exc:
                result.receipts.append(Receipt(item.doc.number, error=str(exc)))
                continue
            result.receipts.append(Receipt(item.doc.number, detail=f"outbox {name}"))
            result.files.append(DeliveredFile(name, data, (item.doc.number,)))
        return result
