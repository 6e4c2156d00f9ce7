#!/usr/bin/env python3
"""Email delivery benchmark: one reused SMTP connection against one connection per email.

Builds N messages with the email formatter (the committed sample extract's
invoices, cycled under new numbers, each carrying a PDF attachment of
``--pdf-kb`` random bytes, as incompressible as a real PDF's streams), starts a
local aiosmtpd server in a process of its own (it counts what it accepts and
keeps nothing), then sends the same messages ``--runs`` times each way through
``SmtpTransport``: (a) one transport, one connection for all N; (b) a new
transport, connected and closed (QUIT), for every email. Each run checks that
the server received all N messages over 1 (a) or N (b) connections. Prints
the times and emails per second (median of the runs) and, as its last line,
one JSON object. ``--starttls`` upgrades every connection with a self-signed
certificate, as a real relay would ask.

    .venv/bin/python bench/deliver.py [--emails 300] [--runs 3] [--pdf-kb 60] [--starttls]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from pipeline.channels.base import Outgoing
from pipeline.channels.email import EmailFormatter
from pipeline.channels.transports.base import Parcel
from pipeline.channels.transports.smtp import SmtpTransport
from pipeline.render.templates import make_environment
from pipeline.settings import PROJECT_ROOT, Settings, SmtpSettings
from pipeline.workshop import sample_documents


def messages(n: int, pdf_kb: int, seed: int = 2026) -> list[Parcel]:
    """n email parcels of distinct invoices, each with a pdf_kb attachment."""
    settings = Settings()
    docs = [d for d in sample_documents(settings) if d.email]
    formatter = EmailFormatter(settings.seller, make_environment(PROJECT_ROOT / "templates"),
                               SmtpSettings(bcc="ar-archive@atelier-numerique.example"))
    rng = random.Random(seed)
    items = []
    for i, doc in enumerate(islice(cycle(docs), n)):
        pdf = b"%PDF-1.7\n" + rng.randbytes(pdf_kb * 1024 - 9)
        doc = dataclasses.replace(doc, number=f"{doc.number}-{i:06d}")
        items.append(Outgoing(doc, pdf, hashlib.sha256(pdf).hexdigest()))
    formatted = formatter.format(items, "bench")
    if formatted.failures:
        sys.exit(f"messages not built: {formatted.failures}")
    return formatted.parcels


# -- the server, in its own process ------------------------------------------------------


def serve(cert: str | None, key: str | None) -> None:
    """Run aiosmtpd on 127.0.0.1; print the port; answer 'count' lines on stdin until EOF."""
    from aiosmtpd.controller import Controller

    counts = {"messages": 0, "connections": 0, "bytes": 0}

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            counts["messages"] += 1
            counts["bytes"] += len(envelope.original_content or b"")
            return f"250 2.0.0 Ok: queued as B{counts['messages']:07d}"

    class Counting(Controller):
        def __init__(self, sock: socket.socket, **kwargs: Any) -> None:
            self._sock = sock
            super().__init__(Handler(), hostname="127.0.0.1", port=sock.getsockname()[1],
                             **kwargs)

        def _create_server(self) -> Any:
            return self.loop.create_server(self._factory_invoker, sock=self._sock)

        def factory(self) -> Any:
            counts["connections"] += 1
            return super().factory()

    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it aiosmtpd's line-by-line replies wait for delayed ACKs (40 ms per EHLO).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    kwargs: dict[str, Any] = {"server_hostname": "relay.bench.example"}
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        kwargs.update(tls_context=context, require_starttls=True)
    controller = Counting(sock, **kwargs)
    controller.start()
    counts["connections"] = 0  # the controller's own readiness probe
    print(sock.getsockname()[1], flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(json.dumps(counts), flush=True)
    controller.stop()


class Server:
    """The server process, seen from the benchmark."""

    def __init__(self, cert: Path | None, key: Path | None) -> None:
        cmd = [sys.executable, __file__, "--serve"]
        if cert and key:
            cmd += ["--cert", str(cert), "--key", str(key)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout and self.proc.stdin
        self.port = int(self.proc.stdout.readline())

    def counts(self) -> dict[str, int]:
        assert self.proc.stdout and self.proc.stdin
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def self_signed(folder: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1, its key, and a client context that trusts it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.bench.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, ssl.create_default_context(cafile=str(cert_file))


# -- the two ways of sending ---------------------------------------------------------------


def reused(parcels: list[Parcel], make: Callable[[], SmtpTransport]) -> None:
    """(a) one transport, one connection, for every message."""
    with make() as transport:
        for parcel in parcels:
            transport.deliver(parcel)


def per_email(parcels: list[Parcel], make: Callable[[], SmtpTransport]) -> None:
    """(b) a new connection (EHLO, STARTTLS when asked, QUIT) for every message."""
    for parcel in parcels:
        with make() as transport:
            transport.deliver(parcel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pdf-kb", type=int, default=60)
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.cert, args.key)
        return

    parcels = messages(args.emails, args.pdf_kb)
    message_kb = statistics.mean(len(p.data) for p in parcels) / 1024
    print(f"{len(parcels)} messages of {message_kb:.1f} kB on average "
          f"({args.pdf_kb} kB PDF attached, base64), STARTTLS {'on' if args.starttls else 'off'}",
          flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    cert = key = None
    client_context = None
    if args.starttls:
        cert, key, client_context = self_signed(work)
    server = Server(cert, key)
    settings = SmtpSettings(host="127.0.0.1", port=server.port, starttls=args.starttls,
                            retries=0, timeout_s=30)

    def make() -> SmtpTransport:
        return SmtpTransport(settings, ssl_context=client_context)

    modes = {"one reused connection": (reused, 1),
             "one connection per email": (per_email, len(parcels))}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for run in range(args.runs):
            for mode, (send, connections) in modes.items():
                before = server.counts()
                start = time.perf_counter()
                send(parcels, make)
                elapsed = time.perf_counter() - start
                after = server.counts()
                got = {k: after[k] - before[k] for k in ("messages", "connections")}
                if got != {"messages": len(parcels), "connections": connections}:
                    sys.exit(f"{mode}, run {run + 1}: the server saw {got}, expected "
                             f"{len(parcels)} messages over {connections} connection(s)")
                times[mode].append(elapsed)
                print(f"run {run + 1}, {mode}: {elapsed:.2f} s, "
                      f"{len(parcels) / elapsed:.0f} emails/s", flush=True)
    finally:
        server.stop()

    per_s = {mode: len(parcels) / statistics.median(t) for mode, t in times.items()}
    width = max(map(len, modes))
    print(f"\n{'mode':<{width}}  {'median s':>9}  {'emails/s':>9}  {'ms/email':>9}  connections")
    for mode, (_, connections) in modes.items():
        median = statistics.median(times[mode])
        print(f"{mode:<{width}}  {median:>9.2f}  {per_s[mode]:>9.0f}  "
              f"{median / len(parcels) * 1000:>9.2f}  {connections}")
    reused_per_s, per_email_per_s = per_s["one reused connection"], per_s[
        "one connection per email"]
    print(f"reused / per email: {reused_per_s / per_email_per_s:.2f}x")
    print(json.dumps({"emails": len(parcels), "reused_per_s": round(reused_per_s, 1),
                      "per_email_connection_per_s": round(per_email_per_s, 1),
                      "ratio": round(reused_per_s / per_email_per_s, 2), "runs": args.runs,
                      "message_kb": round(message_kb, 1), "starttls": args.starttls,
                      "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
