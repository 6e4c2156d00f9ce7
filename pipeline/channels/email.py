"""The email formatter: one RFC 5322 message per invoice, whatever transport carries it.

A message has a text and an HTML body (``templates/emails/<lang>/body.txt`` and
``body.html``, in the customer's language), the PDF attached, and the Factur-X
XML attached as ``factur-x.xml`` for the customers of ``[smtp] xml_customers``.
Its envelope goes to the customer's addresses (``To``), ``[smtp] cc`` (a ``Cc``
header) and ``[smtp] bcc`` (envelope only: no header names it).

Messages are deterministic: Message-ID, Date and MIME boundaries derive from
the invoice and its PDF, so a message built again (a resend) is byte-identical
and carries the same Message-ID, which lets receiving systems de-duplicate.
Headers are built with the stdlib's header registry, which refuses line breaks
and quotes or encodes every display name; the HTML body is autoescaped: customer
data can inject neither a header, nor a recipient, nor markup.
"""

from __future__ import annotations

import email.errors
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any, Protocol

import jinja2

from pipeline import keys
from pipeline.channels.base import Formatted, Outgoing
from pipeline.channels.transports.base import Parcel
from pipeline.codes import language
from pipeline.einvoice.facturx import embedded_xml
from pipeline.errors import PipelineError
from pipeline.render.templates import render_template
from pipeline.settings import SellerSettings, SmtpSettings

__all__ = ["EmailFormatter", "build", "build_letter", "build_message", "Built", "XML_NAME",
           "LetterEnvelope", "letter_context"]

XML_NAME = "factur-x.xml"
# Every part is 7-bit (quoted-printable or base64 bodies, RFC 2047 headers): any relay takes it.
_POLICY = SMTP.clone(cte_type="7bit")


def _single_line(text: str) -> str:
    return " ".join(text.split())


def _address(value: str, display_name: str = "") -> Address:
    """One address, or ValueError saying which value is unusable."""
    value = value.strip()
    if not value:
        raise ValueError("an empty email address (two commas in a row, or a comma at the end?)")
    try:
        address = Address(display_name=display_name, addr_spec=value)
    except (ValueError, IndexError, email.errors.MessageError) as exc:
        raise ValueError(f"unusable email address {value!r}: {exc}") from exc
    if not address.username or not address.domain or address.addr_spec != value:
        raise ValueError(f"unusable email address {value!r}")
    return address


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return tuple(seen.values())


class LetterEnvelope(Protocol):
    """Who a letter goes to, and what it is called in their language."""

    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def language(self) -> str: ...
    @property
    def title(self) -> str: ...


@dataclass(frozen=True)
class Built:
    """A message and its envelope recipients (To, then Cc, then Bcc, each once)."""

    data: bytes
    recipients: tuple[str, ...]
    addressees: tuple[str, ...]
    """The To recipients: the message is delivered only if one of them accepts it."""


def _copies(smtp: SmtpSettings) -> tuple[list[Address], list[Address]]:
    return [_address(a) for a in smtp.cc], [_address(smtp.bcc)] if smtp.bcc else []


def _envelope(to: list[Address], cc: list[Address],
              bcc: list[Address]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The envelope recipients (To, Cc, Bcc, each once) and the addressees (To)."""
    return (_unique(a.addr_spec for a in (*to, *cc, *bcc)),
            _unique(a.addr_spec for a in to))


def _to(addresses: str, display_name: str, what: str) -> list[Address]:
    if not addresses or not addresses.strip():
        raise ValueError(f"{what}: no email address")
    if any(c in addresses for c in "\r\n"):
        raise ValueError(f"{what}: unusable email address {addresses!r}")
    name = _single_line(display_name)
    return [_address(a, name) for a in addresses.split(",")]


def build(item: Outgoing, seller: SellerSettings, env: jinja2.Environment,
          smtp: SmtpSettings | None = None) -> Built:
    """The complete message of one invoice and its envelope recipients.

    Args:
        item: the rendered invoice.
        seller: the sender (``From`` and envelope sender).
        env: the Jinja environment of the email templates (autoescaping ``.html``).
        smtp: cc, bcc and the customers who also get the XML; none: no copies, no XML.

    Raises:
        ValueError: an address (the customer's, cc or bcc) is unusable, or the XML to
            attach cannot be read from the PDF.
        PipelineError: a template cannot be rendered.
    """
    smtp = smtp or SmtpSettings()
    doc = item.doc
    to = _to(doc.email or "", doc.buyer.name, f"invoice {doc.number}")
    cc, bcc = _copies(smtp)

    lang = language(doc.language)
    context = {"doc": doc, "lang": lang}
    message = EmailMessage(policy=_POLICY)
    message["From"] = _address(seller.email, _single_line(seller.legal_name))
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = _single_line(render_template(env, f"emails/{lang}/subject.txt",
                                                      **context))
    message["Date"] = format_datetime(datetime.combine(doc.issue_date, time(6, 0), UTC))
    message["Message-ID"] = keys.message_id(doc.number, item.sha256,
                                            seller.email.rpartition("@")[2])
    message.set_content(render_template(env, f"emails/{lang}/body.txt", **context))
    message.add_alternative(render_template(env, f"emails/{lang}/body.html", **context),
                            subtype="html")
    alternative_boundary = f"=_alt_{keys.digest(doc.number, item.sha256, 'alt')[:32]}"
    message.set_boundary(alternative_boundary)
    stem = keys.safe_component(doc.number)
    message.add_attachment(item.pdf, maintype="application", subtype="pdf",
                           filename=f"{stem}.pdf")
    if doc.customer_id in smtp.xml_customers:
        try:
            xml = embedded_xml(item.pdf)
        except (ValueError, zlib.error) as exc:
            raise ValueError(f"invoice {doc.number}: cannot attach {XML_NAME}: {exc}") from exc
        message.add_attachment(xml, maintype="application", subtype="xml", filename=XML_NAME)
    # "=_" cannot occur in quoted-printable or base64 bodies, so these fixed boundaries are
    # safe; neither is a prefix of the other ("_alt_" is not hex).
    message.set_boundary(f"=_{keys.digest(doc.number, item.sha256)[:32]}")
    return Built(message.as_bytes(), *_envelope(to, cc, bcc))


def letter_context(letter_id: str, kind: str, day: date, envelope: LetterEnvelope,
                   seller: SellerSettings) -> dict[str, Any]:
    """What the letter message templates may use: ``letter`` (id, kind ``dunning`` or
    ``statement``, title, day, customer), ``seller`` (name) and ``lang``."""
    return {"letter": {"id": letter_id, "kind": kind, "title": envelope.title, "day": day,
                       "customer": envelope.name},
            "seller": {"name": seller.legal_name}, "lang": language(envelope.language)}


def build_letter(letter_id: str, kind: str, day: date, envelope: LetterEnvelope, pdf: bytes,
                 sha256: str, seller: SellerSettings, env: jinja2.Environment,
                 smtp: SmtpSettings | None = None) -> Built:
    """The message carrying a letter (a dunning letter, a statement) as a PDF: the words
    from ``emails/<lang>/letter_subject.txt`` and ``letter_body.txt``/``.html``, the same
    copies as invoices (the AR mailbox sees its reminders go out), deterministic like them.

    Raises:
        ValueError: an address is unusable.
        PipelineError: a template cannot be rendered.
    """
    smtp = smtp or SmtpSettings()
    to = _to(envelope.email or "", envelope.name, f"letter {letter_id}")
    cc, bcc = _copies(smtp)
    lang = language(envelope.language)
    context = letter_context(letter_id, kind, day, envelope, seller)
    message = EmailMessage(policy=_POLICY)
    message["From"] = _address(seller.email, _single_line(seller.legal_name))
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = _single_line(render_template(
        env, f"emails/{lang}/letter_subject.txt", **context))
    message["Date"] = format_datetime(datetime.combine(day, time(6, 0), UTC))
    message["Message-ID"] = keys.message_id(letter_id, sha256, seller.email.rpartition("@")[2])
    message.set_content(render_template(env, f"emails/{lang}/letter_body.txt", **context))
    message.add_alternative(render_template(env, f"emails/{lang}/letter_body.html", **context),
                            subtype="html")
    message.set_boundary(f"=_alt_{keys.digest(letter_id, sha256, 'alt')[:32]}")
    message.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename=f"{keys.safe_component(letter_id)}.pdf")
    message.set_boundary(f"=_{keys.digest(letter_id, sha256)[:32]}")
    return Built(message.as_bytes(), *_envelope(to, cc, bcc))


def build_message(item: Outgoing, seller: SellerSettings, env: jinja2.Environment,
                  smtp: SmtpSettings | None = None) -> bytes:
    """The complete RFC 5322 message of one invoice (see ``build``)."""
    return build(item, seller, env, smtp).data


class EmailFormatter:
    """One message parcel per invoice, for the outbox (``<number>.eml``) or SMTP."""

    name = "email"

    def __init__(self, seller: SellerSettings, env: jinja2.Environment,
                 smtp: SmtpSettings) -> None:
        """Args:
            seller: the sender of every message.
            env: the Jinja environment of ``templates/`` (the email templates).
            smtp: cc, bcc and the customers whose messages carry the XML.
        """
        self.seller, self.env, self.smtp = seller, env, smtp

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """A parcel per invoice; an invoice whose message cannot be built fails alone."""
        result = Formatted()
        for item in items:
            number = item.doc.number
            try:
                name = f"{keys.safe_component(number)}.eml"
                built = build(item, self.seller, self.env, self.smtp)
            except (ValueError, PipelineError) as exc:
                result.failures[number] = f"email not built: {exc}"
                continue
            result.parcels.append(Parcel(name, built.data, (number,), built.recipients,
                                         sender=self.seller.email,
                                         addressees=built.addressees))
        return result
