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
console = Console(stderr=True, soft_wrap=True)


def error(message: object) -> None:
    """Print a problem in red, verbatim (no Rich markup in user data, no wrapping)."""
    console.print(str(message), style="red", markup=False, highlight=False)


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
    for number, problem in list(summary["failures"].items())[:20]:
        error(f"failed {number}: {problem}")


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
            error(f"Unusable extract: {exc}")
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
        error(f"Unusable extract: {exc}")
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


templates_app = typer.Typer(no_args_is_help=True,
                            help="Check, preview and diff the invoice templates.")
app.add_typer(templates_app, name="templates")

TemplatesOption = Annotated[Path | None, typer.Option(
    "--templates", help="Templates folder (default: settings.render.templates_dir).")]


def _templates(path: Path | None) -> tuple[Path, Any]:
    from pipeline.settings import Settings
    settings = Settings()
    return (path or settings.render.templates_dir).resolve(), settings


@templates_app.command("check")
def templates_check(templates: TemplatesOption = None) -> None:
    """Render every template and variant on the sample extract; fail on the first problem."""
    from pipeline.errors import PipelineError
    from pipeline.workshop import check_templates

    root, settings = _templates(templates)
    try:
        checked, problems = check_templates(root, settings)
    except PipelineError as exc:
        error(exc)
        raise typer.Exit(ExitCode.SOME_FAILED) from None
    for problem in problems:
        error(problem)
    console.print(f"{checked} template variants checked, {len(problems)} problem(s)")
    raise typer.Exit(ExitCode.SOME_FAILED if problems else ExitCode.OK)


@templates_app.command("preview")
def templates_preview(
    invoice: Annotated[str | None, typer.Option(help="Invoice number in the sample.")] = None,
    customer: Annotated[str | None, typer.Option(help="Render as this customer (overrides).")
                        ] = None,
    lang: Annotated[str | None, typer.Option(help="fr, en or de (default: the customer's).")
                    ] = None,
    png: Annotated[bool, typer.Option("--png", help="Also write PNG pages.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Re-render on every save.")] = False,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("var/preview"),
    templates: TemplatesOption = None,
) -> None:
    """Write the PDF (and PNGs) of one sample invoice."""
    from pipeline.errors import PipelineError
    from pipeline.workshop import preview
    from pipeline.workshop import watch as watch_templates

    root, settings = _templates(templates)

    def render() -> list[Path]:
        return preview(root, settings, out, invoice, customer, lang, png)

    try:
        for path in render():
            console.print(str(path))
    except PipelineError as exc:
        error(exc)
        if not watch:
            raise typer.Exit(ExitCode.SOME_FAILED) from None
    if watch:
        console.print(f"watching {root} (Ctrl-C to stop)")
        try:
            watch_templates(root, render, console.print)
        except KeyboardInterrupt:
            pass


@templates_app.command("diff")
def templates_diff(
    base: Annotated[str, typer.Option(help="Git ref of the templates to compare with.")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("var/template-diff"),
    templates: TemplatesOption = None,
) -> None:
    """Before/after images of sample invoices; exit 1 when a page changed."""
    from pipeline.workshop import diff_templates

    root, settings = _templates(templates)
    report = diff_templates(base, root, settings, out.resolve())
    console.print(f"{report.changed_pages} of {len(report.pages)} pages changed: {report.index}")
    raise typer.Exit(ExitCode.SOME_FAILED if report.changed_pages else ExitCode.OK)


@templates_app.command("vars")
def templates_vars() -> None:
    """Print the names templates receive (the generated part of templates/README.md)."""
    from pipeline.workshop import template_variables_markdown

    print(template_variables_markdown(), end="")


@app.command()
def rules() -> None:
    """Print the validation rules as Markdown (the source of docs/validation-rules.md)."""
    from pipeline.validate.docs import rules_markdown

    print(rules_markdown(), end="")


if __name__ == "__main__":
    app()
