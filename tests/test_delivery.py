"""One bad invoice or batch fails alone: the rest of the night is delivered."""

from datetime import date

import pytest
import sqlalchemy as sa

from pipeline.batching import plan_batches
from pipeline.context import open_run
from pipeline.delivery import deliver_batch
from pipeline.errors import StorageError
from pipeline.ingest import ExtractBundle
from pipeline.journal import journal as deliveries
from pipeline.keys import safe_component
from pipeline.render.stage import render_batch
from pipeline.validate import validate


@pytest.fixture()
def run_parts(clean_bundle: ExtractBundle, settings):
    accepted = validate(clean_bundle, settings.seller, settings.validation,
                        today=date(2026, 11, 27)).accepted.head(4)
    [batch] = plan_batches(accepted, 10)
    ctx = open_run(settings, "test")
    yield clean_bundle, batch, ctx
    ctx.close()


def test_an_archive_failure_fails_that_invoice_only(run_parts, monkeypatch) -> None:
    bundle, batch, ctx = run_parts
    victim = batch.numbers[1]
    put = ctx.storage.put

    def failing_put(key: str, data: bytes, metadata=None, **kwargs):
        if safe_component(victim) in key:
            raise StorageError(f"cannot write {key}: File name too long")
        return put(key, data, metadata, **kwargs)

    monkeypatch.setattr(ctx.storage, "put", failing_put)
    report = deliver_batch(render_batch(bundle, batch, ctx), ctx)
    assert set(report.failed) == {victim}
    assert "File name too long" in report.failed[victim]
    assert set(report.delivered) == set(batch.numbers) - {victim}
    # nothing was claimed for it, so the next run delivers it
    with ctx.journal.engine.connect() as conn:
        states = {row.invoice_number: row.state for row in conn.execute(
            sa.select(deliveries.c.invoice_number, deliveries.c.state))}
    assert victim not in states
    assert {states[n] for n in batch.numbers if n != victim} == {"written"}


def test_a_batch_that_cannot_be_prepared_fails_its_invoices(run_parts, monkeypatch) -> None:
    bundle, batch, ctx = run_parts

    def broken(*args, **kwargs):
        raise KeyError("customer_id")

    monkeypatch.setattr("pipeline.render.stage.build_documents", broken)
    report = deliver_batch(render_batch(bundle, batch, ctx), ctx)
    assert set(report.failed) == set(batch.numbers) and not report.delivered
    assert all("could not be prepared" in e and "KeyError" in e for e in report.failed.values())


def test_a_channel_crash_fails_its_items_and_the_journal_says_so(run_parts,
                                                                 monkeypatch) -> None:
    bundle, batch, ctx = run_parts

    def crash(parcel):
        raise RuntimeError("printer on fire")

    for transport in ctx.transports.values():
        monkeypatch.setattr(transport, "deliver", crash)
    report = deliver_batch(render_batch(bundle, batch, ctx), ctx)
    assert set(report.failed) == set(batch.numbers)
    assert all("printer on fire" in e for e in report.failed.values())


def test_a_file_name_too_long_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="too long to name a file"):
        safe_component("/" * 90)
    assert safe_component("FA/2026/1") == "FA%2F2026%2F1"


def test_render_workers_log_through_the_parent_naming_batch_and_invoice(
        clean_bundle, tmp_path, caplog) -> None:
    import logging
    import shutil

    from pipeline.settings import PROJECT_ROOT, Settings

    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    base = templates / "base.html"
    base.write_text(base.read_text().replace(
        "</head>", "<style>p { color: notacolor }</style></head>", 1))
    settings = Settings(home=tmp_path / "home", render={
        "workers": 2, "batch_size": 10, "templates_dir": str(templates)})
    accepted = validate(clean_bundle, settings.seller, settings.validation,
                        today=date(2026, 11, 27)).accepted.head(2)
    [batch] = plan_batches(accepted, 10)
    ctx = open_run(settings, "logs")
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            rendered = render_batch(clean_bundle, batch, ctx)
    finally:
        ctx.close()
    assert all(r.pdf for r in rendered.rendered)
    for number in batch.numbers:
        assert any(f"batch {batch.batch_id} invoice {number}: weasyprint" in m
                   and "notacolor" in m for m in caplog.messages), caplog.messages


def test_invoices_not_rendered_in_time_fail_with_the_setting_to_change(
        clean_bundle, tmp_path) -> None:
    from pipeline.settings import Settings

    settings = Settings(home=tmp_path / "home", render={
        "workers": 2, "batch_size": 10, "batch_timeout_s": 0.001})
    accepted = validate(clean_bundle, settings.seller, settings.validation,
                        today=date(2026, 11, 27)).accepted.head(3)
    [batch] = plan_batches(accepted, 10)
    ctx = open_run(settings, "slow")
    try:
        report = deliver_batch(render_batch(clean_bundle, batch, ctx), ctx)
    finally:
        ctx.close()
    assert set(report.failed) == set(batch.numbers)
    assert all("INVOICES_RENDER__BATCH_TIMEOUT_S" in e for e in report.failed.values())


def test_a_stuck_render_worker_does_not_hold_the_run_open() -> None:
    import time

    from pipeline.executor import STOP_WAIT_S, ProcessExecutor

    executor = ProcessExecutor(1)
    executor.submit(time.sleep, 0).result()  # the worker is up
    executor.submit(time.sleep, 300)  # stuck
    start = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - start < STOP_WAIT_S + 20
