"""Letters are planned once and delivered once through the journal and a real transport
(the outbox here; SMTP in tests/test_receivables_e2e.py)."""

from __future__ import annotations

import email
from datetime import date
from email import policy
from pathlib import Path

import pytest

from pipeline.channels.email import build_letter
from pipeline.channels.transports.outbox import OutboxTransport
from pipeline.journal import Journal
from pipeline.receivables.correspondence import (
    Envelope,
    LetterBook,
    PlannedLetter,
    deliver_letters,
)
from pipeline.receivables.daily import new_run_id
from pipeline.render.templates import make_environment
from pipeline.settings import Settings
from pipeline.storage.local import LocalStorage

DAY = date(2027, 1, 4)


def _letter(letter_id: str = "R1-C1-20270104-EUR", channel: str = "email") -> PlannedLetter:
    return PlannedLetter(letter_id, "dunning", "C1", channel, DAY, {"n": 1})


@pytest.fixture()
def post(tmp_path: Path):
    settings = Settings(home=tmp_path / "home")
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    transports = {"email": OutboxTransport(tmp_path / "out" / "email"),
                  "print": OutboxTransport(tmp_path / "out" / "print")}
    storage = LocalStorage(tmp_path / "archive")
    env = make_environment(settings.render.templates_dir)

    def deliver(planned, render, resend=False):
        run_id = new_run_id()
        journal.begin_run(run_id)
        return deliver_letters(planned, render, settings, journal, storage, transports, env,
                               run_id, resend)
    return journal, deliver, tmp_path


def _render(email_address: str | None = "ap@client.example"):
    def render(letter: PlannedLetter) -> tuple[Envelope, bytes]:
        return (Envelope("Client SA", email_address, "fr", "Relance"),
                b"%PDF-1.7 " + letter.letter_id.encode())
    return render


def test_a_letter_is_planned_once_and_a_level_recorded_once(tmp_path: Path) -> None:
    book = LetterBook(Journal(f"sqlite:///{tmp_path / 'ledger.db'}"))
    assert book.plan(_letter(), [("FA1", 1), ("FA2", 1)])
    assert not book.plan(_letter(), [("FA3", 1)])  # the same letter again
    # another letter reminding FA2 of level 1 again: refused whole, FA4 not recorded either
    assert not book.plan(_letter("R1-C1-20270105-EUR"), [("FA4", 1), ("FA2", 1)])
    assert book.plan(_letter("R2-C1-20270120-EUR"), [("FA2", 2)])
    assert sorted(book.sent_levels()) == [("FA1", 1, DAY), ("FA2", 1, DAY), ("FA2", 2, DAY)]
    assert [p.letter_id for p in book.planned("dunning")] == [
        "R1-C1-20270104-EUR", "R2-C1-20270120-EUR"]


def test_delivered_once_by_email_or_by_post_without_an_address(post) -> None:
    journal, deliver, tmp_path = post
    first = deliver([_letter()], _render())
    assert first.delivered == {"R1-C1-20270104-EUR": "written"}
    message = email.message_from_bytes(
        (tmp_path / "out" / "email" / "R1-C1-20270104-EUR.eml").read_bytes(),
        policy=policy.default)
    assert message["To"] == "Client SA <ap@client.example>"
    assert message.get_payload()[1].get_filename() == "R1-C1-20270104-EUR.pdf"
    again = deliver([_letter()], _render())
    assert (again.delivered, again.already) == ({}, ["R1-C1-20270104-EUR"])
    by_post = deliver([_letter("S-C2-2026-12-EUR")], _render(None))
    assert by_post.delivered == {"S-C2-2026-12-EUR": "written"}
    assert (tmp_path / "out" / "print" / "S-C2-2026-12-EUR.pdf").read_bytes().startswith(
        b"%PDF")
    assert [r.state for r in journal.rows(invoice="S-C2-2026-12-EUR")] == ["written"]


def test_a_letter_that_cannot_be_prepared_fails_alone_and_goes_next_time(post) -> None:
    journal, deliver, _ = post

    def broken(letter: PlannedLetter) -> tuple[Envelope, bytes]:
        raise ValueError("customer C1 is not in the extract's customers table")

    failed = deliver([_letter()], broken)
    assert "not in the extract" in failed.failed["R1-C1-20270104-EUR"]
    assert journal.rows(invoice="R1-C1-20270104-EUR") == []  # never claimed
    assert deliver([_letter()], _render()).delivered == {"R1-C1-20270104-EUR": "written"}


def test_hostile_names_cannot_inject_headers() -> None:
    seller = Settings().seller
    built = build_letter("R1-X-20270104-EUR", "dunning", DAY,
                         Envelope("Evil\r\nBcc: victim@example.com", "ap@client.example",
                                  "en", "Payment reminder"),
                         b"%PDF-1.7", "0" * 64, seller,
                         make_environment(Settings().render.templates_dir))
    assert built.recipients == ("ap@client.example",)
    headers = built.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nBcc:" not in headers and "victim" not in built.recipients
    with pytest.raises(ValueError, match="unusable email address"):
        build_letter("R1-X", "dunning", DAY,
                     Envelope("X", "a@b.example\r\nBcc: c@d.example", "en", "Reminder"),
                     b"%PDF", "0" * 64, seller,
                     make_environment(Settings().render.templates_dir))


class _Refusing:
    """A relay that refuses the address for good (a real transport's terminal error)."""

    name = "smtp"

    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, parcel):
        from pipeline.channels.transports.base import TerminalDeliveryError

        self.calls += 1
        raise TerminalDeliveryError("550 5.1.1 mailbox unknown")

    def close(self) -> None:
        pass


def test_a_letter_refused_for_good_is_not_sent_again_every_morning(post) -> None:
    journal, deliver, tmp_path = post
    settings = Settings(home=tmp_path / "home")
    refusing = _Refusing()
    transports = {"email": refusing, "print": OutboxTransport(tmp_path / "out" / "print")}
    storage = LocalStorage(tmp_path / "archive")
    env = make_environment(settings.render.templates_dir)
    for _ in range(2):
        run_id = new_run_id()
        journal.begin_run(run_id)
        report = deliver_letters([_letter()], _render(), settings, journal, storage,
                                 transports, env, run_id)
        assert "550 5.1.1" in report.failed["R1-C1-20270104-EUR"]
    assert refusing.calls == 1
    assert "not sent again" in report.failed["R1-C1-20270104-EUR"]
