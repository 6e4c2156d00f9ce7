"""Deterministic batches: the same accepted invoices always make the same batches."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline import keys

__all__ = ["Batch", "plan_batches"]


@dataclass(frozen=True)
class Batch:
    """A unit of rendering and delivery work."""

    batch_id: str
    numbers: tuple[str, ...]


def plan_batches(accepted: pl.DataFrame, size: int) -> list[Batch]:
    """Split accepted invoices, in invoice-number order, into batches of ``size``.

    Args:
        accepted: accepted invoice headers (``invoice_number`` unique).
        size: invoices per batch.
    """
    numbers = accepted["invoice_number"].sort().to_list()
    chunks = [tuple(numbers[i:i + size]) for i in range(0, len(numbers), size)]
    return [Batch(keys.batch_id(chunk), chunk) for chunk in chunks]
