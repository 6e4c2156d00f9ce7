"""The rule mechanism: adding a rule is one decorated function (and one test).

A rule receives ``RuleInput`` (the extract as frames, with lines joined to
their header and amounts already computed) and returns the offending rows:
``invoice_number`` and, where they apply, ``line_no``, ``detail``,
``expected``, ``actual`` and ``delivery_note_number``. The registry adds the
reason code, the severity and the invoice's context, so the report, the run
summary and ``docs/validation-rules.md`` all come from this one list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Literal

import polars as pl

from pipeline.ingest import ExtractBundle
from pipeline.settings import EdiSettings, SellerSettings, ValidationSettings

__all__ = ["Rule", "RuleInput", "History", "Severity", "REGISTRY", "rule", "THEMES"]

Severity = Literal["error", "warning"]
THEMES = ("integrity", "numbering", "parties", "matching", "amounts")


@dataclass(frozen=True)
class History:
    """What earlier runs archived: invoice index rows and the PO quantities they billed."""

    invoices: pl.DataFrame
    billed: pl.DataFrame


@dataclass(frozen=True)
class RuleInput:
    """What every rule sees."""

    bundle: ExtractBundle
    lines: pl.DataFrame
    """invoice_lines + header columns + ``net_cents``."""
    totals: pl.DataFrame
    """Per invoice number: ``net_cents``, ``vat_cents``, ``gross_cents`` (EN 16931)."""
    history: History
    """The archive, without the invoices this extract presents again unchanged."""
    seller: SellerSettings
    config: ValidationSettings
    today: date
    edi: EdiSettings = field(default_factory=EdiSettings)
    """Which electronic formats each customer receives (their references must fit them)."""
    rejected: pl.Series | None = None
    """Invoice numbers the other rules reject: set for the rules that depend on them."""
    _shared: dict[Callable[[RuleInput], pl.DataFrame], pl.DataFrame] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def invoices(self) -> pl.DataFrame:
        """Invoice headers."""
        return self.bundle.invoices

    @property
    def customers(self) -> pl.DataFrame:
        """Customers."""
        return self.bundle.customers

    # Frames several rules share are computed once, on first use.

    @cached_property
    def invoice_lines_only(self) -> pl.DataFrame:
        """Lines of documents of type invoice (credit notes have no PO or delivery note)."""
        return self.lines.filter(pl.col("invoice_type") == "invoice")

    def shared(self, compute: Callable[[RuleInput], pl.DataFrame]) -> pl.DataFrame:
        """``compute(self)``, computed once per validation however many rules ask for it."""
        if compute not in self._shared:
            self._shared[compute] = compute(self)
        return self._shared[compute]


@dataclass(frozen=True)
class Rule:
    """One validation rule."""

    code: str
    severity: Severity
    theme: str
    explanation: str
    check: Callable[[RuleInput], pl.DataFrame]
    fixed: bool = False
    """A guard the later stages rely on (file names, formats, totals): its severity cannot be
    lowered, because the invoice it stops could not be rendered, delivered or archived."""
    after_others: bool = False
    """Runs once the other rules have decided, on ``RuleInput.rejected``."""


REGISTRY: dict[str, Rule] = {}

Check = Callable[[RuleInput], pl.DataFrame]


def rule(code: str, severity: Severity, explanation: str, fixed: bool = False,
         after_others: bool = False) -> Callable[[Check], Check]:
    """Register a rule under a stable reason code; its module name is its theme."""
    def register(check: Check) -> Check:
        if code in REGISTRY:
            raise ValueError(f"rule code {code} registered twice")
        theme = check.__module__.rsplit(".", 1)[-1]
        REGISTRY[code] = Rule(code, severity, theme, explanation, check, fixed, after_others)
        return check
    return register
