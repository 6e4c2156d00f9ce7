"""The rule mechanism: adding a rule is one decorated function (and one test).

A rule receives the extract as frames and returns the offending rows as a
frame with ``invoice_number``, optional ``line_no`` and a ``detail`` text.
The registry adds the reason code and severity, so the report, the run
summary and the docs all come from this one list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import polars as pl

from pipeline.ingest import ExtractBundle

__all__ = ["Rule", "RuleInput", "Severity", "REGISTRY", "rule"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class RuleInput:
    """What every rule sees: the extract, with lines already joined to their header."""

    bundle: ExtractBundle
    lines: pl.DataFrame
    archived_numbers: pl.Series

    @property
    def invoices(self) -> pl.DataFrame:
        """Invoice headers."""
        return self.bundle.invoices

    @property
    def customers(self) -> pl.DataFrame:
        """Customers."""
        return self.bundle.customers


@dataclass(frozen=True)
class Rule:
    """One validation rule."""

    code: str
    severity: Severity
    explanation: str
    check: Callable[[RuleInput], pl.DataFrame]


REGISTRY: dict[str, Rule] = {}


def rule(code: str, severity: Severity, explanation: str
         ) -> Callable[[Callable[[RuleInput], pl.DataFrame]], Callable[[RuleInput], pl.DataFrame]]:
    """Register a rule under a stable reason code."""
    def register(check: Callable[[RuleInput], pl.DataFrame]
                 ) -> Callable[[RuleInput], pl.DataFrame]:
        if code in REGISTRY:
            raise ValueError(f"rule code {code} registered twice")
        REGISTRY[code] = Rule(code, severity, explanation, check)
        return check
    return register
