"""Disputes: a person's word (``ar dispute`` / ``undispute``) and the platform's 207 En
litige / 210 Refusée / 213 Rejetée, the latest of them counting; a disputed invoice gets no
reminder."""

from __future__ import annotations

import os
import subprocess
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipeline.einvoice import cdar
from pipeline.journal import Journal
from pipeline.platform.lifecycle import LifecycleLog
from pipeline.receivables.disputes import Disputes
from pipeline.receivables.dunning import plan_dunning
from pipeline.receivables.open_items import OpenItems
from pipeline.settings import Settings
from tests.conftest import INVOICES_CLI
from tests.standards import STANDARDS

LIFECYCLE = STANDARDS / "fr-reform/examples/lifecycle"


def _status(stem: str) -> list[cdar.LifecycleStatus]:
    return cdar.parse((LIFECYCLE / f"{stem}.xml").read_bytes())


def test_a_person_disputes_and_lifts_with_a_reason(tmp_path: Path) -> None:
    book = Disputes(Journal(f"sqlite:///{tmp_path / 'ledger.db'}"))
    with pytest.raises(ValueError, match="needs a reason"):
        book.decide("FA1", True, "  ", "clerk")
    book.decide("FA1", True, "goods damaged on delivery", "clerk")
    book.decide("FA2", True, "price differs from the order", "clerk")
    assert {n: (d.reason, d.source) for n, d in book.current().items()} == {
        "FA1": ("goods damaged on delivery", "clerk"),
        "FA2": ("price differs from the order", "clerk")}
    book.decide("FA1", False, "credit note AV9 sent", "manager")
    assert set(book.current()) == {"FA2"} and set(book.current(["FA1"])) == set()


def test_the_platform_s_207_and_210_dispute_until_a_later_word(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    log, book = LifecycleLog(journal), Disputes(journal)
    log.record("f1", None, _status("UC4_F202500006_04-CDV-207_En_litige"))
    log.record("f2", None, _status("UC3_F202500005_04-CDV-210_Refusee"))
    log.record("f3", None, _status("UC2_F202500004_02-CDV-213_Rejetee"))  # not to chase
    log.record("f4", None, _status("UC1_F202500003_05-CDV-205_Approuvee"))  # to pay
    found = book.current()
    assert set(found) == {"F202500006", "F202500005", "F202500004"}
    assert found["F202500006"].source == "platform"
    assert found["F202500006"].reason.startswith("207 En litige")
    assert found["F202500005"].reason.startswith("210 Refusée")
    # settled with the buyer: a person lifts the platform's dispute
    book.decide("F202500006", False, "agreed by phone", "clerk")
    assert set(book.current()) == {"F202500005", "F202500004"}


def test_a_disputed_invoice_gets_no_reminder(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    due = date(2026, 11, 1)
    open_items = pl.DataFrame({
        "invoice_number": ["FA1", "FA2"], "customer_id": ["C1", "C1"],
        "issue_date": [due - timedelta(days=30)] * 2, "due_date": [due] * 2,
        "cents": [120000, 80000], "currency": ["EUR", "EUR"]})
    book = Disputes(journal)
    book.decide("FA2", True, "never delivered", "clerk")
    policy = Settings().receivables.dunning
    [letter] = plan_dunning(open_items, policy, due + timedelta(days=10), pl.DataFrame(),
                            set(book.current()), Decimal("40.00"))
    assert [line.invoice_number for line in letter.lines] == ["FA1"]
    assert letter.records == (("FA1", 1),)


def test_the_dispute_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    journal = Journal(f"sqlite:///{home / 'ledger.db'}")
    OpenItems(journal).refresh(pl.DataFrame({
        "invoice_number": ["FA2026-000001"], "customer_id": ["C1"],
        "invoice_type": ["invoice"], "issue_date": [date(2026, 10, 1)],
        "due_date": [date(2026, 11, 1)],
        "total_gross": pl.Series([Decimal("100.00")], dtype=pl.Decimal(18, 2)),
        "currency": ["EUR"], "credited_invoice_number": [None]}))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(INVOICES_CLI), "ar", *args, "--home", str(home)],
                              capture_output=True, text=True, env=dict(os.environ), timeout=120)

    done = cli("dispute", "FA2026-000001", "--reason", "wrong <quantity>")
    assert done.returncode == 0 and "disputed (wrong <quantity>" in done.stdout, done.stderr
    assert cli("dispute", "FA2026-000002", "--reason", "x").returncode != 0  # not billed
    assert cli("dispute", "FA2026-000001").returncode != 0  # no reason
    done = cli("undispute", "FA2026-000001", "--reason", "credit note sent")
    assert done.returncode == 0 and "not disputed" in done.stdout
    assert set(Disputes(journal).current()) == set()
