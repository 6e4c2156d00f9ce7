"""Receivables end to end: a generated extract billed by email and through the platform
(real SMTP and AFNOR-validated PA servers on loopback), then a month of mornings of
``invoices ar daily`` as the bank statements of each day arrive: payments matched, 212
Encaissée deposited for the paid services invoices, reminders and the monthly statements
received by the SMTP server, each once, and nothing more on a second run of the same day.
"""

from __future__ import annotations

import email
import json
import shutil
from collections import Counter
from datetime import date
from decimal import Decimal
from email import policy
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from pipeline.einvoice import cdar
from pipeline.receivables.sample import generate_statements
from pipeline.sample import generate_extract
from tests.pa_server import PaServer
from tests.servers import SmtpTestServer
from tests.standards import schematron_failures, xsd_errors
from tests.test_delivery_e2e import run_cli, smtp, smtp_env  # noqa: F401  (fixture)
from tests.test_platform_e2e import _cli
from tests.test_platform_e2e import _env as pa_env

MORNINGS = [date(2027, 1, 4), date(2027, 1, 11), date(2027, 1, 18), date(2027, 1, 25)]
FIRST = date(2027, 1, 1)  # statements of December


def _subject(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)["Subject"])


def _message_id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=policy.default)["Message-ID"])


def _drop(bank: Path, drop: Path, day: date) -> None:
    """The statements the bank has sent by ``day``."""
    drop.mkdir(exist_ok=True)
    for path in bank.glob("camt053-*.xml"):
        if date.fromisoformat(path.stem.removeprefix("camt053-")) <= day:
            shutil.copy(path, drop / path.name)


def _daily(extract: Path, drop: Path, home: Path, day: date, env: dict[str, str]) -> str:
    done = _cli("ar", "daily", str(extract), "--statements", str(drop), "--date",
                day.isoformat(), "--home", str(home), env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_a_month_of_receivables_mornings(smtp: SmtpTestServer,  # noqa: F811
                                         pa_server: PaServer, tmp_path: Path) -> None:
    extract, bank, drop, home = (tmp_path / n for n in ("extract", "bank", "drop", "home"))
    generate_extract(extract, 160, seed=14)
    customers = pl.read_parquet(extract / "customers.parquet")
    for row in customers.filter(pl.col("siren").is_not_null()).iter_rows(named=True):
        pa_server.add_company(row["siren"], row["legal_name"])
    env = {**smtp_env(smtp), **pa_env(pa_server)}
    code, output, summary = run_cli(extract, home, **env)
    assert code == 0, output[-3000:]
    assert summary["deposited"] > 0 and summary["sent"] > 0
    generate_statements(extract, bank, seed=14, until=MORNINGS[-1])
    billed = len(smtp.received)

    for day in [FIRST, *MORNINGS]:
        _drop(bank, drop, day)
        _daily(extract, drop, home, day, env)
    letters = smtp.received[billed:]
    assert letters, "no letter went out in a month"
    ids = Counter(_message_id(m.data) for m in letters)
    assert set(ids.values()) == {1}  # each letter once

    engine = sa.create_engine(f"sqlite:///{home / 'ledger.db'}")
    with engine.connect() as conn:
        planned = conn.execute(sa.text("SELECT letter_id, kind, channel, payload FROM "
                                       "letters")).all()
        records = conn.execute(sa.text("SELECT invoice_number, level FROM dunning_records")).all()
        journal = dict(conn.execute(sa.text(
            "SELECT key, state FROM delivery_journal WHERE key LIKE 'letter:%'")).all())
    statements = [p for p in planned if p.kind == "statement"]
    reminders = [p for p in planned if p.kind == "dunning"]
    assert statements and reminders
    assert {json.loads(p.payload)["period_start"] for p in statements} == {"2026-12-01"}
    # every planned letter was delivered once: sent by email, or written for the printer
    assert {journal[f"letter:{p.letter_id}"] for p in planned} <= {"sent", "written"}
    emailed = [p for p in planned if journal[f"letter:{p.letter_id}"] == "sent"]
    assert len(letters) == len(emailed)
    subjects = Counter(_subject(m.data).split(" ")[0] for m in letters)
    assert subjects.keys() & {"Relevé", "Statement", "Kontoauszug"}, subjects
    assert subjects.keys() & {"Relance", "Payment", "Zahlungserinnerung"}, subjects
    assert len(records) == len(set(records))
    written = [p for p in planned if journal[f"letter:{p.letter_id}"] == "written"]
    assert {p.letter_id for p in written} == {  # by post: no email address, or a notice
        f.stem for f in (home / "outbox" / "print").glob("[RS]*.pdf")}

    # a reminder lists what was still owed when it was planned, to the cent: never an
    # invoice paid or credited by then
    with engine.connect() as conn:
        gross = dict(conn.execute(sa.text(
            "SELECT i.invoice_number, i.cents + COALESCE(SUM(c.cents), 0) FROM open_items i "
            "LEFT JOIN open_items c ON c.credited_invoice_number = i.invoice_number "
            "GROUP BY i.invoice_number")).all())
        for p in reminders:
            [planned_at] = conn.execute(sa.text(
                "SELECT planned_at FROM letters WHERE letter_id = :id"), {"id": p.letter_id}).one()
            for line in json.loads(p.payload)["lines"]:
                paid = conn.execute(sa.text(
                    "SELECT COALESCE(SUM(cents), 0) FROM allocations WHERE invoice_number = :n "
                    "AND at <= :t"), {"n": line["invoice_number"], "t": planned_at}).scalar()
                owed = gross[line["invoice_number"]] - paid
                assert owed > 0 and Decimal(line["open_amount"]) == Decimal(owed) / 100, (
                    p.letter_id, line)

    # 212 Encaissée: one per paid services invoice deposited on the platform, each valid
    collected = [d for d in pa_server.deposits if d.syntax == "CDAR"]
    assert collected, "no services invoice was paid in a month?"
    assert Counter(d.tracking_id for d in collected).most_common(1)[0][1] == 1
    for deposit in collected:
        assert xsd_errors("cdar", deposit.data) == []
        assert schematron_failures("br-fr-cdv", deposit.data) == []
        [status] = cdar.parse(deposit.data)
        assert status.status_code == 212 and status.amount and status.amount > 0

    # the same morning again: nothing more goes out
    before = (len(smtp.received), len(pa_server.deposits))
    _daily(extract, drop, home, MORNINGS[-1], env)
    assert (len(smtp.received), len(pa_server.deposits)) == before
    assert (home / "receivables" / MORNINGS[-1].isoformat() / "aging.html").is_file()
