"""validate(bundle) -> Validation: accepted invoices and the rows that explain rejections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from pipeline.ingest import ExtractBundle
from pipeline.schemas import REJECTIONS
from pipeline.validate import rules as _rules  # noqa: F401  (registers the rules)
from pipeline.validate.registry import REGISTRY, Rule, RuleInput

__all__ = ["Validation", "validate", "REGISTRY", "Rule"]


@dataclass(frozen=True)
class Validation:
    """The outcome: which invoices go on, and every finding with its reason."""

    accepted: pl.DataFrame
    findings: pl.DataFrame
    input_invoices: int

    @property
    def rejected_numbers(self) -> pl.Series:
        """Invoice numbers with at least one error finding."""
        return self.findings.filter(pl.col("severity") == "error")["invoice_number"].unique()

    @property
    def rejected(self) -> int:
        """Invoice header rows rejected (a duplicated number counts every copy)."""
        return self.input_invoices - self.accepted.height

    def counts_by_rule(self) -> dict[str, int]:
        """Distinct invoices per reason code."""
        counts = self.findings.group_by("code").agg(pl.col("invoice_number").n_unique())
        return dict(sorted(zip(counts["code"], counts["invoice_number"], strict=True)))


def validate(bundle: ExtractBundle, severities: Mapping[str, str] | None = None,
             archived_numbers: pl.Series | None = None) -> Validation:
    """Run every registered rule over the extract.

    Args:
        bundle: the ingested extract.
        severities: per reason code, ``error``, ``warning`` or ``off`` (settings.validation.rules).
        archived_numbers: invoice numbers already in the archive (credit-note references).
    """
    severities = severities or {}
    unknown = set(severities) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown rule code(s) in configuration: {sorted(unknown)}; "
                         f"known: {sorted(REGISTRY)}")
    lines = bundle.invoice_lines.join(
        bundle.invoices.select("invoice_number", "invoice_type", "customer_id", "po_number")
        .unique("invoice_number", keep="first"), on="invoice_number", how="left")
    x = RuleInput(bundle, lines, archived_numbers if archived_numbers is not None
                  else pl.Series("invoice_number", [], dtype=pl.String))
    found = []
    for code, rule in REGISTRY.items():
        severity = severities.get(code, rule.severity)
        if severity == "off":
            continue
        rows = rule.check(x)
        if "line_no" not in rows.columns:
            rows = rows.with_columns(line_no=pl.lit(None, dtype=pl.Int64))
        found.append(rows.select("invoice_number", "line_no", "detail",
                                 code=pl.lit(code), severity=pl.lit(severity)))
    customers = bundle.invoices.select("invoice_number", "customer_id").unique(
        "invoice_number", keep="first")
    findings = (pl.concat(found).join(customers, on="invoice_number", how="left")
                .select(list(REJECTIONS)).cast(dict(REJECTIONS))
                .sort("invoice_number", "code", "line_no", nulls_last=False))
    rejected = findings.filter(pl.col("severity") == "error")["invoice_number"].unique()
    accepted = bundle.invoices.filter(~pl.col("invoice_number").is_in(rejected.implode()))
    return Validation(accepted=accepted, findings=findings, input_invoices=bundle.invoices.height)
