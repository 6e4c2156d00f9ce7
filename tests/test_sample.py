import hashlib
from pathlib import Path

import polars as pl
from stdnum import ean
from stdnum.eu import vat
from stdnum.fr import siren

from pipeline.ingest import load_extract
from pipeline.sample import DEFECT_CODES, DEFECTS_FILE, generate_extract


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    generate_extract(tmp_path / "a", 200, seed=5, defect_rate=0.05)
    generate_extract(tmp_path / "b", 200, seed=5, defect_rate=0.05)
    generate_extract(tmp_path / "c", 200, seed=6, defect_rate=0.05)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_parties_have_valid_check_digits(clean_bundle) -> None:
    customers = clean_bundle.customers
    assert all(siren.is_valid(s) for s in customers["siren"])
    assert all(vat.is_valid(v) for v in customers["vat_id"])
    assert all(ean.is_valid(g) for g in customers["gln"].drop_nulls())
    assert set(customers["language"]) <= {"fr", "en", "de"}
    assert customers.filter(pl.col("channel") == "email")["email"].null_count() == 0


def test_realistic_shape(tmp_path: Path) -> None:
    generate_extract(tmp_path / "x", 2000, seed=3)
    bundle = load_extract(tmp_path / "x")
    per_invoice = bundle.invoice_lines.group_by("invoice_number").len()
    assert per_invoice["len"].max() >= 100
    assert set(bundle.invoice_lines["vat_rate"].cast(pl.String)) == {"20.00", "10.00", "5.50",
                                                                       "2.10"}
    credit = bundle.invoices.filter(pl.col("invoice_type") == "credit_note")
    assert credit.height > 0
    numbers = bundle.invoices["invoice_number"].implode()
    assert credit["credited_invoice_number"].is_in(numbers).all()
    # invoices really match their PO and delivery notes
    lines = bundle.invoice_lines.join(bundle.invoices, on="invoice_number").filter(
        pl.col("invoice_type") == "invoice")
    matched = lines.join(bundle.po_lines, on=["po_number", "po_line_no"])
    assert matched.height == lines.height
    assert (matched["unit_price"] == matched["unit_price_right"]).all()


def test_defects_cover_every_kind(tmp_path: Path) -> None:
    generate_extract(tmp_path / "d", 500, seed=1, defect_rate=0.05)
    truth = pl.read_parquet(tmp_path / "d" / DEFECTS_FILE)
    assert set(truth["defect"]) == set(DEFECT_CODES)
    assert truth.height >= 25
