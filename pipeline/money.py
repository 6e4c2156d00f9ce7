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
           "vat_amount", "vat_breakdown", "decimal_series"]

CENT = Decimal("0.01")

# Canonical Polars dtypes of the extract contract (EXTRACT_FORMAT.md).
AMOUNT = pl.Decimal(18, 2)
UNIT_PRICE = pl.Decimal(18, 4)
QUANTITY = pl.Decimal(18, 3)
RATE = pl.Decimal(5, 2)


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
