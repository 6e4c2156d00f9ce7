"""validate(bundle) -> Validation: accepted invoices, and every finding with its reason.

Rules live in four themed modules (numbering, parties, matching, amounts)
and register themselves; this module prepares what they share (lines joined
to headers, EN 16931 totals, the archive's history) and runs them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import date

import polars as pl

from pipeline import money
from pipeline.ingest import ExtractBundle
from pipeline.schemas import BILLED_LINES, INDEX, REJECTIONS
from pipeline.settings import EdiSettings, SellerSettings, ValidationSettings
from pipeline.validate import (  # noqa: F401  (register)
    amounts,
    integrity,
    matching,
    numbering,
    parties,
)
from pipeline.validate.registry import REGISTRY, History, Rule, RuleInput

__all__ = ["Validation", "validate", "compute_totals", "REGISTRY", "Rule", "History",
           "empty_history", "check_rule_settings"]


@dataclass(frozen=True)
class Validation:
    """The outcome: which invoices go on, and every finding with its reason."""

    accepted: pl.DataFrame
    findings: pl.DataFrame
    input_invoices: int
    rule_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        """Invoice header rows rejected (a duplicated number counts every copy)."""
        return self.input_invoices - self.accepted.height

    def counts_by_rule(self, severity: str | None = None) -> dict[str, int]:
        """Distinct invoices per reason code (optionally of one severity)."""
        findings = self.findings if severity is None else self.findings.filter(
            pl.col("severity") == severity)
        counts = findings.group_by("code").agg(pl.col("invoice_number").n_unique()).sort("code")
        return dict(zip(counts["code"], counts["invoice_number"], strict=True))


def check_rule_settings(config: ValidationSettings) -> None:
    """Refuse rule settings that cannot be honoured: unknown codes, or a fixed rule lowered.

    Raises:
        ValueError: naming the codes and what to do.
    """
    unknown = set(config.rules) - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown rule code(s) in [validation.rules]: {sorted(unknown)}; "
                         f"known: {sorted(REGISTRY)}")
    lowered = sorted(code for code, severity in config.rules.items()
                     if REGISTRY[code].fixed and severity != "error")
    if lowered:
        raise ValueError(f"[validation.rules] lowers {lowered}: these rules guard what "
                         "rendering, delivery and archiving rely on and always reject; remove "
                         "them from the configuration (their limits are in "
                         "[validation.limits])")


def empty_history() -> History:
    """No earlier run."""
    return History(pl.DataFrame(schema=INDEX), pl.DataFrame(schema=BILLED_LINES))


def compute_totals(lines: pl.DataFrame) -> pl.DataFrame:
    """Per invoice: net, VAT and gross in cents, by EN 16931 rules (``money``)."""
    per_rate = lines.group_by("invoice_number", "vat_category", "vat_rate").agg(
        base=pl.col("net_cents").sum()).with_columns(vat=money.vat_cents("base", "vat_rate"))
    return per_rate.group_by("invoice_number").agg(
        net_cents=pl.col("base").sum(), vat_cents=pl.col("vat").sum()).with_columns(
        gross_cents=pl.col("net_cents") + pl.col("vat_cents"))


def _without_represented(history: History, invoices: pl.DataFrame,
                         totals: pl.DataFrame) -> History:
    """Drop archived invoices this extract presents again unchanged (a re-run, not a duplicate)."""
    current = invoices.join(totals, on="invoice_number", how="left").select(
        "invoice_number", "customer_id", "issue_date", gross=pl.col("gross_cents").fill_null(0))
    archived = history.invoices.select(
        "invoice_number", "customer_id", "issue_date",
        gross=money.scaled("total_gross"))
    same = archived.join(current, on=["invoice_number", "customer_id", "issue_date", "gross"],
                         how="semi")["invoice_number"].implode()
    return History(history.invoices.filter(~pl.col("invoice_number").is_in(same)),
                   history.billed.filter(~pl.col("invoice_number").is_in(same)))


def _run_rules(x: RuleInput, rules: list[Rule], found: list[pl.DataFrame],
               seconds: dict[str, float]) -> None:
    """Run ``rules``, appending their findings (with code and severity) and timings."""
    for rule in rules:
        severity = x.config.rules.get(rule.code, rule.severity)
        if severity == "off":
            continue
        start = time.perf_counter()
        rows = rule.check(x)
        seconds[rule.code] = time.perf_counter() - start
        found.append(rows.select(
            "invoice_number",
            *(pl.col(c) if c in rows.columns else pl.lit(None, dtype=REJECTIONS[c]).alias(c)
              for c in ("line_no", "detail", "expected", "actual", "delivery_note_number")),
            code=pl.lit(rule.code), severity=pl.lit(severity)))


def validate(bundle: ExtractBundle, seller: SellerSettings,
             config: ValidationSettings | None = None, history: History | None = None,
             today: date | None = None, edi: EdiSettings | None = None) -> Validation:
    """Run every registered rule over the extract.

    Args:
        bundle: the ingested extract.
        seller: the issuing company (its identifiers and country are checked too).
        config: rule severities, price tolerances, allowed VAT rates.
        history: what the archive already holds (numbers, credits, billed quantities).
        today: the run's day (issue dates after it are rejected).
        edi: the formats each customer receives (default: the embedded defaults).
    """
    config = config or ValidationSettings()
    check_rule_settings(config)
    headers = bundle.invoices.unique("invoice_number", keep="first")
    # A line amount beyond the limit is rejected by AMOUNT_OUT_OF_RANGE; it counts as 0 in
    # the totals so that no sum or VAT product can overflow.
    max_cents = int(config.limits.max_amount * 100)
    lines = bundle.invoice_lines.join(
        headers.select("invoice_number", "invoice_type", "customer_id", "po_number",
                       "issue_date", "currency"),
        on="invoice_number", how="left").with_columns(
        raw_net_cents=money.line_net_cents("quantity", "unit_price")).with_columns(
        net_cents=pl.when(pl.col("raw_net_cents").abs() <= max_cents)
        .then(pl.col("raw_net_cents")).otherwise(0))
    totals = compute_totals(lines)
    x = RuleInput(bundle=bundle, lines=lines, totals=totals,
                  history=_without_represented(history or empty_history(), headers, totals),
                  seller=seller, config=config, today=today or date.today(),
                  edi=edi or EdiSettings())

    found: list[pl.DataFrame] = []
    seconds: dict[str, float] = {}
    _run_rules(x, [r for r in REGISTRY.values() if not r.after_others], found, seconds)
    rejected = pl.concat(found).filter(pl.col("severity") == "error")["invoice_number"].unique()
    _run_rules(replace(x, rejected=rejected, _shared={}),
               [r for r in REGISTRY.values() if r.after_others], found, seconds)

    gross = pl.col("gross_cents").fill_null(0)
    context = headers.join(totals, on="invoice_number", how="left").select(
        "invoice_number", "customer_id", "po_number",
        amount_at_stake=pl.when(gross.abs() <= max_cents).then(money.cents_to_text(gross))
        .cast(money.AMOUNT))
    findings = (pl.concat(found).join(context, on="invoice_number", how="left")
                .select(list(REJECTIONS)).cast(REJECTIONS)
                .sort("invoice_number", "code", "line_no", nulls_last=False))
    rejected = findings.filter(pl.col("severity") == "error")["invoice_number"].unique()
    accepted = bundle.invoices.filter(~pl.col("invoice_number").is_in(rejected.implode()))
    return Validation(accepted=accepted, findings=findings, input_invoices=bundle.invoices.height,
                      rule_seconds=seconds)
