"""The UCI Online Retail dataset, mapped into our format, through validation.

The counts asserted here are the dataset's published anomalies
(../shared/datasets/SOURCES.md), each explained by one rule code.
"""

import importlib.util

import polars as pl
import pytest

from pipeline.ingest import load_extract
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.validate import validate

SCRIPT = PROJECT_ROOT / "sample_data" / "map_online_retail.py"
spec = importlib.util.spec_from_file_location("map_online_retail", SCRIPT)
mapping = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mapping)

pytestmark = pytest.mark.skipif(not mapping.DATASET.exists(),
                                reason=f"dataset not found at {mapping.DATASET}")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("online_retail") / "extract"
    counts = mapping.map_dataset(mapping.DATASET, out)
    assert counts["invoice_lines"] == 541_909 and counts["invoices"] == 25_900
    settings = Settings()
    return validate(load_extract(out), settings.seller, settings.validation)


def _lines(result, code: str) -> int:
    return result.findings.filter(pl.col("code") == code).height


def test_every_invoice_is_accounted_for(result) -> None:
    assert result.input_invoices == 25_900
    assert result.accepted.height + result.rejected == 25_900


def test_cancellations_are_credit_notes_without_a_known_invoice(result) -> None:
    assert result.counts_by_rule()["CREDITED_INVOICE_UNKNOWN"] == 3_836


def test_missing_customer_ids(result) -> None:
    assert result.counts_by_rule()["CUSTOMER_UNKNOWN"] == 3_710


def test_zero_and_negative_prices(result) -> None:
    assert _lines(result, "UNIT_PRICE_ZERO") == 2_515
    assert _lines(result, "UNIT_PRICE_NEGATIVE") == 2


def test_stock_write_offs_and_missing_descriptions(result) -> None:
    assert _lines(result, "NEGATIVE_QTY_ON_INVOICE") == 1_336
    assert _lines(result, "DESCRIPTION_MISSING") == 1_454


def test_derived_orders_and_deliveries_add_no_anomaly(result) -> None:
    derived = {"PO_UNKNOWN", "PO_LINE_UNKNOWN", "PRICE_MISMATCH", "DELIVERY_NOTE_UNKNOWN",
               "QTY_OVER_DELIVERED", "QTY_OVER_ORDERED", "DELIVERED_AFTER_INVOICE"}
    assert derived.isdisjoint(result.counts_by_rule())
