"""THE money module: Decimal everywhere, EN 16931 rounding in one place.

Line net amounts are rounded to 2 decimals; VAT is computed per rate on the
sum of the line nets of that rate, then rounded (EN 16931 BR-CO-17), so the
totals printed, archived and sent always agree to the cent.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["CENT", "AMOUNT", "UNIT_PRICE", "QUANTITY", "RATE", "round_amount", "line_net",
           "vat_amount", "vat_breakdown", "decimal_series", "scaled", "line_net_cents",
           "vat_cents", "cents_to_text", "from_cents"]

CENT = Decimal("0.01")

# Canonical Polars dtypes of the extract contract (EXTRACT_FORMAT.md).
AMOUNT = pl.Decimal(18, 2)
UNIT_PRICE = pl.Decimal(18, 4)
QUANTITY = pl.Decimal(18, 3)
RATE = pl.Decimal(5, 2)


def from_cents(cents: int) -> Decimal:
    """Integer cents (how the ledger keeps money) as an amount: ``1234`` -> ``12.34``."""
    return Decimal(int(cents)).scaleb(-2)


def round_amount(value: Decimal) -> Decimal:
    """Round half up to the cent, the commercial rounding of EN 16931."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def line_net(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """Net amount of one invoice line (BT-131)."""
    return round_amount(quantity * unit_price)


def vat_amount(base: Decimal, rate_percent: Decimal) -> Decimal:
    """VAT of one rate on its taxable base (BT-117)."""
    return round_amount(base * rate_percent / 100)


def vat_breakdown(
    lines: Iterable[tuple[str, Decimal, Decimal]],
) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """Group line nets by (category, rate): ``(category, rate, base, vat)``, rate descending.

    Args:
        lines: ``(vat_category, vat_rate, line_net)`` for every line.
    """
    bases: dict[tuple[str, Decimal], Decimal] = {}
    for category, rate, net in lines:
        key = (category, rate)
        bases[key] = bases.get(key, Decimal(0)) + net
    return [(cat, rate, base, vat_amount(base, rate))
            for (cat, rate), base in sorted(bases.items(), key=lambda kv: (-kv[0][1], kv[0][0]))]


def decimal_series(name: str, scaled: np.ndarray, scale: int, precision: int = 18) -> pl.Series:
    """A Polars Decimal column from integers already multiplied by ``10**scale``.

    Vectorised and exact: no float ever stands between the integer and the
    decimal, which is why the sample generator builds money this way.
    """
    ints = np.ascontiguousarray(scaled, dtype=np.int64)
    words = np.empty(len(ints) * 2, dtype=np.int64)
    words[0::2] = ints
    words[1::2] = np.where(ints < 0, -1, 0)  # two's-complement sign extension to 128 bits
    array = pa.Array.from_buffers(pa.decimal128(precision, scale), len(ints),
                                  [None, pa.py_buffer(words.tobytes())])
    return pl.Series(name, array)


# --- The same rules, vectorised over Polars columns, in integer arithmetic ---------------
# Polars rounds decimals half to even and truncates products to the larger input scale, so
# the vectorised rules work on exact scaled integers and round half up by hand. A property
# test checks they agree with the Decimal functions above.


def scaled(column: str | pl.Expr) -> pl.Expr:
    """A canonical-dtype Decimal column as its exact scaled integer (Int128)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.to_physical().cast(pl.Int128)


def _round_half_up(value: pl.Expr, divisor: int) -> pl.Expr:
    half = divisor // 2
    return pl.when(value >= 0).then((value + half) // divisor).otherwise(
        ((value.abs() + half) // divisor) * -1)


def line_net_cents(quantity: str | pl.Expr, unit_price: str | pl.Expr) -> pl.Expr:
    """Line net amount in cents from Decimal(18,3) quantity and Decimal(18,4) unit price.

    Int128: any product of two contract decimals fits (at most 10**36), where Int64 would
    overflow on amounts validation must still be able to name and reject.
    """
    return _round_half_up(scaled(quantity) * scaled(unit_price), 100_000)


def vat_cents(base_cents: str | pl.Expr, rate: str | pl.Expr) -> pl.Expr:
    """VAT in cents (Int128) of a base in cents at a Decimal(5,2) percent rate."""
    base = pl.col(base_cents) if isinstance(base_cents, str) else base_cents
    return _round_half_up(base.cast(pl.Int128) * scaled(rate), 10_000)


def cents_to_text(cents: str | pl.Expr) -> pl.Expr:
    """Cents as a plain decimal string ('-12.05'), for reports."""
    value = pl.col(cents) if isinstance(cents, str) else cents
    sign = pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return pl.concat_str(sign, (value.abs() // 100).cast(pl.String), pl.lit("."),
                         (value.abs() % 100).cast(pl.String).str.zfill(2))
