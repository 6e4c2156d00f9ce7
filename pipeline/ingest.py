"""Read an extract directory into typed, schema-checked Polars frames.

Everything is checked before anything is returned, so a bad extract stops the
run before a single file is written, with an error naming file, column and
the first offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.errors import ExtractSchemaError
from pipeline.schemas import IDENTIFYING, TABLES, Column

__all__ = ["ExtractBundle", "load_extract"]


@dataclass(frozen=True)
class ExtractBundle:
    """The seven tables of one extract, in canonical dtypes."""

    source: Path
    customers: pl.DataFrame
    invoices: pl.DataFrame
    invoice_lines: pl.DataFrame
    purchase_orders: pl.DataFrame
    po_lines: pl.DataFrame
    delivery_notes: pl.DataFrame
    delivery_note_lines: pl.DataFrame


def _table_source(directory: Path, table: str) -> tuple[str, Path]:
    """What to scan for a table: ``<table>.parquet`` or the parts in ``<table>/``, never both."""
    single = directory / f"{table}.parquet"
    parts = directory / table
    if single.exists() and parts.is_dir():
        # Reading either one would silently drop the other's rows.
        raise ExtractSchemaError(str(single), f"table '{table}' is there twice, as this file "
                                 f"and as the folder {parts}/; keep one and remove the other")
    if single.is_file():
        return str(single), single
    if parts.is_dir() and any(parts.glob("*.parquet")):
        return str(parts / "*.parquet"), parts
    raise ExtractSchemaError(str(single), f"missing table '{table}' (expected {single.name} "
                             f"or a directory {table}/ of .parquet files)")


def _kind_matches(column: Column, dtype: pl.DataType) -> bool:
    if column.kind == "string":
        return dtype == pl.String
    if column.kind == "int":
        return dtype.is_integer()
    if column.kind == "date":
        return dtype == pl.Date
    return isinstance(dtype, pl.Decimal)


def _decimal_loses_value(column: Column, dtype: pl.DataType) -> bool:
    target = column.dtype
    return (isinstance(target, pl.Decimal) and isinstance(dtype, pl.Decimal)
            and (dtype.scale or 0) > (target.scale or 0))


def _format_rows(frame: pl.DataFrame, table: str, column: str) -> str:
    """The row number, the table's two identifying columns and the offending column."""
    shown = list(dict.fromkeys(["row", *(c.name for c in TABLES[table][:2]), column]))
    frame = frame.select([c for c in shown if c in frame.columns])
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_formatting="ASCII_MARKDOWN",
                   tbl_hide_column_data_types=True, fmt_str_lengths=40):
        return "\n".join("    " + line for line in str(frame).splitlines())


def _load_table(directory: Path, table: str, error_rows: int) -> pl.DataFrame:
    pattern, shown = _table_source(directory, table)
    name = str(shown)
    try:
        lazy = pl.scan_parquet(pattern)
        schema = lazy.collect_schema()
    except Exception as exc:  # polars raises several types for a non-Parquet file
        raise ExtractSchemaError(name, f"not a readable Parquet file ({exc})") from exc

    casts: list[pl.Expr] = []
    for column in TABLES[table]:
        if column.name not in schema:
            if column.required:
                raise ExtractSchemaError(name, "required column is missing", column.name)
            casts.append(pl.lit(None, dtype=column.dtype).alias(column.name))
            continue
        dtype = schema[column.name]
        if dtype == pl.Null:  # an all-null optional column written without a type
            casts.append(pl.col(column.name).cast(column.dtype))
            continue
        if not _kind_matches(column, dtype):
            raise ExtractSchemaError(
                name, f"has type {dtype}, expected {column.kind} ({column.dtype})", column.name)
        casts.append(pl.col(column.name).cast(column.dtype, strict=True))

    required = list(IDENTIFYING.get(table, ()))
    indexed = lazy.with_row_index("row")
    try:
        nulls = (lazy.select(pl.col(required).null_count()).collect().row(0, named=True)
                 if required else {})
        for column_name, count in nulls.items():
            if count:
                rows = indexed.filter(pl.col(column_name).is_null()).head(error_rows).collect()
                raise ExtractSchemaError(name, f"{count} null value(s) in a column that says "
                                         "which invoice a row belongs to",
                                         column_name, _format_rows(rows, table, column_name))
        for column in TABLES[table]:
            if column.name in schema and _decimal_loses_value(column, schema[column.name]):
                lossy = indexed.filter(
                    pl.col(column.name) != pl.col(column.name).cast(column.dtype)
                ).head(error_rows).collect()
                if lossy.height:
                    raise ExtractSchemaError(
                        name, f"values have more decimals than {column.dtype} holds",
                        column.name, _format_rows(lossy, table, column.name))
        return lazy.select(casts).collect()
    except ExtractSchemaError:
        raise
    except pl.exceptions.PolarsError as exc:
        raise ExtractSchemaError(name, f"cannot be read or cast to the contract types ({exc})"
                                 ) from exc


def load_extract(directory: Path | str, error_rows: int = 5) -> ExtractBundle:
    """Read and check all seven tables of an extract.

    Args:
        directory: the extract directory (``<table>.parquet`` or ``<table>/*.parquet``).
        error_rows: how many offending rows an error quotes.

    Raises:
        ExtractSchemaError: the first problem found; exit status 2 in the CLI.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ExtractSchemaError(str(directory), "is not a directory")
    frames = {table: _load_table(directory, table, error_rows) for table in TABLES}
    return ExtractBundle(source=directory, **frames)
