"""212 Encaissée: a services invoice deposited on the platform and paid in full is reported
once, with the amount collected per VAT rate, as the invoice's Factur-X says; goods invoices
need none; a deposit whose answer was lost is looked up, never deposited twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipeline import keys
from pipeline.einvoice import cdar
from pipeline.journal import Journal
from pipeline.platform import client_for
from pipeline.receivables.collected import Billed, collected_by_rate, send_collected
from pipeline.receivables.daily import new_run_id
from pipeline.render.engine import WeasyPrintEngine
from pipeline.settings import PlatformSettings, Settings
from pipeline.storage.local import LocalStorage
from tests.pa_server import CLIENT_ID, CLIENT_SECRET, PaServer
from tests.standards import schematron_failures, xsd_errors

AT = datetime(2027, 1, 4, 9, 30)


def _pick(docs, operation: str, skip: int = 0):
    found = [d for d in docs if not d.is_credit_note and d.operation == operation
             and d.buyer.country == "FR" and d.buyer.siren]
    return found[skip]


@pytest.fixture()
def archived(sample_docs, tmp_path: Path):
    """Two services invoices and a goods one, rendered and archived, deposited on the PA."""
    docs = [_pick(sample_docs, "services"), _pick(sample_docs, "services", 1),
            _pick(sample_docs, "goods")]
    storage = LocalStorage(tmp_path / "archive")
    engine = WeasyPrintEngine(Settings().render.templates_dir)
    rows = []
    for doc in docs:
        key = keys.pdf_key(doc.number, doc.issue_date)
        storage.put(key, engine.render(doc))
        rows.append({"invoice_number": doc.number, "channel": "pa", "storage_key": key})
    paid = pl.DataFrame({"invoice_number": [d.number for d in docs],
                         "cents": [int(d.total_gross * 100) for d in docs]})
    return docs, storage, pl.DataFrame(rows), paid


def _settings(pa: PaServer, **extra) -> PlatformSettings:
    return PlatformSettings(url=pa.flow_url, directory_url=pa.directory_url,
                            token_url=pa.token_url, client_id=CLIENT_ID,
                            client_secret=CLIENT_SECRET, **extra)


def _send(paid, index, storage, journal, pa, resend=False, **extra):
    run_id = new_run_id()
    journal.begin_run(run_id)
    with client_for(_settings(pa, **extra)) as client:
        return send_collected(paid, index, storage, journal, Settings(), client, run_id,
                              now=lambda: AT, resend_in_doubt=resend)


def test_paid_services_invoices_are_reported_once_and_goods_never(
        archived, pa_server: PaServer, tmp_path: Path) -> None:
    docs, storage, index, paid = archived
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    first = _send(paid, index, storage, journal, pa_server)
    assert sorted(first.deposited) == sorted(d.number for d in docs[:2])
    assert first.not_due == 1 and not first.failed and not first.in_doubt
    for deposit in pa_server.deposits:
        assert deposit.syntax == "CDAR" and deposit.tracking_id.startswith("212-")
        assert xsd_errors("cdar", deposit.data) == []
        assert schematron_failures("br-fr-cdv", deposit.data) == []
        [status] = cdar.parse(deposit.data)
        doc = next(d for d in docs if d.number == status.invoice_number)
        assert status.status_code == 212 and status.amount == doc.total_gross
        by_rate = cdar.read_totals(deposit.data)
        assert sum(v for k, v in by_rate.items() if k.startswith("collected ")) \
            == doc.total_gross
    again = _send(paid, index, storage, journal, pa_server)
    assert (again.deposited, again.already, again.not_due) == ([], 2, 1)
    assert len(pa_server.deposits) == 2


def test_a_lost_answer_is_looked_up_not_deposited_twice(
        archived, pa_server: PaServer, tmp_path: Path) -> None:
    docs, storage, index, paid = archived
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    one = paid.head(1)
    pa_server.answer_delay_s = 1.5
    try:
        lost = _send(one, index, storage, journal, pa_server, timeout_s=0.5, retries=0)
    finally:
        pa_server.answer_delay_s = 0
    assert list(lost.in_doubt) == [docs[0].number] and len(pa_server.deposits) == 1
    assert _send(one, index, storage, journal, pa_server).in_doubt  # not without asking
    found = _send(one, index, storage, journal, pa_server, resend=True)
    assert found.deposited == [docs[0].number] and len(pa_server.deposits) == 1
    assert "found by its tracking id" in journal.rows(invoice=docs[0].number)[0].reply


def test_the_amount_collected_splits_over_the_rates_to_the_cent() -> None:
    billed = Billed("F1", datetime(2026, 11, 2).date(), "380", "S1", False, "EUR",
                    ((Decimal("5.5"), Decimal("105.50")), (Decimal("20"), Decimal("240.00")),
                     (Decimal("0"), Decimal("0.00"))),
                    cdar.Party("100000009", "0002", "S"), cdar.Party("200000008", "0002", "B"))
    parts = collected_by_rate(billed, Decimal("345.50"))
    assert parts == [(Decimal("5.5"), Decimal("105.50")), (Decimal("20"), Decimal("240.00"))]
    part = collected_by_rate(billed, Decimal("100.00"))  # a third of it, not evenly divisible
    assert sum(a for _, a in part) == Decimal("100.00")
    assert all(a == a.quantize(Decimal("0.01")) for _, a in part)
    assert replace(billed, billing_mode="B1").due_on_receipt is False
    assert replace(billed, vat_on_debits=True).due_on_receipt is False
