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
    french = customers.filter(pl.col("country") == "FR")
    assert all(siren.is_valid(s) for s in french["siren"])
    assert all(vat.is_valid(v) for v in customers["vat_id"].drop_nulls())
    assert french["vat_id"].null_count() == 0
    assert all(ean.is_valid(g) for g in customers["gln"].drop_nulls())
    assert set(customers["language"]) <= {"fr", "en", "de"}
    assert customers.filter(pl.col("channel") == "email")["email"].null_count() == 0


def test_realistic_shape(tmp_path: Path) -> None:
    generate_extract(tmp_path / "x", 2000, seed=3)
    bundle = load_extract(tmp_path / "x")
    per_invoice = bundle.invoice_lines.group_by("invoice_number").len()
    assert per_invoice["len"].max() >= 100
    assert set(bundle.invoice_lines["vat_rate"].cast(pl.String)) == {"20.00", "10.00", "5.50",
                                                                       "2.10", "0.00"}
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


def test_the_2026_variety(tmp_path: Path) -> None:
    """Goods, services and mixed invoices; exempt (E) and reverse-charge (AE) lines with
    their reason; intra-EU (K) and export (G) buyers; delivery sites on invoices and on
    delivery notes; credit notes keep the lines' nature and taxation."""
    generate_extract(tmp_path / "v", 1000, seed=4)
    bundle = load_extract(tmp_path / "v")
    lines = bundle.invoice_lines.join(bundle.invoices, on="invoice_number").join(
        bundle.customers, on="customer_id")
    natures = lines.group_by("invoice_number").agg(pl.col("item_nature").unique().sort())
    kinds = {tuple(n) for n in natures["item_nature"]}
    assert kinds == {("goods",), ("services",), ("goods", "services")}
    untaxed = lines.filter(pl.col("vat_category") != "S")
    assert untaxed["vat_exemption_reason"].null_count() == 0
    assert (untaxed["vat_rate"] == 0).all()
    by_zone = dict(untaxed.group_by("vat_category").agg(pl.col("country").unique().sort())
                   .iter_rows())
    assert by_zone["E"] == ["FR"] and set(by_zone["K"]) <= {"BE", "DE"}
    assert "FR" in by_zone["AE"] and not {"CH", "US"} & set(by_zone["AE"])
    assert by_zone["G"] and set(by_zone["G"]) <= {"CH", "US"}
    assert lines.filter(pl.col("vat_category") == "K")["item_nature"].unique().to_list() == [
        "goods"]
    assert bundle.invoices["ship_to_city"].drop_nulls().len() > 0
    assert bundle.delivery_notes["ship_to_city"].drop_nulls().len() > 0
    credits = lines.filter(pl.col("invoice_type") == "credit_note")
    assert set(credits["vat_category"]) > {"S"} and credits["item_nature"].null_count() == 0
