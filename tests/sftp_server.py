"""A real SFTP server on loopback for the tests: asyncssh on its own loop in a thread.

``sftp_server`` starts one per test on 127.0.0.1 and a free port, with a freshly
generated host key and a ``known_hosts`` file naming it, and two users: ``alice``
logs in with a password, ``bob`` with a key whose private half is in
``bob_key_file``. Each user's SFTP session is rooted (chroot-like) in its own
folder under ``root``, so ``alice`` writing ``inbox/x`` creates ``root/alice/inbox/x``.
Writes under any folder named ``readonly`` are refused (the tests run as root, for
whom file modes refuse nothing). ``logins`` records every successful login;
``drop_during_next_upload`` cuts the connection in the middle of the next file.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from pydantic import SecretStr

from pipeline.settings import SftpPartner

__all__ = ["SftpTestServer", "sftp_server", "ALICE_PASSWORD"]

ALICE_PASSWORD = "alice-s3cret"


class SftpTestServer:
    """The running server, its files and what it saw."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.host = "127.0.0.1"
        self.port = 0
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.bob_key = asyncssh.generate_private_key("ssh-ed25519")
        self.bob_key_file = base / "bob_ed25519"
        base.mkdir(parents=True, exist_ok=True)
        self.bob_key.write_private_key(str(self.bob_key_file))
        self.bob_key_file.chmod(0o600)
        self.known_hosts = base / "known_hosts"
        self.logins: list[str] = []
        self.drop_during_next_upload = False
        self.connections: list[asyncssh.SSHServerConnection] = []
        for user in ("alice", "bob"):
            (self.root / user).mkdir(parents=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sftp-test-server",
                                        daemon=True)
        self._acceptor: asyncssh.SSHAcceptor | None = None

    # -- control from the test's thread -------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._acceptor = self._call(self._listen())
        self.port = self._acceptor.get_port()
        self.known_hosts.write_text(self.known_hosts_line(self.host_key))

    def stop(self) -> None:
        if self._acceptor is not None:
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def drop_connections(self) -> None:
        """Close every client connection from the server side, as an idle timeout would."""
        self._call(self._close_connections())

    def known_hosts_line(self, key: asyncssh.SSHKey) -> str:
        """The known_hosts line binding ``key`` to this server's host and port."""
        public = key.export_public_key("openssh").decode().split()
        return f"[{self.host}]:{self.port} {public[0]} {public[1]}\n"

    def folder(self, user: str, folder: str) -> Path:
        """Where a user's ``folder`` is on this machine."""
        return self.root / user / folder

    def partner(self, user: str, folder: str, **overrides: Any) -> SftpPartner:
        """Settings of a partner on this server: alice by password, bob by key."""
        fields: dict[str, Any] = {"host": self.host, "port": self.port, "username": user,
                                  "folder": folder, "known_hosts": self.known_hosts}
        if user == "alice":
            fields["password"] = SecretStr(ALICE_PASSWORD)
        else:
            fields["key_file"] = self.bob_key_file
        fields.update(overrides)
        return SftpPartner(**fields)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- on the server's loop -------------------------------------------------------------

    def _sftp_session(self, chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        user = chan.get_extra_info("username")
        return _RootedSftp(chan, self, chroot=str(self.root / user))

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            self.host, 0, server_host_keys=[self.host_key],
            server_factory=lambda: _Server(self), sftp_factory=self._sftp_session,
            allow_scp=False)

    async def _close_connections(self) -> None:
        connections, self.connections = self.connections, []
        for conn in connections:
            conn.close()
        for conn in connections:
            await conn.wait_closed()

    async def _shutdown(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        await self._acceptor.wait_closed()
        await self._close_connections()


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: SftpTestServer) -> None:
        self.owner = owner
        self.conn: asyncssh.SSHServerConnection | None = None
        self.user = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.owner.connections.append(conn)

    def begin_auth(self, username: str) -> bool:
        self.user = username
        if username == "bob" and self.conn is not None:
            self.conn.set_authorized_keys(asyncssh.import_authorized_keys(
                self.owner.bob_key.export_public_key("openssh").decode()))
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == "alice" and password == ALICE_PASSWORD

    def public_key_auth_supported(self) -> bool:
        return True

    def auth_completed(self) -> None:
        self.owner.logins.append(self.user)


class _RootedSftp(asyncssh.SFTPServer):
    """Paths mapped into the user's folder (asyncssh's chroot); ``readonly`` folders refused."""

    def __init__(self, chan: asyncssh.SSHServerChannel, owner: SftpTestServer,
                 chroot: str) -> None:
        super().__init__(chan, chroot=chroot.encode())
        self.owner = owner

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if pflags & asyncssh.FXF_WRITE and b"readonly" in path.split(b"/"):
            raise asyncssh.SFTPPermissionDenied("write access denied")
        return super().open(path, pflags, attrs)

    def write(self, file_obj: object, offset: int, data: bytes) -> int | Awaitable[int]:
        if self.owner.drop_during_next_upload:  # half the bytes reach the disk, then the cut
            self.owner.drop_during_next_upload = False
            super().write(file_obj, offset, data[:len(data) // 2])
            self.connection.close()
            raise asyncssh.SFTPConnectionLost("dropped by the test")
        return super().write(file_obj, offset, data)


@pytest.fixture()
def sftp_server(tmp_path: Path) -> Iterator[SftpTestServer]:
    """A running SFTP server with users alice (password) and bob (key), stopped afterwards."""
    server = SftpTestServer(tmp_path / "sftp")
    server.start()
    try:
        yield server
    finally:
        server.stop()
