"""The French 2026 reform end to end: the 300-invoice sample billed through an accredited
platform (the AFNOR-validated PA server of ``tests/pa_server.py``, on loopback), then the
platform's lifecycle statuses read back.

Every domestic French B2B invoice goes to the platform exactly once; one the platform
rejects fails with its reason code; a buyer the directory does not know is reported and
not deposited; throttling is waited out; a re-run deposits nothing; ``invoices pa sync``
records the statuses and ``invoices status`` shows them; refused and rejected invoices are
in the exceptions report with their reasons.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from decimal import Decimal
from pathlib import Path

import polars as pl

from pipeline.ingest import load_extract
from pipeline.settings import Settings
from pipeline.validate import validate
from tests.conftest import INVOICES_CLI, SAMPLE_EXTRACT
from tests.pa_server import CLIENT_ID, CLIENT_SECRET, PaServer
from tests.test_delivery_e2e import run_cli


def _env(pa: PaServer) -> dict[str, str]:
    return {"INVOICES_PA__URL": pa.flow_url, "INVOICES_PA__DIRECTORY_URL": pa.directory_url,
            "INVOICES_PA__TOKEN_URL": pa.token_url, "INVOICES_PA__CLIENT_ID": CLIENT_ID,
            "INVOICES_PA__CLIENT_SECRET": CLIENT_SECRET, "INVOICES_PA__RETRIES": "5"}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run([str(INVOICES_CLI), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def _routed(extract: Path) -> pl.DataFrame:
    """Accepted invoices of French buyers with a SIREN: the ones the reform sends to a PA."""
    settings = Settings()
    bundle = load_extract(extract)
    accepted = validate(bundle, settings.seller, settings.validation).accepted
    return (bundle.invoices.filter(pl.col("invoice_number").is_in(
        accepted["invoice_number"].implode()))
        .join(bundle.customers, on="customer_id")
        .filter((pl.col("country") == "FR") & pl.col("siren").is_not_null()))


def test_the_sample_goes_through_the_platform_once_and_its_statuses_come_back(
        pa_server: PaServer, tmp_path: Path) -> None:
    routed = _routed(SAMPLE_EXTRACT)
    sirens = routed.unique("customer_id").sort("customer_id")
    unknown = sirens.row(0, named=True)  # a buyer the directory does not know
    for row in sirens.iter_rows(named=True):
        if row["customer_id"] != unknown["customer_id"]:
            pa_server.add_company(row["siren"], row["legal_name"])
    expected = routed.filter(pl.col("customer_id") != unknown["customer_id"])
    refused = expected.filter(pl.col("invoice_type") == "invoice")["invoice_number"][3]
    pa_server.reject(refused, "InvalidSchema", "BR-FR-12: BT-49 absent (test)")
    pa_server.throttle(3, status=429, retry_after="1")
    home = tmp_path / "home"

    code, output, summary = run_cli(SAMPLE_EXTRACT, home, **_env(pa_server))

    deposited = Counter(d.invoice_number for d in pa_server.deposits)
    wanted = set(expected["invoice_number"]) - {refused}
    assert set(deposited) == wanted and set(deposited.values()) == {1}, output
    assert pa_server.duplicates == []
    assert all(d.syntax == "Factur-X" and d.profile == "CIUS"
               and d.processing_rule == "B2B" for d in pa_server.deposits)
    assert code == 1 and summary["deposited"] == len(wanted)
    assert "InvalidSchema" in summary["failures"][refused]
    lost = set(routed.filter(pl.col("customer_id") == unknown["customer_id"])["invoice_number"])
    assert lost and all("no electronic address" in summary["failures"][n] for n in lost)
    assert summary["failed"] == len(lost) + 1
    # buyers abroad keep their own channel
    assert summary["delivered"] == summary["input_invoices"] - summary["rejected"] - len(lost) - 1
    assert summary["outcomes_by_channel"]["pa"] == {"deposited": len(wanted)}

    # statuses published by the platform: approved, refused, rejected, paid
    flow_numbers = sorted(wanted)
    issued = dict(routed.select("invoice_number", "issue_date").iter_rows())
    seller = (Settings().seller.siren, Settings().seller.legal_name)
    approved, declined, collected = flow_numbers[0], flow_numbers[1], flow_numbers[2]
    for number, code_, reason in ((approved, 200, None), (approved, 205, None),
                                  (declined, 210, "REF_CT"), (collected, 212, None)):
        pa_server.publish_status(number, issued[number], code_, reason,
                                 reason="Commande non conforme" if reason else None,
                                 amount=Decimal("120.00") if code_ == 212 else None,
                                 seller=seller, buyer=("200000008", "ACHETEUR"))
    synced = _cli("pa", "sync", "--home", str(home), env=_env(pa_server))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "4 new statuses" in synced.stdout
    again = _cli("pa", "sync", "--home", str(home), env=_env(pa_server))
    assert "0 new statuses" in again.stdout

    shown = _cli("status", declined, "--home", str(home), "--json", env=_env(pa_server))
    events = json.loads(shown.stdout)
    stages = [e["stage"] for e in events]
    assert {"archive", "delivery", "platform"} <= set(stages)
    platform = [e for e in events if e["stage"] == "platform"]
    assert platform[0]["what"] == "210 Refusée" and "REF_CT" in platform[0]["detail"]
    assert any(e["what"] == "pa deposited" for e in events)
    table = _cli("status", approved, "--home", str(home), env=_env(pa_server))
    assert "200 Déposée" in table.stdout and "205 Approuvée" in table.stdout

    # a re-run deposits nothing again; the refused invoice is in its exceptions report
    before = len(pa_server.deposits)
    code, output, summary = run_cli(SAMPLE_EXTRACT, home, **_env(pa_server))
    assert len(pa_server.deposits) == before, output
    assert summary["deposited"] == 0
    report = (home / "reports" / summary["run_id"] / "exceptions.html").read_text()
    assert declined in report and "210 Refusée" in report and "REF_CT" in report


def test_a_deposit_whose_answer_was_lost_is_found_again_not_deposited_twice(
        pa_server: PaServer) -> None:
    """The platform stored the flow but its 202 came too late: the deposit is in doubt,
    and the transport of a run re-sending what was in doubt finds it by its tracking id."""
    from pipeline.channels.transports.base import Parcel
    from pipeline.channels.transports.platform import PlatformInDoubtError, PlatformTransport
    from pipeline.settings import PlatformSettings

    settings = PlatformSettings(url=pa_server.flow_url, directory_url=pa_server.directory_url,
                                token_url=pa_server.token_url, client_id=CLIENT_ID,
                                client_secret=CLIENT_SECRET, timeout_s=0.5)
    pa_server.add_company("732829320", "Acheteur SA")
    parcel = Parcel("FA2026-000001.pdf", b"%PDF-1.7 a lost answer", ("FA2026-000001",),
                    partner="732829320")
    first = PlatformTransport(settings)
    first.address("732829320")  # the directory answered before the platform slowed down
    pa_server.answer_delay_s = 1.5
    try:
        first.deliver(parcel)
        raise AssertionError("a lost answer must leave the deposit in doubt")
    except PlatformInDoubtError as exc:
        assert "look it up" in str(exc)
    finally:
        first.close()
    pa_server.answer_delay_s = 0
    assert len(pa_server.deposits) == 1  # it was stored

    again = PlatformTransport(settings, look_up_first=True)
    receipt = again.deliver(parcel)
    again.close()
    assert receipt.outcome == "deposited" and "found by its tracking id" in receipt.reply
    assert receipt.reply.startswith(f"flow {pa_server.deposits[0].flow_id}")
    assert len(pa_server.deposits) == 1


def test_a_failed_look_up_keeps_the_deposit_in_doubt(pa_server: PaServer) -> None:
    """Re-sending what was in doubt, the platform cannot say whether it has the flow: the
    invoice stays in doubt rather than risk a second deposit."""
    from pipeline.channels.transports.base import Parcel
    from pipeline.channels.transports.platform import PlatformInDoubtError, PlatformTransport
    from pipeline.settings import PlatformSettings

    settings = PlatformSettings(url=pa_server.flow_url, directory_url=pa_server.directory_url,
                                token_url=pa_server.token_url, client_id=CLIENT_ID,
                                client_secret=CLIENT_SECRET, retries=1)
    pa_server.add_company("732829320", "Acheteur SA")
    transport = PlatformTransport(settings, look_up_first=True)
    transport.client.token()
    pa_server.throttle(5, status=503, retry_after="0")
    try:
        transport.deliver(Parcel("F1.pdf", b"%PDF-1.7 f1", ("F1",), partner="732829320"))
        raise AssertionError("an unanswered look-up must leave the invoice in doubt")
    except PlatformInDoubtError as exc:
        assert "stays in doubt" in str(exc)
    finally:
        transport.close()
    assert pa_server.deposits == []


def test_sync_records_our_statuses_once_in_utc_and_not_another_seller_s(
        pa_server: PaServer, tmp_path: Path) -> None:
    from pipeline.journal import Journal
    from pipeline.platform.lifecycle import LifecycleLog, sync

    settings = Settings(home=tmp_path, pa={
        "url": pa_server.flow_url, "directory_url": pa_server.directory_url,
        "token_url": pa_server.token_url, "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET})
    ours = (settings.seller.siren, settings.seller.legal_name)
    pa_server.publish_status("FA2026-000001", "2026-11-02", 205, seller=ours)
    pa_server.publish_status("FA2026-000002", "2026-11-02", 213, "REJ_SEMAN",
                             reason="BT-49 absent", seller=ours)
    pa_server.publish_status("XX-1", "2026-11-02", 210, "REF_CT", seller=("999999999", "AUTRE"))
    journal = Journal(settings.ledger_url)

    report = sync(settings, journal)
    assert (report.flows, report.recorded) == (3, 2)
    assert report.problems == [p for p in report.problems if "XX-1" in p and "not us" in p]
    assert len(report.problems) == 1
    log = LifecycleLog(journal)
    (rejected,) = log.of("FA2026-000002")
    assert rejected.code == 213 and "REJ_SEMAN" in rejected.reason_text
    assert rejected.status_at is not None and rejected.status_at.utcoffset().total_seconds() == 0
    assert log.of("XX-1") == []
    assert [r.invoice_number for r in log.needing_action()] == ["FA2026-000002"]
    assert sync(settings, journal).recorded == 0  # read again, recorded once
    journal.dispose()


def test_an_invoice_delivered_before_the_platform_is_not_deposited_after(
        pa_server: PaServer, tmp_path: Path) -> None:
    """Configuring a platform moves French B2B invoices to it: what already went out on
    the customer's own channel is not sent a second time."""
    from pipeline.sample import generate_extract

    extract = tmp_path / "extract"
    generate_extract(extract, 30, seed=21)
    for row in _routed(extract).unique("customer_id").iter_rows(named=True):
        pa_server.add_company(row["siren"], row["legal_name"])
    home = tmp_path / "home"
    code, output, first = run_cli(extract, home)
    assert code == 0 and first["written"] > 0, output
    code, output, second = run_cli(extract, home, **_env(pa_server))
    assert code == 0, output
    assert pa_server.deposits == [] and second["deposited"] == 0
    assert second["already_delivered"] == first["written"]
