"""Email over SMTP against a real aiosmtpd server on loopback.

The transport: one connection for many messages; 4xx answers and dropped
connections retried so that every message arrives exactly once; a message
whose answer was lost after its data went out is reported in doubt, never
resent; 5xx answers and refused recipients are final; STARTTLS, implicit TLS,
AUTH and the send rate. The formatter: text + HTML + PDF (+ Factur-X XML),
Cc and Bcc, and customer data that cannot inject anything.
"""

from __future__ import annotations

import email
import hashlib
import logging
import socket
import time
from dataclasses import replace
from email.message import EmailMessage
from email.policy import default, strict
from typing import TYPE_CHECKING

import pytest

from pipeline import keys
from pipeline.channels.base import Outgoing
from pipeline.channels.email import XML_NAME, EmailFormatter, build_message
from pipeline.channels.transports.base import (
    TRANSPORTS,
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
)
from pipeline.channels.transports.smtp import (
    SmtpDeferredError,
    SmtpInDoubtError,
    SmtpRefusedError,
    SmtpTransport,
)
from pipeline.einvoice.crosscheck import embedded_xml
from pipeline.render.engine import WeasyPrintEngine
from pipeline.render.templates import make_environment
from pipeline.settings import PROJECT_ROOT, Settings, SmtpSettings

if TYPE_CHECKING:
    from tests.servers import SmtpTestServer

pytest_plugins = ["tests.servers"]  # the smtp_server, smtp_servers and smtp_tls fixtures

TEMPLATES = PROJECT_ROOT / "templates"
SELLER = Settings().seller
SENDER = "facturation@atelier-numerique.example"


def parcel(i: int, *recipients: str) -> Parcel:
    """A small complete message; a line starting with a dot checks dot-stuffing."""
    to = recipients or (f"client{i}@client.example",)
    data = (f"From: {SENDER}\r\nTo: {', '.join(to)}\r\nSubject: Facture F{i:03d}\r\n"
            f"Message-ID: <m{i:03d}@atelier-numerique.example>\r\n\r\n"
            f"Bonjour,\r\n.ligne qui commence par un point {i}\r\n").encode()
    return Parcel(f"F{i:03d}.eml", data, (f"F{i:03d}",), to, SENDER)


def received_once_each(server: SmtpTestServer, parcels: list[Parcel]) -> None:
    """Every parcel arrived exactly once, with its envelope and its bytes."""
    by_data = {m.data: m for m in server.received}
    assert len(server.received) == len(by_data) == len(parcels)
    for p in parcels:
        mail = by_data[p.data]
        assert (mail.mail_from, mail.rcpt_tos) == (p.sender, p.recipients)


# -- the transport -----------------------------------------------------------------------


def test_registered_under_smtp() -> None:
    assert TRANSPORTS["smtp"] is SmtpTransport


def test_many_messages_travel_on_one_connection(smtp_server) -> None:
    parcels = [parcel(i) for i in range(25)]
    with SmtpTransport(smtp_server.settings()) as transport:
        receipts = [transport.deliver(p) for p in parcels]
    received_once_each(smtp_server, parcels)
    assert smtp_server.handler.connections == transport.connections == 1
    assert smtp_server.handler.commands["QUIT"] == 1  # close() says goodbye
    assert all(r.outcome == "sent" and not r.refused for r in receipts)
    assert [r.reply for r in receipts] == [f"250 2.0.0 Ok: queued as Q{n:05d}"
                                           for n in range(1, 26)]


def test_close_then_deliver_opens_a_new_connection(smtp_server) -> None:
    transport = SmtpTransport(smtp_server.settings())
    transport.deliver(parcel(1))
    transport.close()
    transport.close()  # twice is harmless
    transport.deliver(parcel(2))
    transport.close()
    assert smtp_server.handler.connections == 2 and len(smtp_server.received) == 2


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize("reply", ["421 4.3.2 Service shutting down, try later",
                                   "451 4.3.0 Temporary local problem"])
def test_4xx_to_the_first_commands_is_retried_and_every_message_arrives_once(
        smtp_server, command, reply) -> None:
    smtp_server.handler.fail(command, 3, reply)
    parcels = [parcel(i) for i in range(6)]
    with SmtpTransport(smtp_server.settings()) as transport:
        receipts = [transport.deliver(p) for p in parcels]
    received_once_each(smtp_server, parcels)
    assert all(r.outcome == "sent" and not r.refused for r in receipts)
    # 421 closes the connection (the client reconnects); 451 keeps it (RSET, try again).
    assert smtp_server.handler.connections == (4 if reply.startswith("421") else 1)


def test_backoff_doubles_between_retries(smtp_server) -> None:
    smtp_server.handler.fail("MAIL", 3, "451 4.3.0 Try again")
    waits: list[float] = []
    transport = SmtpTransport(smtp_server.settings(backoff_s=0.5), sleep=waits.append)
    transport.deliver(parcel(1))
    transport.close()
    assert waits == [0.5, 1.0, 2.0]
    assert len(smtp_server.received) == 1


def test_4xx_beyond_the_retries_is_transient(smtp_server) -> None:
    smtp_server.handler.fail("MAIL", 100, "452 4.3.1 Insufficient system storage")
    transport = SmtpTransport(smtp_server.settings(retries=2))
    with pytest.raises(SmtpDeferredError) as caught:
        transport.deliver(parcel(1))
    transport.close()
    assert isinstance(caught.value, TransientDeliveryError) and caught.value.retriable
    assert caught.value.code == 452
    assert "452 4.3.1 Insufficient system storage" in str(caught.value)
    assert "3 attempt(s)" in str(caught.value)
    assert smtp_server.handler.commands["MAIL"] == 3 and not smtp_server.received


def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, starttls=False,
                                           retries=1, backoff_s=0.01, timeout_s=2))
    with pytest.raises(SmtpDeferredError, match="cannot reach the relay 127.0.0.1"):
        transport.deliver(parcel(1))


def test_dropped_connection_mid_batch_reconnects_and_sends_each_once(smtp_server) -> None:
    smtp_server.handler.drop_after(3)
    smtp_server.handler.drop_after(7)
    parcels = [parcel(i) for i in range(10)]
    waits: list[float] = []
    with SmtpTransport(smtp_server.settings(), sleep=waits.append) as transport:
        for p in parcels:
            transport.deliver(p)
    received_once_each(smtp_server, parcels)
    assert smtp_server.handler.connections == 3
    assert [m.connection for m in smtp_server.received] == [1] * 3 + [2] * 4 + [3] * 3
    assert waits == []  # a connection closed between messages is reopened at once


def test_drop_after_the_data_went_out_is_in_doubt_and_never_resent(smtp_server) -> None:
    """The answer to DATA is lost: the relay has the message; resending would duplicate it."""
    smtp_server.handler.vanish_on(3)
    parcels = [parcel(i) for i in range(6)]
    outcomes: dict[int, object] = {}
    with SmtpTransport(smtp_server.settings()) as transport:
        for i, p in enumerate(parcels):
            try:
                outcomes[i] = transport.deliver(p)
            except SmtpInDoubtError as exc:
                outcomes[i] = exc
    doubt = outcomes[2]
    assert isinstance(doubt, SmtpInDoubtError) and isinstance(doubt, TransientDeliveryError)
    assert doubt.in_doubt and doubt.message_id == "<m002@atelier-numerique.example>"
    assert "Not resent" in str(doubt) and "<m002@atelier-numerique.example>" in str(doubt)
    assert all(o.outcome == "sent" for i, o in outcomes.items() if i != 2)  # type: ignore[union-attr]
    received_once_each(smtp_server, parcels)  # the one in doubt arrived, once
    assert smtp_server.handler.connections == 2


def test_answer_to_data_later_than_the_timeout_is_in_doubt(smtp_server) -> None:
    smtp_server.handler.answer_delay_s = 1.5
    transport = SmtpTransport(smtp_server.settings(timeout_s=0.3))
    with pytest.raises(SmtpInDoubtError):
        transport.deliver(parcel(1))
    smtp_server.handler.answer_delay_s = 0
    assert transport.deliver(parcel(2)).outcome == "sent"
    transport.close()
    smtp_server.wait_for(2)
    assert sorted(m.data for m in smtp_server.received) == sorted([parcel(1).data,
                                                                   parcel(2).data])


def test_a_refused_recipient_does_not_fail_the_others(smtp_server) -> None:
    reply = "550 5.1.1 <nobody@client.example>: Recipient address rejected: User unknown"
    smtp_server.handler.refuse("nobody@client.example", reply)
    p = parcel(1, "compta@client.example", "nobody@client.example", "ar@atelier.example")
    with SmtpTransport(smtp_server.settings()) as transport:
        receipt = transport.deliver(p)
    assert receipt.outcome == "sent" and receipt.reply.startswith("250 ")
    assert receipt.refused == {"nobody@client.example": reply}
    [mail] = smtp_server.received
    assert mail.rcpt_tos == ("compta@client.example", "ar@atelier.example")


def test_the_only_recipient_refused_is_terminal_with_the_reply(smtp_server) -> None:
    reply = "550 5.1.1 <nobody@client.example>: Recipient address rejected: User unknown"
    smtp_server.handler.refuse("nobody@client.example", reply)
    with SmtpTransport(smtp_server.settings()) as transport:
        with pytest.raises(SmtpRefusedError) as caught:
            transport.deliver(parcel(1, "nobody@client.example"))
        transport.deliver(parcel(2))  # the connection is still good (RSET)
    assert isinstance(caught.value, TerminalDeliveryError) and not caught.value.retriable
    assert caught.value.code == 550 and reply in str(caught.value)
    assert caught.value.replies == {"nobody@client.example": reply}
    assert smtp_server.handler.commands["RCPT"] == 2  # not retried
    assert [m.rcpt_tos for m in smtp_server.received] == [("client2@client.example",)]
    assert smtp_server.handler.connections == 1


def test_a_deferred_recipient_is_retried_alone(smtp_server) -> None:
    smtp_server.handler.refuse("busy@client.example", "450 4.2.1 Mailbox busy", times=2)
    p = parcel(1, "a@client.example", "busy@client.example", "c@client.example")
    with SmtpTransport(smtp_server.settings()) as transport:
        receipt = transport.deliver(p)
    assert receipt.refused == {}
    assert [m.rcpt_tos for m in smtp_server.received] == [
        ("a@client.example", "c@client.example"), ("busy@client.example",)]


def test_a_recipient_still_deferred_after_the_retries_is_reported(smtp_server) -> None:
    smtp_server.handler.refuse("busy@client.example", "450 4.2.1 Mailbox busy")
    p = parcel(1, "a@client.example", "busy@client.example")
    with SmtpTransport(smtp_server.settings(retries=2)) as transport:
        receipt = transport.deliver(p)
    assert receipt.outcome == "sent"
    assert receipt.refused == {"busy@client.example": "450 4.2.1 Mailbox busy"}
    assert [m.rcpt_tos for m in smtp_server.received] == [("a@client.example",)]


def test_5xx_after_the_data_is_terminal(smtp_server) -> None:
    smtp_server.handler.fail("DATA", 1, "554 5.7.1 Message rejected: looks like spam")
    with SmtpTransport(smtp_server.settings()) as transport:
        with pytest.raises(SmtpRefusedError, match="554 5.7.1 Message rejected"):
            transport.deliver(parcel(1))
        transport.deliver(parcel(2))
    assert smtp_server.handler.commands["DATA"] == 2
    assert [m.data for m in smtp_server.received] == [parcel(2).data]


@pytest.mark.parametrize("recipient", ["a@client.example\r\nRCPT TO:<x@evil.example>",
                                       "", "no-at-sign"])
def test_an_unusable_envelope_address_is_refused_before_connecting(smtp_server,
                                                                   recipient) -> None:
    transport = SmtpTransport(smtp_server.settings())
    p = replace(parcel(1), recipients=(recipient,) if recipient else ())
    with pytest.raises(SmtpRefusedError, match="nothing was sent"):
        transport.deliver(p)
    assert transport.connections == 0 and not smtp_server.received


def test_starttls_and_auth(smtp_servers, smtp_tls) -> None:
    server = smtp_servers(tls=smtp_tls, users={"ar-robot": "s3cret-pw"})
    settings = server.settings(username="ar-robot", password="s3cret-pw")
    assert settings.starttls and not settings.implicit_tls
    parcels = [parcel(i) for i in range(3)]
    with SmtpTransport(settings, ssl_context=smtp_tls.client) as transport:
        for p in parcels:
            transport.deliver(p)
        # No Nagle stall: the last TLS record of a message would wait ~40 ms for an ACK.
        sock = transport._conn.sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    received_once_each(server, parcels)
    assert all(m.tls and m.login == "ar-robot" for m in server.received)
    assert server.handler.connections == 1


def test_implicit_tls(smtp_servers, smtp_tls) -> None:
    server = smtp_servers(tls=smtp_tls, implicit_tls=True)
    with SmtpTransport(server.settings(), ssl_context=smtp_tls.client) as transport:
        transport.deliver(parcel(1))
    [mail] = server.received
    assert mail.tls


def test_a_certificate_not_trusted_is_terminal(smtp_servers, smtp_tls) -> None:
    server = smtp_servers(tls=smtp_tls)
    transport = SmtpTransport(server.settings())  # the system's CAs only
    with pytest.raises(SmtpRefusedError, match="certificate .* not trusted"):
        transport.deliver(parcel(1))
    assert not server.received


def test_a_plain_relay_without_starttls_refuses_to_downgrade_silently(smtp_server) -> None:
    transport = SmtpTransport(smtp_server.settings(starttls=True))
    with pytest.raises(SmtpRefusedError, match="INVOICES_SMTP__STARTTLS=false"):
        transport.deliver(parcel(1))
    assert not smtp_server.received


def test_a_wrong_password_is_terminal_and_never_shown(smtp_servers, smtp_tls, caplog) -> None:
    secret = "hunter2-not-the-password"
    caplog.set_level(logging.DEBUG)
    server = smtp_servers(tls=smtp_tls, users={"ar-robot": "s3cret-pw"})
    transport = SmtpTransport(server.settings(username="ar-robot", password=secret),
                              ssl_context=smtp_tls.client)
    with pytest.raises(SmtpRefusedError) as caught:
        transport.deliver(parcel(1))
    assert not server.received
    assert caught.value.code == 535 and "AUTH as ar-robot refused" in str(caught.value)
    assert "INVOICES_SMTP__PASSWORD" in str(caught.value)
    shown = [str(caught.value), repr(caught.value.args), repr(caught.value.replies),
             repr(transport.settings), caplog.text]
    assert not any(secret in text for text in shown)


def test_the_send_rate_is_limited(smtp_server) -> None:
    n, rate = 7, 20.0
    parcels = [parcel(i) for i in range(n)]
    with SmtpTransport(smtp_server.settings(rate_per_s=rate)) as transport:
        start = time.monotonic()
        for p in parcels:
            transport.deliver(p)
        elapsed = time.monotonic() - start
    received_once_each(smtp_server, parcels)
    assert (n - 1) / rate * 0.9 <= elapsed < (n - 1) / rate + 5  # loosely: about N/R


# -- the email formatter -----------------------------------------------------------------


@pytest.fixture(scope="module")
def items(sample_docs) -> list[Outgoing]:
    """Two rendered invoices (not credit notes), one with a purchase order."""
    engine = WeasyPrintEngine(TEMPLATES)
    docs = [d for d in sample_docs if not d.is_credit_note and d.email][:2]
    rendered = []
    for doc in docs:
        pdf = engine.render(doc)
        rendered.append(Outgoing(doc, pdf, hashlib.sha256(pdf).hexdigest()))
    return rendered


def _with(item: Outgoing, **changes) -> Outgoing:
    return replace(item, doc=replace(item.doc, **changes))


def _parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=strict)  # type: ignore[return-value]


def formatter(**smtp) -> EmailFormatter:
    return EmailFormatter(SELLER, make_environment(TEMPLATES), SmtpSettings(**smtp))


def test_message_has_text_and_html_bodies_and_the_pdf(items) -> None:
    item = items[0]
    formatted = formatter().format([item], "b-1")
    assert not formatted.failures
    [p] = formatted.parcels
    assert p.name == f"{keys.safe_component(item.doc.number)}.eml"
    assert p.numbers == (item.doc.number,) and p.sender == SELLER.email
    message = _parse(p.data)
    assert message.get_content_type() == "multipart/mixed"
    body = next(message.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in body.iter_parts()] == ["text/plain",
                                                                       "text/html"]
    assert item.doc.number in message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert item.doc.number in html and item.doc.buyer.name in html.replace("&#39;", "'")
    [pdf] = list(message.iter_attachments())
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content() == item.pdf
    assert p.data.isascii()  # 7-bit: any relay takes it


@pytest.mark.parametrize(("lang", "words"), [("fr", "Montant TTC"), ("en", "Total including VAT"),
                                             ("de", "Gesamtbetrag inkl. MwSt.")])
def test_html_body_is_localized(items, lang, words) -> None:
    [p] = formatter().format([_with(items[0], language=lang)], "b-1").parcels
    html = _parse(p.data).get_body(("html",)).get_content()
    assert f'<html lang="{lang}">' in html and words in html


def test_factur_x_xml_is_attached_for_the_customers_who_ask(items) -> None:
    asking, other = items
    formatted = formatter(xml_customers=[asking.doc.customer_id]).format([asking, other], "b")
    by_number = {p.numbers[0]: _parse(p.data) for p in formatted.parcels}
    attachments = list(by_number[asking.doc.number].iter_attachments())
    assert [a.get_filename() for a in attachments] == [
        f"{keys.safe_component(asking.doc.number)}.pdf", XML_NAME]
    assert attachments[1].get_content_type() == "application/xml"
    assert attachments[1].get_content() == embedded_xml(asking.pdf)
    if other.doc.customer_id != asking.doc.customer_id:
        assert len(list(by_number[other.doc.number].iter_attachments())) == 1


def test_cc_is_a_header_and_bcc_only_the_envelope(items) -> None:
    item = _with(items[0], email="compta@client.example, direction@client.example")
    f = formatter(cc=["ventes@atelier-numerique.example"], bcc="ar-archive@atelier.example")
    [p] = f.format([item], "b-1").parcels
    assert p.recipients == ("compta@client.example", "direction@client.example",
                            "ventes@atelier-numerique.example", "ar-archive@atelier.example")
    message = _parse(p.data)
    assert [a.addr_spec for a in message["To"].addresses] == ["compta@client.example",
                                                              "direction@client.example"]
    assert [a.addr_spec for a in message["Cc"].addresses] == [
        "ventes@atelier-numerique.example"]
    assert "Bcc" not in message and b"ar-archive" not in p.data


def test_no_cc_header_without_cc(items) -> None:
    [p] = formatter().format([items[0]], "b-1").parcels
    assert set(_parse(p.data).keys()) == {"From", "To", "Subject", "Date", "Message-ID",
                                          "MIME-Version", "Content-Type"}


HOSTILE_NAME = "Evil SARL\r\nBcc: victim@evil.example\r\n<script>alert(1)</script> & \"Co\""


def test_customer_name_cannot_inject_headers_recipients_or_markup(items) -> None:
    item = _with(items[0], email="compta@client.example",
                 buyer=replace(items[0].doc.buyer, name=HOSTILE_NAME))
    [p] = formatter().format([item], "b-1").parcels
    assert p.recipients == ("compta@client.example",)
    message = _parse(p.data)
    assert set(message.keys()) == {"From", "To", "Subject", "Date", "Message-ID",
                                   "MIME-Version", "Content-Type"}
    [to] = message["To"].addresses
    assert to.addr_spec == "compta@client.example" and "\n" not in to.display_name
    head = p.data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in head and b"victim@evil.example>" not in head
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;Co&#34;" in html


@pytest.mark.parametrize("address", ["a@client.example\nBcc: victim@evil.example",
                                     "not an address", "a@client.example,,b@client.example",
                                     "Evil <a@client.example>"])
def test_an_unusable_address_fails_that_invoice_alone(items, address) -> None:
    bad, good = _with(items[0], email=address), items[1]
    formatted = formatter().format([bad, good], "b-1")
    assert [p.numbers for p in formatted.parcels] == [(good.doc.number,)]
    assert list(formatted.failures) == [bad.doc.number]
    assert "address" in formatted.failures[bad.doc.number]


def test_a_bad_cc_setting_is_named(items) -> None:
    formatted = formatter(cc=["not-an-address"]).format([items[0]], "b-1")
    assert "not-an-address" in formatted.failures[items[0].doc.number]


def test_a_message_built_again_is_identical_with_the_same_message_id(items) -> None:
    item = items[0]
    first = formatter(cc=["x@atelier.example"]).format([item], "b-1").parcels[0]
    again = formatter(cc=["x@atelier.example"]).format([item], "b-2").parcels[0]
    assert first == again
    assert _parse(first.data)["Message-ID"] == keys.message_id(
        item.doc.number, item.sha256, SELLER.email.rpartition("@")[2])
    assert build_message(item, SELLER, make_environment(TEMPLATES),
                         SmtpSettings(cc=["x@atelier.example"])) == first.data


def test_invoices_arrive_over_smtp_with_the_archived_pdf(items, smtp_server) -> None:
    f = formatter(bcc="ar-archive@atelier.example")
    formatted = f.format(items, "b-1")
    with SmtpTransport(smtp_server.settings()) as transport:
        receipts = [transport.deliver(p) for p in formatted.parcels]
    assert all(r.outcome == "sent" for r in receipts)
    for item, mail in zip(items, smtp_server.received, strict=True):
        assert mail.mail_from == SELLER.email
        assert mail.rcpt_tos[-1] == "ar-archive@atelier.example"
        message = email.message_from_bytes(mail.data, policy=default)
        [pdf] = list(message.iter_attachments())
        assert hashlib.sha256(pdf.get_content()).hexdigest() == item.sha256
        assert "Bcc" not in message
