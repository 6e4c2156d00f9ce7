"""The receivables day's steps after a stop: a reminder that did not go out on its day is
never sent stale (an invoice disputed or paid since is not in it), and the statements a
stopped run left on the 1st go out on the 2nd."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.ingest import load_extract
from pipeline.receivables import daily
from pipeline.receivables.correspondence import LetterBook
from pipeline.receivables.daily import Day, new_run_id
from pipeline.receivables.disputes import Disputes
from pipeline.receivables.dunning import DunningLetter
from pipeline.receivables.open_items import OpenItems
from pipeline.sample import generate_extract
from pipeline.settings import Settings


class Stopped(Exception):
    """The process died here."""


@pytest.fixture()
def ledger(tmp_path: Path) -> tuple[Day, Path]:
    extract = tmp_path / "extract"
    generate_extract(extract, 40, seed=3)
    invoices = load_extract(extract).invoices
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir()
    day = Day(settings, date(2027, 1, 20), new_run_id(), extract)
    day.journal.begin_run(day.run_id)
    OpenItems(day.journal).refresh(invoices.with_columns(channel=pl.lit("email")))
    return day, tmp_path


def _on(day: Day, when: date) -> Day:
    later = Day(day.settings, when, new_run_id(), day.extract_dir)
    later.journal.begin_run(later.run_id)
    return later


def _stop_before_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args: object) -> None:
        raise Stopped()
    monkeypatch.setattr(daily, "_deliver", stopped)


def test_a_reminder_that_did_not_go_out_is_never_sent_stale(
        ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    day, tmp_path = ledger
    _stop_before_delivery(monkeypatch)
    with pytest.raises(Stopped):
        daily.dunning_step(day)
    book = LetterBook(day.journal)
    stale = book.planned("dunning")
    assert stale, "nothing was late on 2027-01-20?"
    victim = DunningLetter.from_dict(stale[0].payload).lines[0].invoice_number
    Disputes(day.journal).decide(victim, True, "wrong goods", "clerk")
    monkeypatch.undo()

    next_day = _on(day, day.run_date + timedelta(days=1))
    counts = daily.dunning_step(next_day)
    assert counts["withdrawn"] == len(stale)
    assert counts["failed"] == {} and counts["in_doubt"] == {}
    out = {p.name for p in (day.settings.home / "outbox").rglob("R*")}
    assert not {f"{p.letter_id}.eml" for p in stale} & out  # none of yesterday's went out
    assert all(p.day == next_day.run_date for p in book.planned("dunning"))
    listed = {line.invoice_number for p in book.planned("dunning")
              for line in DunningLetter.from_dict(p.payload).lines}
    assert victim not in listed
    assert counts["delivered"] == len(book.planned("dunning")) > 0


def test_statements_a_stopped_run_left_go_out_the_next_morning(
        ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    day, _ = ledger
    first = _on(day, date(2027, 1, 1))
    _stop_before_delivery(monkeypatch)
    with pytest.raises(Stopped):
        daily.statements_step(first)
    planned = LetterBook(day.journal).planned("statement")
    assert planned and all(p.letter_id.endswith("-2026-12-EUR") for p in planned)
    monkeypatch.undo()
    second = daily.statements_step(_on(day, date(2027, 1, 2)))
    assert (second["planned"], second["delivered"]) == (0, len(planned))
    third = daily.statements_step(_on(day, date(2027, 1, 3)))
    assert (third["planned"], third["delivered"], third["already"]) == (0, 0, 0)
    assert LetterBook(day.journal).undelivered("statement") == []


def test_statements_a_run_stopped_planning_are_all_planned_the_next_morning(
        ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    day, _ = ledger
    book = LetterBook(day.journal)
    plan = LetterBook.plan
    calls: list[str] = []

    def dies_on_the_third(self, letter, records=()):
        calls.append(letter.letter_id)
        if len(calls) == 3:
            raise Stopped()
        return plan(self, letter, records)

    monkeypatch.setattr(LetterBook, "plan", dies_on_the_third)
    with pytest.raises(Stopped):
        daily.statements_step(_on(day, date(2027, 1, 1)))
    monkeypatch.undo()
    assert len(book.planned("statement")) == 2
    second = daily.statements_step(_on(day, date(2027, 1, 2)))
    everyone = book.planned("statement")
    assert len(everyone) > 3 and second["planned"] == len(everyone) - 2
    assert second["delivered"] == len(everyone)
