import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import ExitCode, ExtractSchemaError
from pipeline.ingest import load_extract
from pipeline.schemas import TABLES, polars_schema
from tests.conftest import INVOICES_CLI


@pytest.fixture()
def extract(clean_extract: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "extract"
    shutil.copytree(clean_extract, copy)
    return copy


def _rewrite(extract: Path, table: str, change) -> None:
    path = extract / f"{table}.parquet"
    frame = pl.read_parquet(path)
    change(frame).write_parquet(path)


def test_clean_extract_has_contract_dtypes(clean_bundle) -> None:
    for table in TABLES:
        assert getattr(clean_bundle, table).schema == polars_schema(table)


def test_missing_table(extract: Path) -> None:
    (extract / "po_lines.parquet").unlink()
    with pytest.raises(ExtractSchemaError, match="po_lines.parquet: missing table 'po_lines'"):
        load_extract(extract)


def test_missing_required_column(extract: Path) -> None:
    _rewrite(extract, "customers", lambda f: f.drop("postcode"))
    with pytest.raises(ExtractSchemaError) as err:
        load_extract(extract)
    assert "customers.parquet" in str(err.value) and "'postcode'" in str(err.value)
    assert "required column is missing" in str(err.value)


def test_missing_optional_column_is_null(extract: Path) -> None:
    _rewrite(extract, "customers", lambda f: f.drop("brand", "address_line2"))
    bundle = load_extract(extract)
    assert bundle.customers["brand"].null_count() == bundle.customers.height


def test_wrong_dtype(extract: Path) -> None:
    _rewrite(extract, "invoice_lines",
             lambda f: f.with_columns(pl.col("quantity").cast(pl.Float64)))
    with pytest.raises(ExtractSchemaError) as err:
        load_extract(extract)
    assert "invoice_lines.parquet" in str(err.value) and "'quantity'" in str(err.value)
    assert "Float64" in str(err.value) and "expected quantity" in str(err.value)


def test_any_integer_width_and_decimal_precision(extract: Path) -> None:
    _rewrite(extract, "invoice_lines", lambda f: f.with_columns(
        pl.col("line_no").cast(pl.Int16), pl.col("unit_price").cast(pl.Decimal(30, 6))))
    bundle = load_extract(extract)
    assert bundle.invoice_lines.schema["line_no"] == pl.Int64
    assert bundle.invoice_lines.schema["unit_price"] == pl.Decimal(18, 4)


def test_too_many_decimals_names_the_rows(extract: Path) -> None:
    def change(f: pl.DataFrame) -> pl.DataFrame:
        prices = f["unit_price"].cast(pl.Decimal(18, 6)).to_list()
        prices[3] = Decimal("1.123456")
        return f.with_columns(unit_price=pl.Series(prices, dtype=pl.Decimal(18, 6)))
    _rewrite(extract, "invoice_lines", change)
    with pytest.raises(ExtractSchemaError) as err:
        load_extract(extract)
    assert "'unit_price'" in str(err.value) and "1.123456" in str(err.value)


def test_not_parquet(extract: Path) -> None:
    (extract / "customers.parquet").write_text("customer_id,legal_name\nC1,Foo\n")
    with pytest.raises(ExtractSchemaError, match="customers.parquet: not a readable Parquet file"):
        load_extract(extract)


def test_nulls_in_an_identifying_column_quote_first_rows(extract: Path) -> None:
    _rewrite(extract, "invoice_lines", lambda f: f.with_columns(
        invoice_number=pl.when(pl.int_range(pl.len()).is_in([4, 9])).then(None)
        .otherwise(pl.col("invoice_number"))))
    with pytest.raises(ExtractSchemaError) as err:
        load_extract(extract)
    message = str(err.value)
    assert "invoice_lines.parquet" in message and "'invoice_number'" in message
    assert "2 null value(s)" in message
    assert "| 4 " in message and "| 9 " in message  # 0-based row numbers


def test_nulls_in_other_required_columns_are_left_to_validation(extract: Path) -> None:
    """A null due date rejects that invoice (REQUIRED_VALUE_MISSING), not the extract."""
    _rewrite(extract, "invoices", lambda f: f.with_columns(
        due_date=pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("due_date"))))
    assert load_extract(extract).invoices["due_date"].null_count() == 1


def test_table_as_directory_of_parts(extract: Path) -> None:
    frame = pl.read_parquet(extract / "invoice_lines.parquet")
    (extract / "invoice_lines.parquet").unlink()
    (extract / "invoice_lines").mkdir()
    frame[:100].write_parquet(extract / "invoice_lines" / "part-0.parquet")
    frame[100:].write_parquet(extract / "invoice_lines" / "part-1.parquet")
    assert load_extract(extract).invoice_lines.height == frame.height


def test_cli_exit_status_2_on_unusable_extract(extract: Path) -> None:
    (extract / "delivery_notes.parquet").unlink()
    result = subprocess.run([str(INVOICES_CLI), "validate", str(extract)], capture_output=True,
                            text=True)
    assert result.returncode == ExitCode.BAD_EXTRACT
    assert "delivery_notes.parquet" in result.stderr


def test_table_as_file_and_directory_is_refused(extract: Path) -> None:
    """Issue 9.8: with both present, the folder's rows were silently ignored."""
    frame = pl.read_parquet(extract / "invoice_lines.parquet")
    (extract / "invoice_lines").mkdir()
    frame[:10].write_parquet(extract / "invoice_lines" / "part-0.parquet")
    with pytest.raises(ExtractSchemaError) as err:
        load_extract(extract)
    message = str(err.value)
    assert str(extract / "invoice_lines.parquet") in message
    assert f"{extract / 'invoice_lines'}/" in message and "keep one" in message
