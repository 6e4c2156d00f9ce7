"""Real servers on loopback for the tests, one section per protocol.

SMTP: ``SmtpTestServer`` runs aiosmtpd on 127.0.0.1 and a free port (a socket
bound before the server starts, so no other process can take the port in
between), in its own thread. Its ``RecordingHandler`` records every message it
accepts (envelope, bytes, which connection carried it, TLS, login) and can be
told to misbehave: answer a reply (421, 451, 554...) to the first N commands
of a kind (``fail``), refuse or defer given recipients (``refuse``), close the
connection after K accepted messages (``drop_after``), cut the connection
once a message's data is in without answering (``vanish_on``) or answer DATA
late (``answer_delay_s``). ``self_signed_tls`` makes a certificate for
STARTTLS and implicit TLS; ``users`` turns on AUTH. Fixtures: ``smtp_server``
(a plain server for one test), ``smtp_servers`` (start servers with options:
TLS, AUTH), ``smtp_tls`` (a certificate for the session). A test module loads
them with ``pytest_plugins = ["tests.servers"]``.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipeline.settings import SmtpSettings

__all__ = ["ReceivedMail", "RecordingHandler", "SmtpTestServer", "TlsPair", "self_signed_tls",
           "smtp_server", "smtp_servers", "smtp_tls"]


# -- SMTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted (or, for ``vanish_on``, took without answering)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    connection: int
    """Which connection carried it: 1 for the first the server accepted, 2 for the next..."""
    tls: bool
    login: str | None
    mail_options: tuple[str, ...] = ()


@dataclass
class _Fault:
    reply: str
    times: int | None  # None: every time
    close: bool


@dataclass
class RecordingHandler:
    """aiosmtpd hooks that record what arrives and misbehave on request (thread-safe)."""

    received: list[ReceivedMail] = field(default_factory=list)
    connections: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    answer_delay_s: float = 0.0
    """How long DATA's answer waits once the message is in (a slow or stuck relay)."""
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)
    _refusals: dict[str, _Fault] = field(default_factory=dict)
    _refused_subjects: dict[str, str] = field(default_factory=dict)
    _drop_after: set[int] = field(default_factory=set)
    _vanish_on: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what the test asks for -------------------------------------------------------

    def fail(self, command: str, times: int, reply: str, *, close: bool | None = None) -> None:
        """Answer ``reply`` to the next ``times`` commands ``command`` (MAIL, RCPT, DATA).

        DATA's answer is the one after the message's data, so a failed DATA has been
        transmitted but is not recorded. ``close`` (default: for 421 replies, as RFC 5321
        wants) closes the connection after the reply.
        """
        close = reply.startswith("421") if close is None else close
        with self._lock:
            self._faults.setdefault(command.upper(), []).append(_Fault(reply, times, close))

    def refuse(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer ``reply`` to RCPT TO:<address>, always or for its first ``times`` RCPTs."""
        with self._lock:
            self._refusals[address.lower()] = _Fault(reply, times, reply.startswith("421"))

    def refuse_subjects(self, words: dict[str, str]) -> None:
        """Answer DATA with ``words[w]`` for a message whose Subject holds the word ``w``
        (an invoice number): faults aimed at chosen invoices, whoever they go to. An empty
        dict accepts everything again."""
        with self._lock:
            self._refused_subjects = dict(words)

    def drop_after(self, k: int) -> None:
        """Close the connection right after answering 250 to the k-th message (1-based)."""
        self._drop_after.add(k)

    def vanish_on(self, k: int) -> None:
        """Take the k-th message's data, record it, and cut the connection without answering."""
        self._vanish_on.add(k)

    def mails_to(self, address: str) -> list[ReceivedMail]:
        """Every message whose envelope names ``address``."""
        return [m for m in self.received if address in m.rcpt_tos]

    # -- aiosmtpd hooks ---------------------------------------------------------------

    def _fault(self, command: str) -> _Fault | None:
        with self._lock:
            self.commands[command] += 1
            queue = self._faults.get(command, [])
            while queue:
                fault = queue[0]
                if fault.times is not None and fault.times <= 0:
                    queue.pop(0)
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    @staticmethod
    def _answer(server: SMTP, fault: _Fault) -> str:
        if fault.close and server.transport is not None:
            server.loop.call_soon(server.transport.close)  # after the reply is written
        return fault.reply

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if fault := self._fault("MAIL"):
            return self._answer(server, fault)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if fault := self._fault("RCPT"):
            return self._answer(server, fault)
        with self._lock:
            refusal = self._refusals.get(address.lower())
            if refusal and refusal.times is not None:
                if refusal.times <= 0:
                    refusal = None
                else:
                    refusal.times -= 1
        if refusal:
            return self._answer(server, refusal)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.commands["QUIT"] += 1
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if fault := self._fault("DATA"):
            return self._answer(server, fault)
        subject = email.message_from_bytes(bytes(envelope.original_content or b""),
                                           policy=email.policy.default)["Subject"]
        with self._lock:
            refusal = next((reply for word, reply in self._refused_subjects.items()
                            if word in str(subject).split()), None)
        if refusal:
            return refusal
        transport = server.transport
        auth = getattr(session, "auth_data", None)
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from), rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            connection=getattr(server, "connection_number", 0),
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            mail_options=tuple(envelope.mail_options))
        with self._lock:
            self.received.append(mail)
            n = len(self.received)
        if n in self._vanish_on and transport is not None:
            transport.abort()  # nothing more is written: the client never hears back
            return "250 2.0.0 Ok: never heard"
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        if n in self._drop_after and transport is not None:
            server.loop.call_soon(transport.close)
        return f"250 2.0.0 Ok: queued as Q{n:05d}"


@dataclass(frozen=True)
class TlsPair:
    """A self-signed certificate for 127.0.0.1 / localhost: the server's and a client's view."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    cert_pem: bytes


def self_signed_tls() -> TlsPair:
    """A fresh key and certificate (EC P-256) valid for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads files only
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return TlsPair(server, client, cert_pem)


class _Controller(Controller):
    """aiosmtpd's controller on a socket bound beforehand, numbering connections."""

    def __init__(self, handler: RecordingHandler, sock: socket.socket, **kwargs: Any) -> None:
        self._sock = sock
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock,
                                       ssl=self.ssl_context)

    def factory(self) -> SMTP:
        server = super().factory()
        with self.handler._lock:
            self.handler.connections += 1
            server.connection_number = self.handler.connections  # type: ignore[attr-defined]
        return server


class SmtpTestServer:
    """aiosmtpd on 127.0.0.1 and a free port, in a thread, with a recording handler.

    Args:
        tls: a certificate; with it the server offers (and requires) STARTTLS, or, with
            ``implicit_tls``, speaks TLS from the first byte.
        implicit_tls: SMTPS instead of STARTTLS.
        users: login -> password; with it AUTH is required (over TLS unless
            ``auth_require_tls`` is false).
    """

    def __init__(self, *, tls: TlsPair | None = None, implicit_tls: bool = False,
                 users: dict[str, str] | None = None, auth_require_tls: bool = True) -> None:
        self.handler = RecordingHandler()
        self.tls, self.implicit_tls = tls, implicit_tls
        self.host = "127.0.0.1"
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it aiosmtpd's line-by-line replies wait for delayed ACKs (40 ms per EHLO).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port: int = sock.getsockname()[1]
        kwargs: dict[str, Any] = {"server_hostname": "mx.test.example", "ready_timeout": 10}
        if tls and implicit_tls:
            kwargs["ssl_context"] = tls.server
        elif tls:
            kwargs.update(tls_context=tls.server, require_starttls=True)
        if users:
            kwargs.update(authenticator=_authenticator(users), auth_required=True,
                          auth_require_tls=auth_require_tls)
        self._controller = _Controller(self.handler, sock, **kwargs)

    @property
    def received(self) -> list[ReceivedMail]:
        """Every message accepted so far."""
        return self.handler.received

    def settings(self, **overrides: Any) -> SmtpSettings:
        """``[smtp]`` pointing at this server: quick retries, short timeouts."""
        values: dict[str, Any] = {
            "host": self.host, "port": self.port,
            "starttls": bool(self.tls) and not self.implicit_tls,
            "implicit_tls": self.implicit_tls, "retries": 4, "backoff_s": 0.01,
            "timeout_s": 5}
        return SmtpSettings(**(values | overrides))

    def start(self) -> SmtpTestServer:
        self._controller.start()
        with self.handler._lock:  # the controller's own readiness probe is not a client
            self.handler.connections = 0
        return self

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until ``count`` messages have arrived (a vanished answer races the test)."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _authenticator(users: dict[str, str]) -> Any:
    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and users.get(auth_data.login.decode()) == auth_data.password.decode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return authenticate


@pytest.fixture()
def smtp_server() -> Iterator[SmtpTestServer]:
    """A plain SMTP server (no TLS, no AUTH) for one test."""
    with SmtpTestServer() as server:
        yield server


@pytest.fixture()
def smtp_servers() -> Iterator[Callable[..., SmtpTestServer]]:
    """Start servers with ``SmtpTestServer``'s options; all are stopped after the test."""
    started: list[SmtpTestServer] = []

    def start(**options: Any) -> SmtpTestServer:
        started.append(SmtpTestServer(**options).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def smtp_tls() -> TlsPair:
    """One self-signed certificate for the session's TLS servers."""
    return self_signed_tls()
