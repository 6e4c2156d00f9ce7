"""The run summary (counts that add up) and the files a run leaves for people.

``reports/<run_id>/`` gets ``summary.json``, ``rejections.parquet`` and the
``exceptions.html`` report a clerk can read and forward.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from pipeline.delivery import BatchReport
from pipeline.ingest import ExtractBundle
from pipeline.render.templates import render_template
from pipeline.storage.local import write_atomic
from pipeline.validate import REGISTRY, Validation

__all__ = ["RunSummary", "summarize", "write_exceptions", "write_summary"]


@dataclass(frozen=True)
class RunSummary:
    """What happened to every invoice of the extract."""

    run_id: str
    extract: str
    input_invoices: int
    delivered: int
    already_delivered: int
    rejected: int
    failed: int
    by_channel: dict[str, int]
    rejections_by_rule: dict[str, int]
    warnings_by_rule: dict[str, int]
    failures: dict[str, str]
    duration_s: float
    invoices_per_s: float
    stages_s: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_invoices != self.delivered + self.rejected + self.failed:
            raise AssertionError(
                f"run summary does not add up: {self.input_invoices} read != {self.delivered} "
                f"delivered + {self.rejected} rejected + {self.failed} failed")

    @property
    def exit_code(self) -> int:
        """0 when every invoice ended delivered or rejected, 1 when some failed."""
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def as_markdown(self) -> str:
        """Short human summary (Prefect artifact, CLI)."""
        lines = [f"**Run {self.run_id}**", "",
                 "| invoices read | delivered | of which already delivered | rejected | failed |",
                 "|---:|---:|---:|---:|---:|",
                 f"| {self.input_invoices} | {self.delivered} | {self.already_delivered} "
                 f"| {self.rejected} | {self.failed} |", ""]
        if self.rejections_by_rule:
            lines += ["| rule | invoices |", "|---|---:|"]
            lines += [f"| {code} | {n} |" for code, n in self.rejections_by_rule.items()]
        return "\n".join(lines)


def summarize(run_id: str, validation: Validation, reports: Sequence[BatchReport],
              extract: str, duration_s: float, stages_s: dict[str, float]) -> RunSummary:
    """Add up the batches; raises if any invoice is unaccounted for."""
    delivered = sum(len(r.delivered) + len(r.already_delivered) for r in reports)
    failures = {n: e for r in reports for n, e in r.failed.items()}
    by_channel: Counter[str] = Counter()
    for r in reports:
        by_channel += r.by_channel()
    warnings = validation.findings.filter(pl.col("severity") == "warning")
    errors = validation.findings.filter(pl.col("severity") == "error")

    def per_rule(frame: pl.DataFrame) -> dict[str, int]:
        counts = frame.group_by("code").agg(pl.col("invoice_number").n_unique()).sort("code")
        return dict(zip(counts["code"], counts["invoice_number"], strict=True))

    return RunSummary(
        run_id=run_id, extract=extract, input_invoices=validation.input_invoices,
        delivered=delivered, already_delivered=sum(len(r.already_delivered) for r in reports),
        rejected=validation.rejected, failed=len(failures), by_channel=dict(sorted(by_channel.items())),
        rejections_by_rule=per_rule(errors), warnings_by_rule=per_rule(warnings),
        failures=failures, duration_s=round(duration_s, 3),
        invoices_per_s=round(validation.input_invoices / duration_s, 2) if duration_s else 0.0,
        stages_s={k: round(v, 3) for k, v in stages_s.items()})


def write_exceptions(directory: Path, run_id: str, bundle: ExtractBundle,
                     validation: Validation, env: jinja2.Environment) -> None:
    """Write ``rejections.parquet`` and ``exceptions.html`` for the run."""
    directory.mkdir(parents=True, exist_ok=True)
    validation.findings.write_parquet(directory / "rejections.parquet")
    findings = validation.findings.join(
        bundle.customers.select("customer_id", "legal_name").unique("customer_id"),
        on="customer_id", how="left")
    counts = validation.counts_by_rule()
    rules = [{"code": code, "severity": findings.filter(pl.col("code") == code)["severity"][0],
              "count": n, "explanation": REGISTRY[code].explanation}
             for code, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    customers = []
    for (customer_id,), rows in findings.sort("customer_id", "invoice_number", "code", "line_no").group_by(
            "customer_id", maintain_order=True):
        customers.append({"customer_id": customer_id or "(none)",
                          "name": rows["legal_name"][0] or "unknown customer",
                          "invoices": rows["invoice_number"].n_unique(),
                          "findings": rows.to_dicts()})
    html = render_template(
        env, "reports/exceptions.html", run_id=run_id, extract=str(bundle.source),
        input_invoices=validation.input_invoices, rejected=validation.rejected,
        warned=findings.filter(pl.col("severity") == "warning")["invoice_number"].n_unique(),
        rules=rules, customers=customers)
    write_atomic(directory / "exceptions.html", html.encode())


def write_summary(directory: Path, summary: RunSummary) -> Path:
    """Write ``summary.json``."""
    path = directory / "summary.json"
    write_atomic(path, json.dumps(summary.as_dict(), indent=2, ensure_ascii=False).encode())
    return path
