"""Delivery for real, end to end through the CLI: a real SMTP server (aiosmtpd) and a real
SFTP server (asyncssh) on loopback, started by the tests; exactly-once under retries,
refusals, concurrent runs and a SIGKILL in the middle of a run."""

from __future__ import annotations

import email
import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from email import policy
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import ExitCode
from pipeline.sample import generate_extract
from tests.conftest import INVOICES_CLI, SAMPLE_EXTRACT
from tests.servers import SmtpTestServer
from tests.sftp_server import SftpTestServer


@pytest.fixture()
def smtp() -> SmtpTestServer:
    server = SmtpTestServer().start()
    yield server
    server.stop()


def smtp_env(server: SmtpTestServer, **extra: str) -> dict[str, str]:
    return {"INVOICES_SMTP__HOST": server.host, "INVOICES_SMTP__PORT": str(server.port),
            "INVOICES_SMTP__STARTTLS": "false", "INVOICES_SMTP__BACKOFF_S": "0.05",
            "INVOICES_SMTP__RETRIES": "6", **extra}


def start_cli(extract: Path, home: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([str(INVOICES_CLI), "run", str(extract), "--home", str(home), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)


def finish(process: subprocess.Popen, home: Path) -> tuple[int, str, dict]:
    out, err = process.communicate(timeout=900)
    summaries = sorted((home / "reports").glob("*/summary.json"),
                       key=lambda p: p.stat().st_mtime)
    return process.returncode, out + err, json.loads(summaries[-1].read_text())


def run_cli(extract: Path, home: Path, *args: str, **env: str) -> tuple[int, str, dict]:
    return finish(start_cli(extract, home, *args, **env), home)


def message_ids(server: SmtpTestServer) -> Counter[str]:
    return Counter(email.message_from_bytes(m.data, policy=policy.default)["Message-ID"]
                   for m in server.received)


def email_invoices(extract: Path) -> pl.DataFrame:
    """The extract's invoices for email customers, with the address and language."""
    customers = pl.read_parquet(extract / "customers.parquet")
    return pl.read_parquet(extract / "invoices.parquet").join(
        customers.filter(pl.col("channel") == "email").select(
            "customer_id", "email", "language"), on="customer_id")


def test_every_email_of_the_sample_arrives_once_with_its_archived_pdf(smtp, tmp_path) -> None:
    home = tmp_path / "home"
    status, output, summary = run_cli(SAMPLE_EXTRACT, home, **smtp_env(smtp))
    assert status == ExitCode.OK, output[-3000:]
    assert summary["transports"]["email"] == "smtp"
    assert summary["transports"]["print"] == "outbox"
    assert summary["sent"] == summary["by_channel"]["email"] == len(smtp.received) > 100
    assert summary["written"] == summary["delivered"] - summary["sent"]
    assert max(message_ids(smtp).values()) == 1
    index = pl.read_parquet(home / "archive" / "index" / "**" / "*.parquet")
    archived = dict(zip(index["invoice_number"], index["sha256"], strict=True))
    subjects = {"fr": ("Facture", "Avoir"), "en": ("Invoice", "Credit"),
                "de": ("Rechnung", "Gutschrift")}
    languages = dict(email_invoices(SAMPLE_EXTRACT).select("invoice_number", "language")
                     .iter_rows())
    for mail in smtp.received:
        message = email.message_from_bytes(mail.data, policy=policy.default)
        [pdf] = [p for p in message.iter_attachments() if p.get_filename().endswith(".pdf")]
        number = next(n for n in archived if f" {n} " in f" {message['Subject']} ")
        assert hashlib.sha256(pdf.get_content()).hexdigest() == archived[number]
        assert message["Subject"].startswith(subjects[languages[number]]), message["Subject"]
        assert message.get_body(("html",)) is not None and message.get_body(("plain",))
    assert not list((home / "outbox").glob("email/*"))  # sent, not written

    status, output, again = run_cli(SAMPLE_EXTRACT, home, **smtp_env(smtp))
    assert status == ExitCode.OK, output[-3000:]
    assert again["sent"] == again["written"] == 0
    assert again["already_delivered"] == summary["delivered"]
    assert len(smtp.received) == summary["sent"]


@pytest.fixture(scope="module")
def small_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "extract"
    generate_extract(out, 60, seed=21)
    return out


def test_busy_replies_and_dropped_connections_are_retried_and_nothing_arrives_twice(
        smtp, small_extract, tmp_path) -> None:
    smtp.handler.fail("MAIL", 3, "421 4.3.2 Service busy, try later")
    smtp.handler.drop_after(5)
    smtp.handler.drop_after(12)
    status, output, summary = run_cli(small_extract, tmp_path / "home", **smtp_env(smtp))
    assert status == ExitCode.OK, output[-3000:]
    assert summary["failed"] == 0 and summary["sent"] == len(smtp.received) > 10
    assert max(message_ids(smtp).values()) == 1
    assert smtp.handler.connections >= 4  # the drops and the 421s forced reconnections


def test_a_refused_address_fails_its_invoice_only_and_the_fixed_rerun_sends_it(
        smtp, small_extract, tmp_path) -> None:
    extract = tmp_path / "extract"
    extract.mkdir()
    for table in small_extract.glob("*.parquet"):
        (extract / table.name).write_bytes(table.read_bytes())
    invoices = email_invoices(extract)
    victim = invoices["customer_id"][0]
    address = invoices["email"][0]
    victims = set(invoices.filter(pl.col("customer_id") == victim)["invoice_number"])
    smtp.handler.refuse(address, f"550 5.1.1 <{address}>: mailbox unknown")
    home = tmp_path / "home"
    ar = {"INVOICES_SMTP__BCC": "ar@seller.example"}  # a copy the AR mailbox accepts
    status, output, summary = run_cli(extract, home, **smtp_env(smtp, **ar))
    assert status == ExitCode.SOME_FAILED
    assert set(summary["failures"]) == victims
    assert all("550 5.1.1" in summary["failures"][n] for n in victims)
    sent_before = len(smtp.received)
    assert sent_before == summary["sent"] + len(victims) > len(victims)  # + the AR copies
    assert len(smtp.handler.mails_to("ar@seller.example")) == sent_before

    customers = pl.read_parquet(extract / "customers.parquet")
    customers.with_columns(email=pl.when(pl.col("customer_id") == victim)
                           .then(pl.lit("fixed@client.example"))
                           .otherwise(pl.col("email"))).write_parquet(
        extract / "customers.parquet")
    status, output, rerun = run_cli(extract, home, **smtp_env(smtp, **ar))
    assert status == ExitCode.OK, output[-3000:]
    new = smtp.received[sent_before:]
    assert rerun["sent"] == len(new) == len(victims)
    assert {m.rcpt_tos[0] for m in new} == {"fixed@client.example"}


def test_two_runs_started_together_send_every_email_once(smtp, small_extract, tmp_path) -> None:
    home = tmp_path / "home"
    first = start_cli(small_extract, home, **smtp_env(smtp))
    second = start_cli(small_extract, home, **smtp_env(smtp))
    results = [finish(first, home), finish(second, home)]
    for status, output, _ in results:
        assert status == ExitCode.OK, output[-3000:]
    expected = email_invoices(small_extract).height
    assert len(smtp.received) == len(message_ids(smtp)) == expected
    summaries = [json.loads(p.read_text()) for p in (home / "reports").glob("*/summary.json")]
    assert len(summaries) == 2
    assert sum(s["sent"] for s in summaries) == expected
    for s in summaries:
        assert s["input_invoices"] == s["delivered"] + s["rejected"] + s["failed"] + s[
            "in_doubt"]


def test_sigkill_mid_delivery_leaves_only_what_was_in_flight_in_doubt(smtp, tmp_path) -> None:
    extract = tmp_path / "extract"
    generate_extract(extract, 250, seed=5)
    expected = email_invoices(extract).height
    home = tmp_path / "home"
    env = smtp_env(smtp, INVOICES_SMTP__RATE_PER_S="25")
    smtp.handler.answer_delay_s = 0.05  # a relay that takes its time: sends are in flight
    process = start_cli(extract, home, **env)
    deadline = time.monotonic() + 600
    while len(smtp.received) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    killed_at = len(smtp.received)
    assert 40 <= killed_at < expected

    smtp.handler.answer_delay_s = 0.0
    status, output, rerun = run_cli(extract, home, **smtp_env(smtp))
    in_doubt = rerun["in_doubt_invoices"]
    # what is in doubt needs an operator: exit 1
    assert status == (ExitCode.SOME_FAILED if in_doubt else ExitCode.OK), output[-3000:]
    ids = message_ids(smtp)
    assert max(ids.values()) == 1  # nothing arrived twice
    report = (home / "reports" / rerun["run_id"] / "exceptions.html").read_text()
    assert all(n in report for n in in_doubt) and ("In doubt" in report) == bool(in_doubt)
    emails_in_doubt = [n for n, why in in_doubt.items() if why.startswith("email")]
    assert len(emails_in_doubt) <= 1  # one connection: one message on the wire at most
    assert len(ids) in (expected - len(emails_in_doubt), expected)

    before = len(smtp.received)
    status, output, resent = run_cli(extract, home, "--resend-in-doubt", **smtp_env(smtp))
    assert status == ExitCode.OK, output[-3000:]
    assert resent["sent"] + resent["written"] == len(in_doubt)
    assert resent["sent"] == len(emails_in_doubt) == len(smtp.received) - before
    assert len(set(message_ids(smtp))) == expected  # a re-sent message keeps its Message-ID


def test_edi_and_print_files_go_to_their_sftp_drops(small_extract, tmp_path) -> None:
    server = SftpTestServer(tmp_path / "sftp")
    server.start()
    try:
        customers = pl.read_parquet(small_extract / "customers.parquet").filter(
            pl.col("channel").is_in(["edi", "peppol"]))
        partners = sorted({gln or cid for gln, cid in customers.select("gln", "customer_id")
                           .iter_rows()})
        lines = []
        for partner in [*partners, "print"]:
            folder = "print" if partner == "print" else f"in/{partner}"
            (server.root / "bob" / folder).mkdir(parents=True)
            lines += [f'[sftp."{partner}"]', f'host = "{server.host}"', f"port = {server.port}",
                      'username = "bob"', f'key_file = "{server.bob_key_file}"',
                      f'folder = "{folder}"', f'known_hosts = "{server.known_hosts}"', ""]
        config = tmp_path / "sftp.toml"
        config.write_text("\n".join(lines))
        home = tmp_path / "home"
        status, output, summary = run_cli(small_extract, home, INVOICES_CONFIG=str(config))
        assert status == ExitCode.OK, output[-3000:]
        assert summary["transports"] == {"edi": "sftp", "email": "outbox", "pa": "outbox",
                                         "peppol": "sftp", "print": "sftp"}
        counts = summary["by_channel"]
        assert summary["sent"] == sum(counts.get(c, 0) for c in ("edi", "peppol", "print")) > 0
        assert summary["written"] == counts["email"]
        arrived = {p.name: p for p in (server.root / "bob").rglob("*") if p.is_file()}
        assert not [n for n in arrived if n.endswith(".part") or n.startswith(".")]
        archived = {p.name: p for p in (home / "archive" / "deliveries").rglob("*")
                    if p.is_file()}
        for name in [n for n in archived if not n.endswith(".eml")]:
            assert arrived[name].read_bytes() == archived[name].read_bytes(), name
        assert any(n.endswith(".edi") for n in arrived)
        assert any(n.endswith(".ubl.xml") for n in arrived) == ("peppol" in counts)
        assert {p.suffix for p in (server.root / "bob" / "print").iterdir()} == {
            ".pdf", ".csv", ".json"}
    finally:
        server.stop()


def test_a_permanent_bounce_goes_to_print_when_settings_say_so(smtp, small_extract,
                                                                tmp_path) -> None:
    invoices = email_invoices(small_extract)
    victim, address = invoices["invoice_number"][0], invoices["email"][0]
    victims = set(invoices.filter(pl.col("email") == address)["invoice_number"])
    smtp.handler.refuse(address, f"550 5.1.1 <{address}>: mailbox unknown")
    home = tmp_path / "home"
    status, output, summary = run_cli(small_extract, home, INVOICES_DELIVERY__FALLBACK_TO_PRINT=
                                      "true", **smtp_env(smtp))
    assert status == ExitCode.OK, output[-3000:]
    assert summary["failed"] == 0
    manifests = "".join(p.read_text() for p in (home / "outbox" / "print").glob("*.csv"))
    assert all(n in manifests for n in victims)

    result = subprocess.run([str(INVOICES_CLI), "deliveries", "--invoice", victim, "--home",
                             str(home), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["channel"]: r for r in json.loads(result.stdout)}
    assert rows["email"]["state"] == "failed" and "550 5.1.1" in rows["email"]["reply"]
    assert rows["email"]["error_class"] == "terminal"
    assert rows["print"]["state"] == "written"
    assert [e["state"] for e in rows["email"]["events"]] == ["started", "failed"]
