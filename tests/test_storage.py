"""One storage test suite, run over every backend: a local folder and S3 (a moto server).

Every test takes the ``storage`` fixture and runs once per backend, in the style of
dlt's destination tests: what the archive promises (write-once, digests, keys
that stay under their prefix, concurrent uploads, an append-only index that
compacts without losing a row) must hold wherever the archive lives.
"""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from pipeline import keys
from pipeline.archive import (
    Archived,
    archive_pdfs,
    billed_rows,
    compact,
    load_history,
    read_artifacts,
    read_index,
    write_index,
)
from pipeline.audit import verify
from pipeline.errors import StorageError
from pipeline.storage import ArchiveConflictError, Blob, LocalStorage, MissingObjectError
from pipeline.storage.base import StoredObject, sha256_of
from pipeline.storage.s3 import S3Storage, parse_s3_url
from tests.s3_server import new_bucket

BACKENDS = ["local", "s3"]


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The same archive contract on each backend."""
    if request.param == "local":
        return LocalStorage(tmp_path / "archive")
    client = request.getfixturevalue("s3_client")
    bucket = new_bucket(client)
    return S3Storage(bucket, "tenant/archive",
                     endpoint_url=request.getfixturevalue("s3_endpoint"), workers=8,
                     multipart_threshold=6 * 1024 * 1024, part_size=5 * 1024 * 1024)


def test_an_object_reads_back_with_its_digest(storage) -> None:
    stored = storage.put("invoices/2026/11/A-1.pdf", b"%PDF one", {"invoice-number": "A-1"})
    assert stored == StoredObject("invoices/2026/11/A-1.pdf", sha256_of(b"%PDF one"), 8, True)
    assert storage.get("invoices/2026/11/A-1.pdf") == b"%PDF one"
    assert storage.head("invoices/2026/11/A-1.pdf").sha256 == stored.sha256
    assert storage.head("invoices/2026/11/A-2.pdf") is None
    with pytest.raises(MissingObjectError, match="A-2.pdf"):
        storage.get("invoices/2026/11/A-2.pdf")


def test_the_same_bytes_again_are_a_no_op_other_bytes_a_conflict(storage) -> None:
    key = "invoices/2026/11/A-1.pdf"
    first = storage.put(key, b"original")
    again = storage.put(key, b"original")
    assert first.created and not again.created and again.sha256 == first.sha256
    with pytest.raises(ArchiveConflictError) as raised:
        storage.put(key, b"tampered")
    message = str(raised.value)
    assert key in message and sha256_of(b"original") in message
    assert sha256_of(b"tampered") in message
    assert storage.get(key) == b"original"


def test_racing_writers_of_one_key_leave_one_object(storage) -> None:
    """Eight threads write the same key with different bytes at once: the store keeps
    exactly one, and every other writer is told."""
    key, results = "deliveries/print/2026/11/b-1.pdf", {}
    start = threading.Barrier(8)

    def write(i: int) -> None:
        start.wait()
        try:
            results[i] = storage.put(key, f"version {i}".encode())
        except ArchiveConflictError as exc:
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if isinstance(r, StoredObject)]
    assert len(winners) == 1
    assert storage.get(key) == f"version {winners[0]}".encode()


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "a/b", "..", "a\\..\\b", "nul\x00x",
                                     "FA-" + "9" * 297, "Rechnung-ÄÖÜ-請求書", "%2E%2E"])
def test_no_invoice_number_escapes_its_prefix(storage, hostile: str) -> None:
    try:
        key = keys.pdf_key(hostile, date(2026, 11, 3))
    except ValueError as exc:  # too long for a file name: refused, never cut
        assert len(hostile) > 100 and "too long" in str(exc)
        return
    assert key.startswith("invoices/2026/11/") and key.count("/") == 3
    storage.put(key, b"x")
    assert list(storage.list("invoices")) == [key]
    assert storage.get(key) == b"x"
    with pytest.raises(StorageError):
        storage.put(f"invoices/../{hostile}", b"x")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b", "a\\b", "a b", "é", ""])
def test_unsafe_keys_are_refused_by_every_backend(storage, key: str) -> None:
    with pytest.raises(StorageError, match="not a safe relative key"):
        storage.put(key, b"x")


def test_listing_stays_under_its_prefix(storage) -> None:
    for key in ("index/period=2026-10/r1.parquet", "index/period=2026-11/r2.parquet",
                "indexes/other.parquet", "invoices/2026/11/A.pdf"):
        storage.put(key, b"x")
    assert list(storage.list("index")) == ["index/period=2026-10/r1.parquet",
                                           "index/period=2026-11/r2.parquet"]
    assert list(storage.list("nothing")) == []
    storage.delete(["index/period=2026-10/r1.parquet"])
    assert list(storage.list("index")) == ["index/period=2026-11/r2.parquet"]


def test_put_many_uploads_concurrently_and_reports_each_object(storage) -> None:
    storage.put("invoices/2026/11/N-7.pdf", b"first version")
    blobs = [Blob(f"invoices/2026/11/N-{i}.pdf", f"pdf {i}".encode(),
                  {"invoice-number": f"N-{i}"}) for i in range(40)]
    results = storage.put_many(blobs)
    assert isinstance(results[7], ArchiveConflictError)
    assert all(isinstance(r, StoredObject) and r.created
               for i, r in enumerate(results) if i != 7)
    assert len(list(storage.list("invoices"))) == 40


def test_a_large_file_is_stored_whole(storage) -> None:
    """Above the multipart threshold S3 gets parts; the object appears whole, once."""
    data = bytes(range(256)) * (11 * 1024 * 4)  # 11 MiB
    stored = storage.put("deliveries/print/2026/11/big.pdf", data)
    assert stored.created and storage.get("deliveries/print/2026/11/big.pdf") == data
    assert not storage.put("deliveries/print/2026/11/big.pdf", data).created
    with pytest.raises(ArchiveConflictError):
        storage.put("deliveries/print/2026/11/big.pdf", data[:-1] + b"!")
    assert storage.get("deliveries/print/2026/11/big.pdf") == data


# --- the index over each backend ------------------------------------------------------


def _archived(storage, number: str, run_id: str, day: date = date(2026, 11, 3),
              channel: str = "email", po_number: str | None = None,
              lines: tuple = ()) -> Archived:
    doc = SimpleNamespace(
        number=number, customer_id="C1", invoice_type="invoice", issue_date=day,
        due_date=day, total_net=Decimal("10.00"), total_vat=Decimal("2.00"),
        total_gross=Decimal("12.00"), currency="EUR", credited_invoice_number=None,
        channel=channel, po_number=po_number, lines=list(lines))
    pdf = storage.put(keys.pdf_key(number, day), f"pdf {number}".encode())
    eml = storage.put(keys.delivery_key(channel, f"{number}.eml", day), b"eml " + number.encode())
    return Archived(doc, pdf, channel, "sent", (eml,), run_id)  # type: ignore[arg-type]


def test_the_index_is_append_only_and_compacts_without_losing_a_row(storage) -> None:
    first = [_archived(storage, f"F-{i}", "run1") for i in range(3)]
    write_index(storage, "b-1", first, "run1")
    retried = [_archived(storage, "F-3", "run2")]
    write_index(storage, "b-1", retried, "run2")  # same batch, next night: a new part
    write_index(storage, "b-2", [_archived(storage, "O-1", "run2", date(2026, 10, 30))], "run2")
    assert len(list(storage.list("index"))) == 3
    before = read_index(storage)
    assert before["invoice_number"].to_list() == ["F-0", "F-1", "F-2", "F-3", "O-1"]
    assert read_artifacts(storage).height == 10  # a PDF and an .eml each

    parts = list(storage.list("index/period=2026-11"))
    leftover = storage.get(parts[0])
    done = compact(storage, "2026-11")
    assert {(c.dataset, c.parts, c.rows) for c in done} == {("index", 2, 4),
                                                             ("artifacts", 2, 8)}
    assert read_index(storage).equals(before)
    [merged] = storage.list("index/period=2026-11")
    assert merged.rsplit("/", 1)[1].startswith("compacted-")
    assert len(list(storage.list("index/period=2026-10"))) == 1  # alone: left as it is

    # a compaction that stopped after writing its file, before removing the parts
    storage.put(parts[0], leftover, retain=False)
    assert read_index(storage).equals(before)

    # a run racing the compaction adds its part; reading still sees every row once
    write_index(storage, "b-3", [_archived(storage, "F-2", "run3")], "run3")
    assert read_index(storage).equals(before)
    compact(storage)
    assert read_index(storage).equals(before)
    assert len(list(storage.list("index/period=2026-11"))) == 1
    assert load_history(storage).invoices.height == 5


def test_polars_reads_the_index_straight_from_the_store(storage, tmp_path: Path) -> None:
    write_index(storage, "b-1", [_archived(storage, f"F-{i}", "run1") for i in range(3)], "run1")
    if isinstance(storage, LocalStorage):
        source, options = f"{storage.root}/index/", None
    else:
        source = f"s3://{storage.bucket}/{storage.prefix}/index/"
        options = {"aws_endpoint_url": storage.endpoint_url, "aws_access_key_id": "testing",
                   "aws_secret_access_key": "testing", "aws_region": "us-east-1",
                   "aws_allow_http": "true"}
    found = pl.scan_parquet(source, hive_partitioning=True, storage_options=options).filter(
        pl.col("period") == "2026-11").select("invoice_number", "sha256").collect()
    assert sorted(found["invoice_number"]) == ["F-0", "F-1", "F-2"]


def test_a_pdf_rendered_again_for_an_unsent_invoice_is_kept_beside_the_first(storage) -> None:
    """The first PDF stays as it was; the new one goes under a variant key and is the one
    the invoice is sent and indexed with."""
    doc = SimpleNamespace(number="FA-1", issue_date=date(2026, 11, 3))
    [first] = archive_pdfs(storage, [(doc, b"%PDF before the template fix")])
    [again] = archive_pdfs(storage, [(doc, b"%PDF before the template fix")])
    [fixed, bad] = archive_pdfs(storage, [(doc, b"%PDF after the fix"),
                                          (SimpleNamespace(number="x" * 300,
                                                           issue_date=date(2026, 11, 3)),
                                           b"%PDF")])
    assert first.key == again.key == "invoices/2026/11/FA-1.pdf" and not again.created
    assert fixed.key == f"invoices/2026/11/FA-1.{sha256_of(b'%PDF after the fix')[:12]}.pdf"
    assert storage.get(first.key) == b"%PDF before the template fix"
    assert isinstance(bad, ValueError)


def test_billed_lines_count_every_line_and_only_indexed_invoices(storage) -> None:
    """Two lines billing 10 and 10 on one PO line count 20; billed lines of an invoice
    whose index part is missing wait until it is indexed again."""
    lines = [SimpleNamespace(line_no=i, po_line_no=1, quantity=Decimal("10")) for i in (1, 2)]
    kept = _archived(storage, "F-1", "run1", po_number="PO-1", lines=lines)
    lost = _archived(storage, "F-2", "run1", po_number="PO-1", lines=lines)
    billed = billed_rows([kept.doc, lost.doc])
    write_index(storage, "b-1", [kept], "run1")
    write_index(storage, "b-2", [lost], "run1")  # delivered, but its index part is lost:
    storage.delete([k for k in storage.list("index") if "b-2" in k])
    history = load_history(storage)
    assert history.billed["quantity"].sum() == Decimal("20")
    assert set(history.billed["invoice_number"]) == {"F-1"}
    assert billed.height == 4
    problems = verify(storage).problems
    assert [(p.kind, p.key) for p in problems] == [("unindexed", lost.pdf.key)]


# --- S3 only: what only an object store has ----------------------------------------------


def test_s3_objects_carry_their_digest_and_invoice_number(s3_client, s3_endpoint) -> None:
    bucket = new_bucket(s3_client)
    storage = S3Storage(bucket, "p", endpoint_url=s3_endpoint)
    storage.put("invoices/2026/11/A-1.pdf", b"%PDF", {"invoice-number": "A-1"})
    head = s3_client.head_object(Bucket=bucket, Key="p/invoices/2026/11/A-1.pdf")
    assert head["Metadata"] == {"sha256": sha256_of(b"%PDF"), "invoice-number": "A-1"}


def test_s3_retention_locks_artifacts_in_compliance_mode(s3_client, s3_endpoint) -> None:
    locked = new_bucket(s3_client, object_lock=True)
    storage = S3Storage(locked, "", endpoint_url=s3_endpoint, retention_years=10)
    assert storage.check(writing=True) is None
    storage.put("invoices/2026/11/A-1.pdf", b"%PDF")
    storage.put("index/period=2026-11/r.parquet", b"part", retain=False)
    retention = s3_client.head_object(Bucket=locked, Key="invoices/2026/11/A-1.pdf")
    assert retention["ObjectLockMode"] == "COMPLIANCE"
    assert retention["ObjectLockRetainUntilDate"].year >= date.today().year + 9
    head = s3_client.head_object(Bucket=locked, Key="index/period=2026-11/r.parquet")
    assert "ObjectLockMode" not in head

    assert storage.retention_problem() is None
    unlocked = S3Storage(new_bucket(s3_client), "", endpoint_url=s3_endpoint, retention_years=10)
    assert unlocked.check(writing=True) is None
    assert "Object Lock is not enabled" in unlocked.retention_problem()


def test_s3_without_conditional_writes_keeps_the_same_promises(s3_client, s3_endpoint) -> None:
    storage = S3Storage(new_bucket(s3_client), "", endpoint_url=s3_endpoint,
                        conditional_writes=False)
    assert storage.put("a/b.pdf", b"one").created
    assert not storage.put("a/b.pdf", b"one").created
    with pytest.raises(ArchiveConflictError):
        storage.put("a/b.pdf", b"two")


def test_an_unreachable_store_says_what_was_tried(s3_client, s3_endpoint) -> None:
    missing = S3Storage("no-such-bucket", "", endpoint_url=s3_endpoint)
    assert "HeadBucket on 'no-such-bucket'" in missing.check(writing=True)
    assert parse_s3_url("S3://Bucket/a/b/") == ("Bucket", "a/b")
    with pytest.raises(ValueError, match="not an S3 URL"):
        parse_s3_url("s3:/bucket/x")
    assert "does not exist" in missing.check(writing=True)
    closed = S3Storage("b", "", endpoint_url="http://127.0.0.1:9")
    problem = closed.check(writing=True)
    assert "http://127.0.0.1:9" in problem and "HeadBucket" in problem
