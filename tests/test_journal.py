"""The delivery journal: one winner per claim, in-doubt rows after a crash, on every database."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.journal import Journal
from tests.pg_server import postgres_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on the embedded SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    base = request.getfixturevalue("postgres_url")
    name = f"j{abs(hash(request.node.name)) % 10**8}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture()
def journal(url: str) -> Journal:
    j = Journal(url)
    yield j
    j.dispose()


def test_claim_finish_and_already_delivered(journal: Journal) -> None:
    journal.begin_run("r1")
    assert journal.claim("email:F1", "F1", "email", "s", "r1", "smtp") == "claimed"
    journal.finish("email:F1", "r1", "sent", "250 ok")
    journal.begin_run("r2")
    assert journal.claim("email:F1", "F1", "email", "s", "r2", "smtp") == "delivered"
    [row] = journal.rows(invoice="F1")
    assert (row.state, row.attempts, row.reply, row.transport) == ("sent", 1, "250 ok", "smtp")
    assert [e["state"] for e in journal.history(["email:F1"])] == ["started", "sent"]


def test_a_failed_delivery_is_claimed_again(journal: Journal) -> None:
    journal.begin_run("r1")
    journal.claim("email:F1", "F1", "email", "s", "r1", "smtp")
    journal.finish("email:F1", "r1", "failed", "421 busy", "transient")
    journal.end_run("r1")
    journal.begin_run("r2")
    assert journal.claim("email:F1", "F1", "email", "s", "r2", "smtp") == "claimed"
    assert journal.rows(invoice="F1")[0].attempts == 2


def test_only_one_of_many_concurrent_claimers_wins(url: str) -> None:
    Journal(url).dispose()
    results: list[str] = []
    barrier = threading.Barrier(8)

    def claimer(i: int) -> None:
        j = Journal(url)
        j.begin_run(f"r{i}")
        barrier.wait()
        results.extend(j.claim(f"email:F{n}", f"F{n}", "email", "s", f"r{i}", "smtp")
                       for n in range(50))
        j.dispose()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("claimed") == 50
    assert set(results) <= {"claimed", "in_flight"}


def test_a_started_row_of_a_finished_run_is_in_doubt_until_resent(journal: Journal) -> None:
    journal.begin_run("crashed")
    journal.claim("email:F1", "F1", "email", "s", "crashed", "smtp")
    journal.end_run("crashed")  # as if the process died between claim and outcome
    journal.begin_run("next")
    assert journal.claim("email:F1", "F1", "email", "s", "next", "smtp") == "in_doubt"
    assert [r.key for r in journal.rows(state="in_doubt")] == ["email:F1"]
    assert journal.claim("email:F1", "F1", "email", "s", "next", "smtp",
                         resend_in_doubt=True) == "claimed"
    journal.finish("email:F1", "next", "sent", "250 ok")
    assert journal.rows(state="in_doubt") == []


def test_a_started_row_of_a_live_run_is_in_flight(journal: Journal) -> None:
    journal.begin_run("live")  # this process: alive
    journal.claim("email:F1", "F1", "email", "s", "live", "smtp")
    journal.begin_run("other")
    assert journal.claim("email:F1", "F1", "email", "s", "other", "smtp",
                         resend_in_doubt=True) == "in_flight"


def test_only_the_claiming_run_records_the_outcome(journal: Journal) -> None:
    journal.begin_run("r1")
    journal.claim("email:F1", "F1", "email", "s", "r1", "smtp")
    with pytest.raises(RuntimeError, match="not started by run r2"):
        journal.finish("email:F1", "r2", "sent", "250")


def test_control_numbers_are_unique_across_concurrent_runs(url: str) -> None:
    Journal(url).dispose()
    drawn: list[int] = []

    def draw() -> None:
        j = Journal(url)
        drawn.extend(j.next_control_number("3012345000019", "edifact") for _ in range(100))
        j.dispose()

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(drawn) == list(range(1, 401))
