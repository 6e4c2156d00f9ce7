"""The SMTP transport: parcels (complete RFC 5322 messages) to a relay, over one connection.

One connection is opened on the first parcel and reused for the next ones;
it is upgraded with STARTTLS (or TLS from the first byte) and authenticated
as the settings say. A 4xx answer, a refused, reset, timed-out or dropped
connection is retried with exponential backoff, on a new connection when the
old one is gone; a 5xx answer is final. Recipients are handled one by one: a
recipient refused for good does not stop the others, and a recipient deferred
(4xx) is retried alone, so nobody receives the message twice because somebody
else was deferred.

What is guaranteed when the connection drops. SMTP hands the responsibility
for a message to the server with the server's answer to the final ``.`` of
DATA (RFC 5321, 4.1.1.4 and 6.1). A failure before the whole message was
sent cannot have delivered it, and is retried. A failure after the whole
message was sent and before that answer arrived (a drop, a timeout) leaves
the message *in doubt*: the relay may have queued it. It is never resent
blindly: ``SmtpInDoubtError`` (transient, ``in_doubt = True``) says so, for
the journal to record it ``in_doubt`` until an operator resends it (with the
same Message-ID, so receiving systems can de-duplicate) or finds it in the
relay's log. Hence: every parcel for which ``deliver`` returned reached the
relay exactly once; a parcel that raised ``SmtpInDoubtError`` reached it at
most once; any other error means it did not reach it at all (for the
recipients it names).

The password is read from its ``SecretStr`` only when logging in, and never
appears in a log record or an error message.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from pipeline.channels.transports.base import (
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
    TransportReceipt,
    register_transport,
)
from pipeline.settings import SmtpSettings

__all__ = ["SmtpTransport", "SmtpRefusedError", "SmtpDeferredError", "SmtpInDoubtError"]

_log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0
"""No single wait between two attempts is longer than this, however many retries."""

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_EOL = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_ADDRESS = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")


class SmtpRefusedError(TerminalDeliveryError):
    """The relay refused the message for good (5xx), or it cannot be sent as it is.

    Attributes:
        code: the server's code (the first one when recipients got several), or None when the
            refusal is ours (an unusable address, a TLS or configuration problem).
        replies: the answer per refused recipient (every recipient gets the same one when
            the message, the connection or the set-up was refused; ``*`` when no address
            was usable).
    """

    def __init__(self, message: str, code: int | None, replies: dict[str, str]) -> None:
        super().__init__(message)
        self.code, self.replies = code, dict(replies)


class SmtpDeferredError(TransientDeliveryError):
    """The relay deferred the message (4xx) or could not be reached, retries included.

    Attributes:
        code: the last 4xx code, or None after a connection failure.
        replies: the last answer per recipient still waiting.
    """

    def __init__(self, message: str, code: int | None, replies: dict[str, str]) -> None:
        super().__init__(message)
        self.code, self.replies = code, dict(replies)


class SmtpInDoubtError(TransientDeliveryError):
    """The whole message was sent, then the connection failed before the server answered.

    The relay may or may not have queued it: it is not resent automatically.
    """

    in_doubt = True

    def __init__(self, message: str, message_id: str | None) -> None:
        super().__init__(message)
        self.message_id = message_id


@dataclass
class _Attempt:
    """What one SMTP transaction did for the recipients it tried."""

    accepted: list[str] = field(default_factory=list)
    reply: str = ""
    temporary: dict[str, str] = field(default_factory=dict)
    permanent: dict[str, str] = field(default_factory=dict)
    code: int | None = None
    stale: bool = False
    """The reused connection had died before the first command: reconnect at once."""


def _reply(code: int, text: bytes | str) -> str:
    """A server answer on one line: ``250 2.0.0 Ok: queued as ABC``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(f"{code} {text}".split())


def _transient(code: int) -> bool:
    return not 500 <= code < 600


def _payload(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, the final ``.``."""
    data = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", data))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found = _MESSAGE_ID.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


def _listing(replies: dict[str, str]) -> str:
    """``a@x: 550 ...; b@y: 450 ...``, or the reply alone when every recipient got it."""
    if len(set(replies.values())) == 1:
        return next(iter(replies.values()))
    return "; ".join(f"{who}: {reply}" for who, reply in replies.items())


@register_transport("smtp")
class SmtpTransport:
    """Sends parcels to the relay of ``[smtp]`` over one reused connection.

    Not thread-safe: use one transport per thread or process.
    """

    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None,
                 local_hostname: str | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Prepare the transport; nothing connects before the first parcel.

        Args:
            settings: the ``[smtp]`` section; ``host`` must be set.
            ssl_context: the TLS context for STARTTLS and implicit TLS (default: the
                system's trusted CAs, host name checked); tests pass one trusting their
                self-signed certificate.
            local_hostname: the name given in EHLO (default: this machine's FQDN).
            sleep: how to wait between attempts and for the rate limit.
            clock: a monotonic clock, for the rate limit.
        """
        if not settings.host:
            raise ValueError("the SMTP transport needs a relay host: set INVOICES_SMTP__HOST "
                             "(or leave the email channel on the outbox transport)")
        self.settings = settings
        self.host: str = settings.host
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self._sleep, self._clock = sleep, clock
        self._conn: smtplib.SMTP | None = None
        self._next_send = float("-inf")
        self.connections = 0
        """Connections opened so far (a figure for tests and benchmarks)."""

    # -- public API ------------------------------------------------------------------------

    def deliver(self, parcel: Parcel) -> TransportReceipt:
        """Send one message to its envelope recipients.

        Returns:
            ``sent`` with the server's answer to DATA; ``refused`` names the recipients
            the server refused (5xx, or still 4xx once the retries are spent) while it
            accepted the others.

        Raises:
            SmtpRefusedError: (terminal) every recipient, or the message, was refused for
                good; or the message, an address or the TLS set-up cannot work.
            SmtpDeferredError: (transient) nothing was accepted and the last answers were
                4xx or connection failures, after ``retries`` retries.
            SmtpInDoubtError: (transient) the connection failed after the whole message
                was sent and before the server's answer; it is not resent.
        """
        what = f"invoice {', '.join(parcel.numbers)}" if parcel.numbers else parcel.name
        unusable = self._unusable_envelope(parcel)
        if unusable:
            raise SmtpRefusedError(f"{what}: {unusable}; nothing was sent. Fix the address "
                                   "in the extract (or the settings) and re-run.", None,
                                   {"*": unusable})
        pending = list(dict.fromkeys(parcel.recipients))
        payload = _payload(parcel.data)
        delivered: list[str] = []
        refused: dict[str, str] = {}
        final = ""
        retried = 0
        reconnected_at_once = False
        started = self._clock()
        while True:
            result = self._attempt(parcel, payload, pending, what)
            if result.accepted:
                delivered += result.accepted
                final = result.reply
            refused.update(result.permanent)
            pending = list(result.temporary)
            if not pending:
                break
            if result.stale and not reconnected_at_once:
                reconnected_at_once = True  # the relay closed an idle connection: no backoff
                continue
            if retried >= self.settings.retries:
                break
            retried += 1
            delay = min(self.settings.backoff_s * 2 ** (retried - 1), MAX_BACKOFF_S)
            _log.warning("%s: %s; retry %d of %d in %.1f s", what,
                         _listing(result.temporary), retried, self.settings.retries, delay)
            self._sleep(delay)

        if delivered:
            refused.update(result.temporary)  # deferred until the retries ran out
            return TransportReceipt("sent", final, refused)
        attempts = retried + 1
        if result.temporary:
            waiting = {**refused, **result.temporary}
            raise SmtpDeferredError(
                f"{what}: not sent after {attempts} attempt(s) in "
                f"{self._clock() - started:.1f} s to {self._where()}: {_listing(waiting)}. "
                "Nothing was accepted; a later run retries it.", result.code, waiting)
        if result.code is None:  # refused on our side: TLS, SMTPUTF8, a setting
            raise SmtpRefusedError(f"{what}: not sent: {_listing(refused)}. Retrying will not "
                                   "help: fix the [smtp] settings and re-run.", None, refused)
        raise SmtpRefusedError(
            f"{what}: refused by {self._where()}: {_listing(refused)}. Retrying will not help: "
            "fix the address or the message (or the relay's settings) and re-run.",
            result.code, refused)

    def close(self) -> None:
        """QUIT and close the connection; the next parcel opens a new one."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- one transaction --------------------------------------------------------------------

    def _attempt(self, parcel: Parcel, payload: bytes, recipients: list[str],
                 what: str) -> _Attempt:
        """One MAIL/RCPT/DATA transaction for ``recipients``; raises only when in doubt."""
        reused = self._conn is not None
        try:
            conn = self._connection()
        except (smtplib.SMTPException, OSError) as exc:
            transient, code, reply = self._classify(exc)
            return self._all(recipients, reply, transient, code)

        progressed = False
        try:
            self._throttle()
            options = self._mail_options(conn, parcel)
            if options is None:
                reply = (f"{self._where()} does not offer SMTPUTF8, needed for a non-ASCII "
                         "address")
                return self._all(recipients, reply, False, None)
            code, text = conn.mail(parcel.sender, options)
            progressed = True
            if code != 250:
                self._end_transaction(conn, code)
                outcome = self._all(recipients, _reply(code, text), _transient(code), code)
                outcome.stale = reused and code == 421  # e.g. "421 4.4.2 timeout exceeded"
                return outcome

            result = _Attempt()
            for rcpt in recipients:
                code, text = conn.rcpt(rcpt)
                if code in (250, 251):
                    result.accepted.append(rcpt)
                elif code == 421:  # the server is closing: nothing was sent, all retried
                    self._drop()
                    return self._all(recipients, _reply(code, text), True, code)
                elif _transient(code):
                    result.temporary[rcpt] = _reply(code, text)
                    result.code = code
                else:
                    result.permanent[rcpt] = _reply(code, text)
                    result.code = result.code or code
            if not result.accepted:
                self._end_transaction(conn, None)
                return result

            code, text = conn.docmd("DATA")
            if code != 354:
                self._end_transaction(conn, code)
                return self._fail_accepted(result, _reply(code, text), code)
            conn.send(payload)  # raises before the final "." went out: safe to retry
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            transient, code_, reply = self._classify(exc)
            outcome = self._all(recipients, reply, transient, code_)
            outcome.stale = reused and not progressed and transient
            return outcome

        try:
            code, text = conn.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            message_id = _message_id(parcel.data)
            raise SmtpInDoubtError(
                f"{what}: the whole message was sent to {self._where()}, then the connection "
                f"failed before its answer ({exc}); the relay may have queued it. Not resent "
                f"automatically: look for Message-ID {message_id} in the relay's log, and "
                "resend it only if it is not there.", message_id) from exc
        if code == 421:
            self._drop()
        if 200 <= code < 300:
            result.reply = _reply(code, text)
            return result
        return self._fail_accepted(result, _reply(code, text), code)

    @staticmethod
    def _all(recipients: Iterable[str], reply: str, transient: bool,
             code: int | None) -> _Attempt:
        replies = dict.fromkeys(recipients, reply)
        if transient:
            return _Attempt(temporary=replies, code=code)
        return _Attempt(permanent=replies, code=code)

    @staticmethod
    def _fail_accepted(result: _Attempt, reply: str, code: int) -> _Attempt:
        """The message was refused after RCPT: the accepted recipients share its fate."""
        target = result.temporary if _transient(code) else result.permanent
        target.update(dict.fromkeys(result.accepted, reply))
        result.accepted, result.code = [], code
        return result

    def _end_transaction(self, conn: smtplib.SMTP, code: int | None) -> None:
        """Leave the connection ready for the next message (RSET), or drop it after 421."""
        if code == 421:
            self._drop()
            return
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    @staticmethod
    def _unusable_envelope(parcel: Parcel) -> str:
        if not parcel.recipients:
            return "no recipient"
        for address in (parcel.sender, *parcel.recipients):
            if not _ADDRESS.match(address):
                return f"unusable address {address!r}"
        return ""

    @staticmethod
    def _mail_options(conn: smtplib.SMTP, parcel: Parcel) -> list[str] | None:
        options = []
        if not parcel.data.isascii() and conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (parcel.sender, *parcel.recipients)):
            if not conn.has_extn("smtputf8"):
                return None
            options.append("SMTPUTF8")
        return options

    # -- the connection ---------------------------------------------------------------------

    def _where(self) -> str:
        return f"the relay {self.host}:{self.settings.port}"

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _connection(self) -> smtplib.SMTP:
        """The open connection, or a new one: TLS and AUTH done."""
        if self._conn is not None:
            return self._conn
        s = self.settings
        if self._local_hostname is None:  # looked up once, not at every connection
            self._local_hostname = socket.getfqdn()
        conn: smtplib.SMTP
        if s.implicit_tls:
            conn = smtplib.SMTP_SSL(self.host, s.port, local_hostname=self._local_hostname,
                                    timeout=s.timeout_s, context=self._context())
        else:
            conn = smtplib.SMTP(self.host, s.port, local_hostname=self._local_hostname,
                                timeout=s.timeout_s)
        self.connections += 1
        try:
            # Commands wait for their reply anyway; without this, the last TLS record of a
            # message waits for the relay's delayed ACK (about 40 ms a message).
            if conn.sock is not None:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.ehlo_or_helo_if_needed()
            if s.starttls and not s.implicit_tls:
                conn.starttls(context=self._context())
                conn.ehlo_or_helo_if_needed()
            if s.username:
                if not (s.starttls or s.implicit_tls):
                    _log.warning("AUTH as %s to %s without TLS: the password crosses the "
                                 "network in clear", s.username, self._where())
                secret = s.password.get_secret_value() if s.password else ""
                conn.login(s.username, secret)
        except BaseException:
            conn.close()
            raise
        _log.info("connected to %s%s%s", self._where(),
                  " (TLS)" if s.implicit_tls else " (STARTTLS)" if s.starttls else "",
                  f" as {s.username}" if s.username else "")
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _throttle(self) -> None:
        """At most ``rate_per_s`` transactions a second (0: no limit)."""
        if self.settings.rate_per_s <= 0:
            return
        now = self._clock()
        if self._next_send > now:
            self._sleep(self._next_send - now)
            now = self._next_send
        self._next_send = now + 1 / self.settings.rate_per_s

    def _classify(self, exc: BaseException) -> tuple[bool, int | None, str]:
        """(transient?, code, reply) of a failure outside a server's answer to a command."""
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            code = exc.smtp_code
            return (_transient(code), code,
                    f"AUTH as {self.settings.username} refused: {_reply(code, exc.smtp_error)}; "
                    "check INVOICES_SMTP__USERNAME and INVOICES_SMTP__PASSWORD")
        if isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            return (code < 0 or _transient(code), code, _reply(code, exc.smtp_error))
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            hint = ("set INVOICES_SMTP__STARTTLS=false only for a local relay"
                    if "STARTTLS" in str(exc) else "check the [smtp] settings")
            return False, None, f"{self._where()}: {exc}; {hint}"
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return True, None, f"connection to {self._where()} lost: {exc}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (False, None, f"TLS certificate of {self._where()} not trusted: "
                    f"{exc.verify_message}")
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return True, None, f"TLS connection to {self._where()} closed: {exc}"
        if isinstance(exc, ssl.SSLError):
            return (False, None, f"TLS with {self._where()} failed: {exc}; check "
                    "INVOICES_SMTP__PORT, __STARTTLS and __IMPLICIT_TLS")
        if isinstance(exc, OSError):
            return True, None, f"cannot reach {self._where()}: {exc.strerror or exc}"
        return False, None, f"{self._where()}: {exc}"
