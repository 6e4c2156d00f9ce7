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
from pipeline.platform.lifecycle import StatusRow
from pipeline.render.templates import render_template
from pipeline.storage.local import write_atomic
from pipeline.validate import REGISTRY, Validation

__all__ = ["RunSummary", "summarize", "write_exceptions", "write_summary", "line_ranges"]


@dataclass(frozen=True)
class RunSummary:
    """What happened to every invoice of the extract.

    ``delivered`` counts every invoice that has gone out on its channel, by this run
    (``sent`` to a server, ``deposited`` on the accredited platform, which delivers it to
    the buyer, or ``written`` to an outbox) or by an earlier one
    (``already_delivered``). ``in_doubt`` invoices were started by a run that stopped
    before recording the outcome: they may have gone out, so they wait for an operator.
    """

    run_id: str
    extract: str
    input_invoices: int
    delivered: int
    sent: int
    written: int
    already_delivered: int
    rejected: int
    failed: int
    in_doubt: int
    by_channel: dict[str, int]
    transports: dict[str, str]
    rejections_by_rule: dict[str, int]
    warnings_by_rule: dict[str, int]
    failures: dict[str, str]
    in_doubt_invoices: dict[str, str]
    duration_s: float
    invoices_per_s: float
    deposited: int = 0
    stages_s: dict[str, float] = field(default_factory=dict)
    outcomes_by_channel: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per channel, how many went out by this run: ``sent``, ``deposited`` or ``written``."""
    failed_batches: dict[str, str] = field(default_factory=dict)
    """Batches with invoices that did not go out, and why (the first error)."""
    notes: list[str] = field(default_factory=list)
    """Problems beside the deliveries that an operator must see (a delivered file or an
    index part not archived, an outcome not recorded)."""

    def __post_init__(self) -> None:
        if self.input_invoices != self.delivered + self.rejected + self.failed + self.in_doubt:
            raise AssertionError(
                f"run summary does not add up: {self.input_invoices} read != {self.delivered} "
                f"delivered + {self.rejected} rejected + {self.failed} failed + "
                f"{self.in_doubt} in doubt")
        if self.delivered != (self.sent + self.deposited + self.written
                              + self.already_delivered):
            raise AssertionError(f"{self.delivered} delivered != {self.sent} sent + "
                                 f"{self.deposited} deposited + {self.written} written + "
                                 f"{self.already_delivered} earlier")

    @property
    def exit_code(self) -> int:
        """0 when every invoice ended delivered or rejected, 1 when some failed or are in
        doubt, or when something needs an operator (``notes``)."""
        return 1 if self.failed or self.in_doubt or self.notes else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def as_table(self) -> list[dict[str, Any]]:
        """The counts as rows (the run's table artifact in the Prefect UI)."""
        rows: list[dict[str, Any]] = [{"what": "invoices read", "count": self.input_invoices}]
        rows += [{"what": f"{outcome} ({channel})", "count": n}
                 for channel, counts in self.outcomes_by_channel.items()
                 for outcome, n in counts.items()]
        rows += [{"what": "delivered earlier (another run, or an earlier attempt)",
                  "count": self.already_delivered}]
        rows += [{"what": f"rejected {code}", "count": n}
                 for code, n in self.rejections_by_rule.items()]
        rows += [{"what": "failed", "count": self.failed},
                 {"what": "in doubt", "count": self.in_doubt},
                 {"what": "failed batches", "count": len(self.failed_batches)},
                 {"what": "invoices per second", "count": self.invoices_per_s}]
        return rows

    def as_markdown(self) -> str:
        """Short human summary (Prefect artifact, CLI)."""
        lines = [f"**Run {self.run_id}**", "",
                 "| invoices read | sent | deposited on the platform | written to outbox "
                 "| delivered earlier | rejected | failed | in doubt |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|",
                 f"| {self.input_invoices} | {self.sent} | {self.deposited} | {self.written} | "
                 f"{self.already_delivered} | {self.rejected} | {self.failed} | "
                 f"{self.in_doubt} |", "",
                 "Transports: " + ", ".join(f"{c} by {t}" for c, t in self.transports.items()),
                 ""]
        if self.rejections_by_rule:
            lines += ["| rule | invoices |", "|---|---:|"]
            lines += [f"| {code} | {n} |" for code, n in self.rejections_by_rule.items()]
        if self.failed_batches:
            lines += ["", "Failed batches (fix the cause, then Retry the run or run "
                      "`rerun-batch`; what went out is never sent again):", ""]
            lines += [f"- `{b}`: {why}" for b, why in self.failed_batches.items()]
        if self.failures:
            lines += ["", "Failed invoices:", ""]
            lines += [f"- {n}: {why}" for n, why in list(self.failures.items())[:200]]
        if self.notes:
            lines += ["", "Needs an operator:", ""] + [f"- {note}" for note in self.notes]
        if self.in_doubt_invoices:
            lines += ["", "In doubt (re-send with `--resend-in-doubt` once checked):", ""]
            lines += [f"- {n}: {why}" for n, why in self.in_doubt_invoices.items()]
        return "\n".join(lines)


def summarize(run_id: str, validation: Validation, reports: Sequence[BatchReport],
              extract: str, duration_s: float, stages_s: dict[str, float],
              transports: dict[str, str]) -> RunSummary:
    """Add up the batches; raises if any invoice is unaccounted for."""
    failures = {n: e for r in reports for n, e in r.failed.items()}
    in_doubt = {n: e for r in reports for n, e in r.in_doubt.items()}
    outcomes = Counter(o for r in reports for o in r.outcomes.values())
    already = sum(len(r.already_delivered) for r in reports)
    by_channel: Counter[str] = Counter()
    by_outcome: dict[str, Counter[str]] = {}
    for r in reports:
        by_channel += r.by_channel()
        for number, outcome in r.outcomes.items():
            by_outcome.setdefault(r.delivered[number], Counter())[outcome] += 1
    failed_batches = {r.batch_id: next(iter(r.failed.values())) for r in reports if r.failed}
    return RunSummary(
        run_id=run_id, extract=extract, input_invoices=validation.input_invoices,
        delivered=outcomes["sent"] + outcomes["deposited"] + outcomes["written"] + already,
        sent=outcomes["sent"], deposited=outcomes["deposited"],
        written=outcomes["written"], already_delivered=already,
        rejected=validation.rejected, failed=len(failures), in_doubt=len(in_doubt),
        by_channel=dict(sorted(by_channel.items())), transports=dict(sorted(transports.items())),
        rejections_by_rule=validation.counts_by_rule("error"),
        warnings_by_rule=validation.counts_by_rule("warning"),
        failures=failures, in_doubt_invoices=in_doubt, duration_s=round(duration_s, 3),
        invoices_per_s=round(validation.input_invoices / duration_s, 2) if duration_s else 0.0,
        stages_s={k: round(v, 3) for k, v in stages_s.items()},
        outcomes_by_channel={c: dict(sorted(n.items())) for c, n in sorted(by_outcome.items())},
        failed_batches=failed_batches, notes=[note for r in reports for note in r.notes])


def _at_stake(findings: pl.DataFrame, by: str) -> pl.DataFrame:
    """Distinct invoices and the gross amount they carry, per ``by``, largest first."""
    return (findings.unique([by, "invoice_number"])
            .group_by(by).agg(invoices=pl.len(), at_stake=pl.col("amount_at_stake").sum())
            .sort("at_stake", by, descending=[True, False]))


def line_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7': one report row for a finding repeated over many lines."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _shown(row: dict[str, Any], limit: int = 80) -> dict[str, Any]:
    """Long texts cut for the report (a 1 MB name is quoted, not printed); the full values
    stay in ``rejections.parquet``."""
    return {k: v[:limit - 1] + "…" if isinstance(v, str) and len(v) > limit else v
            for k, v in row.items()}


def write_exceptions(directory: Path, run_id: str, bundle: ExtractBundle,
                     validation: Validation, env: jinja2.Environment,
                     summary: RunSummary | None = None,
                     platform: Sequence[StatusRow] = ()) -> None:
    """Write ``rejections.parquet`` and ``exceptions.html`` for the run.

    The HTML groups findings by rule and by customer, largest amount at stake
    first, so a clerk starts with what holds back the most money. Written again
    with the run's ``summary`` once delivery is over, it also lists what failed to go
    out and what is in doubt; ``platform`` lists the invoices the accredited platform
    returned disputed, refused or rejected, with its reasons.
    """
    directory.mkdir(parents=True, exist_ok=True)
    findings = validation.findings
    findings.write_parquet(directory / "rejections.parquet")
    names = bundle.customers.select("customer_id", "legal_name").unique("customer_id")
    severity = dict(findings.select("code", "severity").unique("code").iter_rows())
    rules = [{**row, "severity": severity[row["code"]],
              "explanation": REGISTRY[row["code"]].explanation}
             for row in _at_stake(findings, "code").to_dicts()]
    customers = []
    for row in _at_stake(findings, "customer_id").join(
            names, on="customer_id", how="left").sort("at_stake", descending=True).to_dicts():
        rows = findings.filter(pl.col("customer_id").eq_missing(row["customer_id"])).sort(
            "amount_at_stake", "invoice_number", "code", "line_no",
            descending=[True, False, False, False], nulls_last=False)
        same = [c for c in rows.columns if c != "line_no"]
        collapsed = rows.group_by(same, maintain_order=True).agg(
            lines=pl.col("line_no").drop_nulls())
        customers.append(_shown({**row, "customer_id": row["customer_id"] or "(none)",
                                 "name": row["legal_name"] or "unknown customer",
                                 "findings": [_shown({**f, "lines": line_ranges(f["lines"])})
                                              for f in collapsed.to_dicts()]}))
    html = render_template(
        env, "reports/exceptions.html", run_id=run_id, extract=str(bundle.source),
        input_invoices=validation.input_invoices, rejected=validation.rejected,
        warned=findings.filter(pl.col("severity") == "warning")["invoice_number"].n_unique(),
        rules=rules, customers=customers,
        failed=[_shown({"invoice_number": n, "problem": p}, 400)
                for n, p in (summary.failures.items() if summary else [])],
        in_doubt=[_shown({"invoice_number": n, "problem": p}, 400)
                  for n, p in (summary.in_doubt_invoices.items() if summary else [])],
        platform=list(platform))
    write_atomic(directory / "exceptions.html", html.encode())


def write_summary(directory: Path, summary: RunSummary) -> Path:
    """Write ``summary.json``."""
    path = directory / "summary.json"
    write_atomic(path, json.dumps(summary.as_dict(), indent=2, ensure_ascii=False).encode())
    return path
