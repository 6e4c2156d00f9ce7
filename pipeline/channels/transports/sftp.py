"""SFTP transport: each parcel uploaded to its partner's server, never seen half-written.

A parcel goes to the ``[sftp.<partner>]`` named by ``parcel.partner`` (or the
transport's default partner). Its bytes are written to a hidden temporary name
in the partner's folder (``.<name>.<random>.part``), checked for size, flushed
to the server's disk when the server offers ``fsync@openssh.com``, and only then
renamed to ``<name>``: with the POSIX rename extension (``posix-rename@openssh.com``,
an atomic replace) when the server has it, otherwise by removing ``<name>`` and
renaming. A partner listing the folder therefore sees either no ``<name>`` or the
whole file under it, never part of it (without the extension, ``<name>`` may be
absent for a moment while an old copy is replaced).

Uploading the same parcel again is harmless: the same bytes replace the same
name. It is not de-duplicated, though: a partner that already fetched and
removed the file gets it again, so never sending twice is the delivery
journal's job, not this transport's.

The server's host key must be in the partner's ``known_hosts`` file; an unknown
or changed key is refused for good. Logins use the partner's ``key_file`` or its
password (``INVOICES_SFTP__<PARTNER>__PASSWORD``); nothing from ``~/.ssh``
(config, keys, agent) is used. One connection per partner is kept for the
following parcels and reopened when the server has dropped it.

Refused, timed-out or dropped connections are retried ``retries`` times with
exponential backoff and then raise ``TransientDeliveryError``; a refused host
key or login, a missing folder, a refused write and other answers of the server
raise ``TerminalDeliveryError`` at once.

asyncssh is asynchronous; the transport runs it on a private event loop in one
background thread, so ``deliver`` is an ordinary blocking call that works from
any thread (several threads may deliver at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncssh

from pipeline.channels.transports.base import (
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
    TransportReceipt,
    register_transport,
)

if TYPE_CHECKING:
    from pipeline.settings import SftpPartner

__all__ = ["SftpTransport"]

_T = TypeVar("_T")

# The server refused us for a reason that another attempt will not change.
_TERMINAL_DISCONNECTS: tuple[type[Exception], ...] = (
    asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied, asyncssh.KeyExchangeFailed,
    asyncssh.ProtocolNotSupported, asyncssh.IllegalUserName)
_CONNECTION_GONE: tuple[type[Exception], ...] = (
    asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)
# SFTP answers that mean the connection went away, or the disk is full for now.
_TRANSIENT_SFTP: tuple[type[Exception], ...] = (
    *_CONNECTION_GONE, asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)
_MISSING_FOLDER: tuple[type[Exception], ...] = (
    asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath, asyncssh.SFTPNotADirectory)
_WRITE_REFUSED: tuple[type[Exception], ...] = (
    asyncssh.SFTPPermissionDenied, asyncssh.SFTPWriteProtect)


class _Link:
    """One partner's open connection and its SFTP session."""

    def __init__(self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient) -> None:
        self.conn = conn
        self.sftp = sftp

    @property
    def alive(self) -> bool:
        return not self.conn.is_closed()

    async def close(self) -> None:
        self.sftp.exit()
        self.conn.close()
        try:
            await self.conn.wait_closed()
        except Exception:  # noqa: BLE001 - closing a broken connection tells nothing new
            pass


@register_transport("sftp")
class SftpTransport:
    """Uploads each parcel to ``<folder>/<parcel.name>`` on its partner's SFTP server.

    Args:
        partners: the ``[sftp.<partner>]`` settings by partner name (``Settings.sftp``).
        default_partner: the partner of parcels whose ``partner`` is empty.
        retries: further attempts after a refused, timed-out or dropped connection.
        backoff_s: the wait before the first retry, doubled before each next one.
        timeout_s: the longest a connection, a login or a silent server is waited for.
    """

    name = "sftp"

    def __init__(self, partners: dict[str, SftpPartner], default_partner: str = "", *,
                 retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30.0) -> None:
        if retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("retries and backoff_s must be >= 0 and timeout_s > 0")
        self.partners = dict(partners)
        self.default_partner = default_partner
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._links: dict[str, _Link] = {}         # touched only on the loop's thread
        self._locks: dict[str, asyncio.Lock] = {}  # idem
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- the blocking API -----------------------------------------------------------------

    def deliver(self, parcel: Parcel) -> TransportReceipt:
        """Upload the parcel under a temporary name, then rename it to ``parcel.name``.

        Args:
            parcel: its ``partner`` (or the default partner) chooses the server and folder.

        Returns:
            ``sent``, with ``sftp://user@host:port/folder/name (N bytes)`` as the reply.

        Raises:
            TerminalDeliveryError: unknown partner, refused host key or login, missing
                folder, refused write, or another refusal by the server.
            TransientDeliveryError: the server could not be reached or dropped the
                connection, ``retries`` times over.
        """
        key = parcel.partner or self.default_partner
        partner = self.partners.get(key)
        if partner is None:
            known = ", ".join(sorted(self.partners)) or "none"
            raise TerminalDeliveryError(
                f"no SFTP partner '{key}' for {parcel.name} (configured: {known}). Add a "
                f"[sftp.{key or '<partner>'}] section (host, username, known_hosts, folder; "
                "a key_file or the password in INVOICES_SFTP__"
                f"{(key or '<PARTNER>').upper()}__PASSWORD), then re-run.")
        name = parcel.name
        if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name:
            raise TerminalDeliveryError(
                f"'{name}' cannot be a file name on an SFTP server (partner {key}); the "
                "formatter must give a plain file name.")
        return self._run(self._deliver(key, partner, parcel))

    def close(self) -> None:
        """Close every connection and stop the background loop; ``deliver`` restarts it."""
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_links(), loop).result(self.timeout_s)
        except Exception:  # noqa: BLE001 - closing must not fail a run that has delivered
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout_s)
            if not thread.is_alive():
                loop.close()

    def __enter__(self) -> SftpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="sftp-transport",
                                          daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    # -- on the loop's thread -------------------------------------------------------------

    async def _deliver(self, key: str, partner: SftpPartner, parcel: Parcel) -> TransportReceipt:
        failures = 0
        reconnected_stale = False
        leftovers: list[str] = []  # temporary files of attempts cut short
        while True:
            reused = key in self._links
            try:
                link = await self._link(key, partner)
                remote = await self._upload(link.sftp, partner, parcel, leftovers)
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                error = self._classify(exc, key, partner, parcel)
                if isinstance(error, TerminalDeliveryError):
                    raise error from exc
                await self._drop(key)
                if reused and not reconnected_stale:
                    # The kept connection died while idle: reconnect at once, no backoff.
                    reconnected_stale = True
                    continue
                failures += 1
                if failures > self.retries:
                    raise error from exc
                await asyncio.sleep(self.backoff_s * 2 ** (failures - 1))
                continue
            for path in leftovers:
                with contextlib.suppress(asyncssh.SFTPError, OSError):
                    await link.sftp.remove(path)
            return TransportReceipt(
                "sent", f"sftp://{partner.username}@{partner.host}:{partner.port}/{remote} "
                        f"({len(parcel.data)} bytes)")

    async def _link(self, key: str, partner: SftpPartner) -> _Link:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            link = self._links.get(key)
            if link is not None and link.alive:
                return link
            if link is not None:
                await self._drop(key)
            link = await self._connect(key, partner)
            self._links[key] = link
            return link

    async def _connect(self, key: str, partner: SftpPartner) -> _Link:
        known_hosts = _read_known_hosts(key, partner)
        client_keys = [_read_key(key, partner)] if partner.key_file is not None else None
        password = partner.password.get_secret_value() if partner.password is not None else None
        if client_keys is None and password is None:
            raise TerminalDeliveryError(
                f"[sftp.{key}] has neither key_file nor password. Set key_file, or the password "
                f"in INVOICES_SFTP__{key.upper()}__PASSWORD, then re-run.")
        conn = await asyncssh.connect(
            partner.host, partner.port, username=partner.username, password=password,
            client_keys=client_keys, known_hosts=known_hosts, config=None, agent_path=None,
            gss_auth=False, gss_kex=False, host_based_auth=False,
            connect_timeout=self.timeout_s, login_timeout=self.timeout_s,
            keepalive_interval=self.timeout_s / 3, keepalive_count_max=3)
        try:
            sftp = await asyncio.wait_for(conn.start_sftp_client(), self.timeout_s)
        except BaseException:
            conn.close()
            raise
        return _Link(conn, sftp)

    async def _upload(self, sftp: asyncssh.SFTPClient, partner: SftpPartner, parcel: Parcel,
                      leftovers: list[str]) -> str:
        final = posixpath.normpath(posixpath.join(partner.folder, parcel.name))
        temp = posixpath.join(posixpath.dirname(final),
                              f".{parcel.name}.{secrets.token_hex(4)}.part")
        leftovers.append(temp)
        try:
            async with sftp.open(temp, "wb") as remote:
                await remote.write(parcel.data)
                try:
                    await remote.fsync()
                except asyncssh.SFTPOpUnsupported:
                    pass
            size = (await sftp.stat(temp)).size
            if size != len(parcel.data):
                raise asyncssh.SFTPFailure(
                    f"{temp} holds {size} bytes after writing {len(parcel.data)}")
            try:
                await sftp.posix_rename(temp, final)
            except asyncssh.SFTPOpUnsupported:
                try:
                    await sftp.remove(final)
                except asyncssh.SFTPNoSuchFile:
                    pass
                await sftp.rename(temp, final)
        except asyncssh.SFTPError as exc:
            if not isinstance(exc, _CONNECTION_GONE):  # still connected: tidy up now
                leftovers.remove(temp)
                with contextlib.suppress(asyncssh.SFTPError, OSError):
                    await sftp.remove(temp)
            raise
        leftovers.remove(temp)
        return final

    async def _drop(self, key: str) -> None:
        link = self._links.pop(key, None)
        if link is not None:
            await link.close()

    async def _close_links(self) -> None:
        for key in list(self._links):
            await self._drop(key)

    def _classify(self, exc: Exception, key: str, partner: SftpPartner,
                  parcel: Parcel) -> TerminalDeliveryError | TransientDeliveryError:
        where = f"{partner.host}:{partner.port}"
        folder = partner.folder
        if isinstance(exc, TerminalDeliveryError | TransientDeliveryError):
            return exc
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            pattern = partner.host if partner.port == 22 else f"[{partner.host}]:{partner.port}"
            return TerminalDeliveryError(
                f"the host key of {where} (partner {key}) is unknown to or differs from "
                f"{partner.known_hosts}: {exc.reason}. Nothing was uploaded. Check the key's "
                f"fingerprint with the partner, then put it in that file as '{pattern} <type> "
                "<key>', and re-run.")
        if isinstance(exc, asyncssh.PermissionDenied):
            secret = (f"key_file {partner.key_file}" if partner.key_file is not None else
                      f"the password in INVOICES_SFTP__{key.upper()}__PASSWORD")
            return TerminalDeliveryError(
                f"{where} refused the login of {partner.username} (partner {key}): {exc.reason}. "
                f"Check the username and {secret}, then re-run.")
        if isinstance(exc, _TERMINAL_DISCONNECTS):
            reason = getattr(exc, "reason", str(exc))
            return TerminalDeliveryError(
                f"{where} (partner {key}) refused the connection for good: {reason}. Ask the "
                "partner which SSH algorithms or account to use, then re-run.")
        if isinstance(exc, _MISSING_FOLDER):
            return TerminalDeliveryError(
                f"no folder '{folder}' for {partner.username} on {where} (partner {key}): "
                f"{_reason(exc)}. Fix [sftp.{key}] folder or ask the partner to create it, "
                "then re-run.")
        if isinstance(exc, _WRITE_REFUSED):
            return TerminalDeliveryError(
                f"{where} refused to let {partner.username} write {parcel.name} in '{folder}' "
                f"(partner {key}): {_reason(exc)}. Ask the partner for write access, then "
                "re-run.")
        if isinstance(exc, _TRANSIENT_SFTP):
            return TransientDeliveryError(
                f"uploading {parcel.name} to {where} (partner {key}) failed after "
                f"{self.retries} retries: {_reason(exc)}. The next run retries it.")
        if isinstance(exc, asyncssh.SFTPError):
            return TerminalDeliveryError(
                f"{where} (partner {key}) refused {parcel.name} in '{folder}': {_reason(exc)}. "
                "Check the folder with the partner, then re-run.")
        if isinstance(exc, asyncssh.ChannelOpenError):
            return TerminalDeliveryError(
                f"{where} (partner {key}) refused an SFTP session to {partner.username}: "
                f"{exc.reason}. Ask the partner to enable SFTP for this account, then re-run.")
        if isinstance(exc, asyncssh.DisconnectError | OSError | asyncio.TimeoutError):
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            return TransientDeliveryError(
                f"cannot reach {where} (partner {key}) for {parcel.name} after {self.retries} "
                f"retries: {reason}. Check that the server is up and reachable; the next run "
                "retries it.")
        return TerminalDeliveryError(
            f"uploading {parcel.name} to {where} (partner {key}) failed: "
            f"{type(exc).__name__}: {exc}.")


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", "") or str(exc) or type(exc).__name__


def _read_known_hosts(key: str, partner: SftpPartner) -> asyncssh.SSHKnownHosts:
    path = Path(partner.known_hosts)
    try:
        return asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError) as exc:
        raise TerminalDeliveryError(
            f"cannot read the known_hosts file {path} of [sftp.{key}] ({partner.host}): {exc}. "
            "Write the partner's verified host key there, then re-run.") from exc


def _read_key(key: str, partner: SftpPartner) -> asyncssh.SSHKey:
    path = Path(partner.key_file or "")
    try:
        return asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise TerminalDeliveryError(
            f"cannot read the private key {path} of [sftp.{key}]: {exc}. Point key_file at an "
            "unencrypted OpenSSH or PEM private key, then re-run.") from exc
