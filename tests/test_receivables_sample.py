"""Sample camt.053 statements: read back by our reader, and true to their truth file."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from stdnum import iban, iso11649

from pipeline.receivables.camt import BankPayment, read_statement
from pipeline.receivables.sample import KINDS, TRUTH_FILE, generate_statements, rf_reference
from pipeline.sample import generate_extract


@pytest.fixture(scope="module")
def extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("extract")
    generate_extract(path, 300, seed=7)
    return path


@pytest.fixture(scope="module")
def generated(extract: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("statements")
    report = generate_statements(extract, out, seed=7)
    payments: dict[str, BankPayment] = {}
    for name in report.files:
        for statement in read_statement((out / name).read_bytes(), name):
            assert statement.iban == "FR7630004000050000123456789"
            payments.update((p.key, p) for p in statement.payments)
    return report, out, payments, pl.read_parquet(out / TRUTH_FILE)


def test_every_file_reads_back_and_keys_match_truth(generated) -> None:
    report, out, payments, truth = generated
    assert sorted(p.name for p in out.glob("camt053-*.xml")) == sorted(report.files)
    assert len(payments) == report.payments
    assert set(truth["payment_key"]) == set(payments)


def test_amounts_read_equal_truth_per_payment(generated) -> None:
    _, _, payments, truth = generated
    assert truth.schema["allocated"] == pl.Decimal(18, 2)
    allocated: dict[str, Decimal] = defaultdict(Decimal)
    for key, amount in truth.select("payment_key", "allocated").iter_rows():
        assert isinstance(amount, Decimal) and amount.as_tuple().exponent == -2
        allocated[key] += amount
    for key, payment in payments.items():
        assert payment.amount.as_tuple().exponent == -2
        assert allocated[key] == payment.amount, key


def test_every_kind_appears(generated) -> None:
    report, _, payments, truth = generated
    assert set(truth["kind"]) == set(KINDS)
    assert set(report.by_kind) == set(KINDS)
    assert sum(report.by_kind.values()) == report.payments
    assert report.open_invoices > 0


def test_kinds_look_like_what_they_say(generated, extract: Path) -> None:
    _, _, payments, truth = generated
    kind = dict(truth.select("payment_key", "kind").unique().iter_rows())
    invoices = pl.read_parquet(extract / "invoices.parquet")
    credit_notes = set(invoices.filter(pl.col("invoice_type") == "credit_note")["invoice_number"])
    paid = truth.filter(pl.col("invoice_number").is_not_null(), pl.col("allocated") > 0)
    assert not set(paid["invoice_number"]) & credit_notes  # credit notes are never paid
    returns = [p for p in payments.values() if p.kind == "return"]
    assert returns and all(kind[p.key] == "returned" and p.amount < 0 for p in returns)
    collected = {p.end_to_end_id for p in payments.values() if p.kind == "credit"}
    assert all(p.end_to_end_id in collected for p in returns)
    unknown = truth.filter(pl.col("kind") == "unknown_payer")
    assert unknown["invoice_number"].null_count() == unknown.height
    references = [p.creditor_reference for p in payments.values() if p.creditor_reference]
    assert references and all(iso11649.is_valid(r) for r in references)
    batched = [p for p in payments.values() if p.transaction > 1]
    assert batched


def test_customers_pay_from_stable_valid_ibans(generated) -> None:
    _, _, payments, truth = generated
    accounts: dict[str, set[str]] = defaultdict(set)
    for key, customer, account in truth.select("payment_key", "customer_id",
                                               "payer_iban").unique().iter_rows():
        assert account is None or iban.is_valid(account)
        if customer and account:
            accounts[customer].add(account)
            assert payments[key].debtor_iban == account
    assert all(len(a) <= 2 for a in accounts.values())
    assert sum(len(a) == 1 for a in accounts.values()) > len(accounts) // 2


def test_rf_reference() -> None:
    assert rf_reference("FA2026-000123") == "RF31FA2026000123"
    assert iso11649.is_valid(rf_reference("FA2026-000123"))


def test_same_seed_same_bytes(extract: Path, generated, tmp_path: Path) -> None:
    report, out, _, _ = generated
    again = generate_statements(extract, tmp_path, seed=7)
    assert again.files == report.files
    for name in [*report.files, TRUTH_FILE]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    other = generate_statements(extract, tmp_path / "other", seed=8)
    assert other.by_kind != report.by_kind or other.files != report.files
