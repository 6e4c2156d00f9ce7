"""The SFTP transport against a real SFTP server on loopback (tests/sftp_server.py)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh
import pytest

from pipeline.channels.transports.base import (
    TRANSPORTS,
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
)
from pipeline.channels.transports.sftp import SftpTransport
from pipeline.settings import SftpPartner

if TYPE_CHECKING:
    from tests.sftp_server import SftpTestServer

pytest_plugins = ["tests.sftp_server"]  # the sftp_server fixture

FAST = {"retries": 2, "backoff_s": 0.01, "timeout_s": 5.0}


def parcel(name: str, data: bytes, partner: str = "") -> Parcel:
    return Parcel(name=name, data=data, numbers=("F-1",), partner=partner)


def files(folder: Path) -> dict[str, bytes]:
    """Everything in a folder, temporary files included."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture()
def two_partners(sftp_server: SftpTestServer) -> Iterator[tuple[SftpTransport, Path, Path]]:
    """Partner ``acme`` is alice (password) into inbox, ``globex`` is bob (key) into edi/in."""
    inbox, edi_in = sftp_server.folder("alice", "inbox"), sftp_server.folder("bob", "edi/in")
    inbox.mkdir()
    edi_in.mkdir(parents=True)
    transport = SftpTransport({"acme": sftp_server.partner("alice", "inbox"),
                               "globex": sftp_server.partner("bob", "edi/in")},
                              default_partner="acme", **FAST)
    yield transport, inbox, edi_in
    transport.close()


@pytest.fixture()
def no_posix_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started afterwards do not offer posix-rename@openssh.com."""
    extensions = [ext for ext in asyncssh.sftp.SFTPServerHandler._extensions
                  if ext[0] != b"posix-rename@openssh.com"]
    monkeypatch.setattr(asyncssh.sftp.SFTPServerHandler, "_extensions", extensions)


def test_registered_as_sftp() -> None:
    assert TRANSPORTS["sftp"] is SftpTransport


def test_two_partners_on_one_server_get_their_files(two_partners, sftp_server) -> None:
    transport, inbox, edi_in = two_partners
    a, b = os.urandom(70_000), b"UNB+UNOC:3+3012345000000:14+...'\n"
    receipt_a = transport.deliver(parcel("acme-0001.edi", a, "acme"))
    receipt_b = transport.deliver(parcel("globex-0001.x12", b, "globex"))
    receipt_default = transport.deliver(parcel("acme-0002.edi", b"default partner"))

    assert files(inbox) == {"acme-0001.edi": a, "acme-0002.edi": b"default partner"}
    assert files(edi_in) == {"globex-0001.x12": b}
    port = sftp_server.port
    assert receipt_a.outcome == receipt_b.outcome == "sent"
    assert receipt_a.reply == f"sftp://alice@127.0.0.1:{port}/inbox/acme-0001.edi (70000 bytes)"
    assert receipt_b.reply == f"sftp://bob@127.0.0.1:{port}/edi/in/globex-0001.x12 ({len(b)} bytes)"
    assert receipt_default.reply.startswith(f"sftp://alice@127.0.0.1:{port}/inbox/acme-0002.edi")
    assert sorted(sftp_server.logins) == ["alice", "bob"]  # password and key logins


def test_unknown_partner_is_terminal_and_names_the_section(two_partners) -> None:
    transport, inbox, _ = two_partners
    with pytest.raises(TerminalDeliveryError, match=r"\[sftp\.initech\]") as caught:
        transport.deliver(parcel("x.edi", b"x", "initech"))
    assert "INVOICES_SFTP__INITECH__PASSWORD" in str(caught.value)
    assert not caught.value.retriable
    assert files(inbox) == {}


@pytest.mark.parametrize("case", ["changed key", "unknown host", "missing file"])
def test_host_key_not_in_known_hosts_is_terminal_and_uploads_nothing(
        sftp_server: SftpTestServer, tmp_path: Path, case: str) -> None:
    inbox = sftp_server.folder("alice", "inbox")
    inbox.mkdir()
    known_hosts = tmp_path / "other_known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519")
    if case == "changed key":
        known_hosts.write_text(sftp_server.known_hosts_line(other))
    elif case == "unknown host":
        line = sftp_server.known_hosts_line(sftp_server.host_key)
        known_hosts.write_text(line.replace("[127.0.0.1]", "[192.0.2.7]"))
    transport = SftpTransport({"acme": sftp_server.partner("alice", "inbox",
                                                           known_hosts=known_hosts)}, **FAST)
    with pytest.raises(TerminalDeliveryError) as caught:
        transport.deliver(parcel("x.edi", b"secret invoice", "acme"))
    transport.close()
    message = str(caught.value)
    assert str(known_hosts) in message
    assert "127.0.0.1" in message
    if case != "missing file":
        assert f"127.0.0.1:{sftp_server.port}" in message
    assert sftp_server.logins == []
    assert files(inbox) == {}


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_refused_login_is_terminal(sftp_server: SftpTestServer, tmp_path: Path,
                                   user: str) -> None:
    sftp_server.folder(user, "inbox").mkdir()
    if user == "alice":
        partner = sftp_server.partner("alice", "inbox", password="not-the-password")
        hint = "INVOICES_SFTP__ACME__PASSWORD"
    else:
        stranger = tmp_path / "stranger_key"
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
        partner = sftp_server.partner("bob", "inbox", key_file=stranger)
        hint = str(stranger)
    transport = SftpTransport({"acme": partner}, **FAST)
    with pytest.raises(TerminalDeliveryError, match="refused the login") as caught:
        transport.deliver(parcel("x.edi", b"x", "acme"))
    transport.close()
    assert hint in str(caught.value)
    assert sftp_server.logins == []


def test_missing_folder_and_refused_write_are_terminal(sftp_server: SftpTestServer) -> None:
    sftp_server.folder("alice", "readonly").mkdir()
    transport = SftpTransport({"gone": sftp_server.partner("alice", "no/such/folder"),
                               "locked": sftp_server.partner("alice", "readonly")}, **FAST)
    with pytest.raises(TerminalDeliveryError, match="no folder 'no/such/folder'"):
        transport.deliver(parcel("x.edi", b"x", "gone"))
    for _ in range(2):
        with pytest.raises(TerminalDeliveryError, match="refused to let alice write x.edi"):
            transport.deliver(parcel("x.edi", b"x", "locked"))
    transport.close()
    assert files(sftp_server.folder("alice", "readonly")) == {}
    assert sftp_server.logins == ["alice", "alice"]  # one per partner: refusals keep it open


def test_a_refused_rename_is_terminal_and_leaves_no_temporary_file(two_partners) -> None:
    transport, inbox, _ = two_partners
    (inbox / "taken.edi").mkdir()  # the final name is a folder: the server refuses the rename
    with pytest.raises(TerminalDeliveryError, match="refused taken.edi in 'inbox'"):
        transport.deliver(parcel("taken.edi", b"x" * 5000, "acme"))
    assert [p.name for p in inbox.iterdir()] == ["taken.edi"]
    assert (inbox / "taken.edi").is_dir()


def test_server_down_is_transient_after_the_retry_budget(
        sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    attempts = []
    connect = asyncssh.connect

    def counting_connect(*args, **kwargs):
        attempts.append(args)
        return connect(*args, **kwargs)

    monkeypatch.setattr(asyncssh, "connect", counting_connect)
    transport = SftpTransport({"acme": sftp_server.partner("alice", ".", port=closed_port)},
                              retries=3, backoff_s=0.01)
    with pytest.raises(TransientDeliveryError, match=f"cannot reach 127.0.0.1:{closed_port}") \
            as caught:
        transport.deliver(parcel("x.edi", b"x", "acme"))
    transport.close()
    assert caught.value.retriable
    assert len(attempts) == 4  # the first try and 3 retries


def test_a_silent_server_times_out_as_transient() -> None:
    with socket.socket() as listener:  # accepts TCP connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        partner = SftpPartner(host="127.0.0.1", port=listener.getsockname()[1],
                              username="alice", password="x", known_hosts=Path("/dev/null"))
        transport = SftpTransport({"acme": partner}, retries=1, backoff_s=0, timeout_s=0.3)
        with pytest.raises(TransientDeliveryError):
            transport.deliver(parcel("x.edi", b"x", "acme"))
        transport.close()


def test_one_connection_per_partner_for_many_parcels(two_partners, sftp_server) -> None:
    transport, inbox, edi_in = two_partners
    for i in range(40):
        transport.deliver(parcel(f"a{i:03}.edi", f"acme {i}".encode(), "acme"))
        transport.deliver(parcel(f"g{i:03}.edi", f"globex {i}".encode(), "globex"))
    assert sorted(sftp_server.logins) == ["alice", "bob"]
    assert len(files(inbox)) == len(files(edi_in)) == 40
    assert files(inbox)["a007.edi"] == b"acme 7"


def test_deliveries_from_several_threads_share_the_connection(two_partners, sftp_server) -> None:
    transport, inbox, _ = two_partners
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(10):
                transport.deliver(parcel(f"t{t}-{i}.edi", bytes([t, i]) * 1000, "acme"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(files(inbox)) == 40
    assert sftp_server.logins == ["alice"]


def test_reconnects_when_the_server_dropped_the_connection(two_partners, sftp_server) -> None:
    transport, inbox, _ = two_partners
    transport.deliver(parcel("before.edi", b"1", "acme"))
    sftp_server.drop_connections()
    transport.deliver(parcel("after.edi", b"2", "acme"))
    assert files(inbox) == {"after.edi": b"2", "before.edi": b"1"}
    assert sftp_server.logins == ["alice", "alice"]


def test_connection_lost_mid_upload_is_retried_without_leftovers(two_partners,
                                                                 sftp_server) -> None:
    transport, inbox, _ = two_partners
    data = os.urandom(3_000_000)
    sftp_server.drop_during_next_upload = True
    receipt = transport.deliver(parcel("big.edi", data, "acme"))
    assert receipt.outcome == "sent"
    assert files(inbox) == {"big.edi": data}  # the cut-short temporary file was removed
    assert sftp_server.logins == ["alice", "alice"]


def test_close_closes_connections_and_the_transport_can_be_used_again(two_partners,
                                                                      sftp_server) -> None:
    transport, inbox, _ = two_partners
    transport.deliver(parcel("one.edi", b"1", "acme"))
    transport.close()
    deadline = time.monotonic() + 10  # the server's own thread notices the close a bit later
    while not all(conn.is_closed() for conn in sftp_server.connections):
        assert time.monotonic() < deadline, "the server still sees an open connection"
        time.sleep(0.02)
    transport.deliver(parcel("two.edi", b"2", "acme"))
    assert files(inbox) == {"one.edi": b"1", "two.edi": b"2"}
    assert sftp_server.logins == ["alice", "alice"]


@pytest.mark.parametrize("rename", ["posix-rename", "remove and rename"])
def test_re_uploading_the_same_parcel_is_harmless(request, rename: str) -> None:
    if rename == "remove and rename":
        request.getfixturevalue("no_posix_rename")
    server: SftpTestServer = request.getfixturevalue("sftp_server")
    transport, inbox, _ = request.getfixturevalue("two_partners")
    data = os.urandom(200_000)
    first = transport.deliver(parcel("same.edi", data, "acme"))
    second = transport.deliver(parcel("same.edi", data, "acme"))
    assert first == second
    assert files(inbox) == {"same.edi": data}
    assert server.logins == ["alice"]


@pytest.mark.parametrize("rename", ["posix-rename", "remove and rename"])
def test_a_watcher_never_sees_a_partial_file_under_its_final_name(request, rename: str) -> None:
    if rename == "remove and rename":
        request.getfixturevalue("no_posix_rename")
    transport, inbox, _ = request.getfixturevalue("two_partners")
    rng = random.Random(7)
    payloads = {f"interchange-{i:02}.edi": rng.randbytes(rng.randint(2_000_000, 4_000_000))
                for i in range(8)}
    # Uploaded twice: the second round replaces files the watcher has already seen whole.
    sizes = {name: len(data) for name, data in payloads.items()}
    stop = threading.Event()
    partial: list[tuple[str, int]] = []
    temporary: set[str] = set()
    listings = 0

    def watch() -> None:
        nonlocal listings
        while not stop.is_set():
            with os.scandir(inbox) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        temporary.add(entry.name)
                        continue
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:  # replaced between listing and stat
                        continue
                    if size != sizes[entry.name]:
                        partial.append((entry.name, size))
            listings += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(2):
            for name, data in payloads.items():
                transport.deliver(parcel(name, data, "acme"))
    finally:
        stop.set()
        watcher.join()
    assert partial == []
    assert temporary, "the watcher never saw an upload in progress"
    assert all(name.endswith(".part") for name in temporary)
    assert listings > 100
    assert files(inbox) == payloads
