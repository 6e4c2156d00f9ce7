"""The ``invoices`` command line.

``run`` sets Prefect's home under the run's home directory before Prefect is
imported (Prefect reads it once at import), so a run needs no server and
leaves everything under ``--home``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.errors import ExitCode, ExtractSchemaError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn ERP extracts into delivered, archived invoices.")
console = Console(stderr=True)


class RichProgress:
    """A progress bar per stage."""

    def __init__(self, bar: Progress) -> None:
        self.bar, self.tasks = bar, {}  # type: ignore[var-annotated]

    def start(self, stage: str, total: int) -> None:
        """Add a bar for ``stage``."""
        self.tasks[stage] = self.bar.add_task(stage, total=total)

    def advance(self, stage: str, amount: int = 1) -> None:
        """Move the bar of ``stage``."""
        if stage in self.tasks:
            self.bar.advance(self.tasks[stage], amount)


def _prepare_prefect(home: Path) -> None:
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"Run {summary['run_id']}")
    for column in ("read", "delivered", "already delivered", "rejected", "failed", "inv/s"):
        table.add_column(column, justify="right")
    table.add_row(*(str(summary[k]) for k in ("input_invoices", "delivered", "already_delivered",
                                               "rejected", "failed", "invoices_per_s")))
    console.print(table)
    if summary["by_channel"]:
        console.print("by channel: " + ", ".join(f"{k} {v}" for k, v in
                                                 summary["by_channel"].items()))
    for code, count in summary["rejections_by_rule"].items():
        console.print(f"  rejected {code}: {count}")
    for number, error in list(summary["failures"].items())[:20]:
        console.print(f"[red]failed {number}[/red]: {error}")


@app.command()
def run(extract_dir: Annotated[Path, typer.Argument(help="Extract directory (7 Parquet tables).")],
        home: Annotated[Path, typer.Option(help="Directory for every output.",
                                           envvar="INVOICES_HOME")] = Path("var")) -> None:
    """Run the nightly billing flow on an extract (Prefect's embedded local API)."""
    home = home.resolve()
    _prepare_prefect(home)
    from flows.billing_run import nightly_billing
    from pipeline.progress import set_progress

    with Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        set_progress(RichProgress(bar))
        try:
            summary = nightly_billing(str(extract_dir), str(home))
        except ExtractSchemaError as exc:
            console.print(f"[red]Unusable extract[/red]: {exc}")
            raise typer.Exit(ExitCode.BAD_EXTRACT) from None
        finally:
            set_progress(None)
    _print_summary(summary)
    console.print(f"reports: {home / 'reports' / summary['run_id']}")
    raise typer.Exit(ExitCode.SOME_FAILED if summary["failed"] else ExitCode.OK)


@app.command()
def sample(out: Annotated[Path, typer.Option(help="Extract directory to write.")],
           invoices: Annotated[int, typer.Option(help="Invoices and credit notes.")] = 300,
           seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 1,
           defects: Annotated[float, typer.Option(help="Share of invoices with a defect.")] = 0.0,
           ) -> None:
    """Write a realistic French B2B sample extract."""
    from pipeline.sample import generate_extract

    report = generate_extract(out, invoices, seed=seed, defect_rate=defects)
    console.print(f"{report.invoices} invoices, {report.lines} lines, {report.customers} "
                  f"customers, {report.defects} injected defects -> {report.out}")


@app.command(name="validate")
def validate_cmd(extract_dir: Annotated[Path, typer.Argument(help="Extract directory.")],
                 as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False
                 ) -> None:
    """Validate an extract alone (against the archive of --home) and print invoices per rule."""
    from pipeline.archive import load_history
    from pipeline.ingest import load_extract
    from pipeline.settings import Settings
    from pipeline.storage import LocalStorage
    from pipeline.validate import REGISTRY, validate

    settings = Settings()
    try:
        bundle = load_extract(extract_dir, settings.ingest.error_rows)
    except ExtractSchemaError as exc:
        console.print(f"[red]Unusable extract[/red]: {exc}")
        raise typer.Exit(ExitCode.BAD_EXTRACT) from None
    history = load_history(LocalStorage(settings.archive_dir))
    result = validate(bundle, settings.seller, settings.validation, history)
    counts = result.counts_by_rule()
    if as_json:
        print(json.dumps({"input_invoices": result.input_invoices,
                          "accepted": result.accepted.height, "rejected": result.rejected,
                          "by_rule": counts}))
        return
    table = Table(title=f"{extract_dir}: {result.input_invoices} invoices, "
                        f"{result.accepted.height} accepted, {result.rejected} rejected")
    for column in ("code", "severity", "invoices", "explanation"):
        table.add_column(column)
    for code, n in counts.items():
        table.add_row(code, settings.validation.rules.get(code, REGISTRY[code].severity), str(n),
                      REGISTRY[code].explanation)
    Console().print(table)


@app.command()
def rules() -> None:
    """Print the validation rules as Markdown (the source of docs/validation-rules.md)."""
    from pipeline.validate.docs import rules_markdown

    print(rules_markdown(), end="")


if __name__ == "__main__":
    app()
