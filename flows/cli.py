"""The ``invoices`` command line.

``run`` sets Prefect's home under the run's home directory before Prefect is
imported (Prefect reads it once at import), so a run needs no server and
leaves everything under ``--home``.

``run`` and ``validate`` check the settings before anything starts and turn
every error into one message and an exit status: an operator reads what went
wrong and what to do, and asks for tracebacks (ours and Prefect's) with
``--verbose``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.errors import ExitCode, ExtractSchemaError, PipelineError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn ERP extracts into delivered, archived invoices.")
console = Console(stderr=True, soft_wrap=True)

HomeOption = Annotated[Path, typer.Option(
    help="Home directory: every output of a run, and the archive validation checks against.",
    envvar="INVOICES_HOME")]
VerboseOption = Annotated[bool, typer.Option(
    "--verbose", help="Print the tracebacks of errors (ours and Prefect's).")]


def error(message: object) -> None:
    """Print a problem in red, verbatim (no Rich markup in user data, no wrapping)."""
    console.print(str(message), style="red", markup=False, highlight=False)


@contextmanager
def reported(verbose: bool) -> Iterator[None]:
    """Turn any error into one message and an exit status; the traceback only when verbose.

    Our errors say what to do next and exit with their own status (2 for an
    unusable extract or settings); anything else is a bug or an environment
    problem: its type and message, exit status 1.
    """
    try:
        yield
    except (typer.Exit, typer.BadParameter):  # a usage error is printed as such (exit 2)
        raise
    except PipelineError as exc:
        if verbose:
            traceback.print_exc()
        error(f"Unusable extract: {exc}" if isinstance(exc, ExtractSchemaError) else exc)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        error(f"{type(exc).__name__}: {exc}")
        if not verbose:
            error("This was not expected: run again with --verbose for the traceback.")
        raise typer.Exit(ExitCode.SOME_FAILED) from None


class RichProgress:
    """A progress bar per stage, shown from the first stage on.

    A run that stops before (an unusable extract) prints only its message.
    """

    def __init__(self, bar: Progress) -> None:
        self.bar, self.tasks = bar, {}  # type: ignore[var-annotated]

    def start(self, stage: str, total: int) -> None:
        """Add a bar for ``stage``."""
        if not self.tasks:
            self.bar.start()
        self.tasks[stage] = self.bar.add_task(stage, total=total)

    def close(self) -> None:
        """Leave the bars as they ended."""
        if self.tasks:
            self.bar.stop()

    def advance(self, stage: str, amount: int = 1) -> None:
        """Move the bar of ``stage``."""
        if stage in self.tasks:
            self.bar.advance(self.tasks[stage], amount)


def _prepare_prefect(home: Path, verbose: bool) -> None:
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The temporary API server is a subprocess this process cannot filter: unless
    # asked, it stays silent (its failures reach us as errors of the flow).
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING" if verbose else "CRITICAL")
    # Prefect waits 20 s for its temporary API server, counting only its own sleeps; a
    # loaded machine needs longer to import and migrate it, and a nightly run must not die
    # of that.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    # The pipeline's own log records reach the run's logs in the UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")


class _NoTraceback(logging.Formatter):
    """Another formatter's output without the exception or stack text of the record."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """Format a copy: the record itself still carries its traceback to other handlers."""
        return self.inner.format(logging.makeLogRecord(
            {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}))


def _drop_run_failures(record: logging.LogRecord) -> bool:
    """Prefect's own report of a failed task or flow run repeats the error the CLI prints."""
    return not (record.levelno >= logging.ERROR
                and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def _quiet_console_logging() -> None:
    """No tracebacks and no repeated failure reports on the console (Prefect's API keeps both).

    Call after Prefect configured logging: its handlers writing to the
    terminal are the stream handlers then attached to any logger.
    """
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict
                                      .values() if isinstance(logger, logging.Logger))]
    handlers = {id(h): h for logger in loggers for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)}
    for handler in handlers.values():
        handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))
        handler.addFilter(_drop_run_failures)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"Run {summary['run_id']}")
    columns = {"read": "input_invoices", "sent": "sent", "deposited": "deposited",
               "written": "written",
               "delivered earlier": "already_delivered", "rejected": "rejected",
               "failed": "failed", "in doubt": "in_doubt", "inv/s": "invoices_per_s"}
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*(str(summary[k]) for k in columns.values()))
    console.print(table)
    console.print("transports: " + ", ".join(f"{c} by {t}" for c, t in
                                             summary["transports"].items()))
    if summary["by_channel"]:
        console.print("delivered by channel: " + ", ".join(f"{k} {v}" for k, v in
                                                           summary["by_channel"].items()))
    for code, count in summary["rejections_by_rule"].items():
        console.print(f"  rejected {code}: {count}")
    for number, problem in list(summary["failures"].items())[:20]:
        error(f"failed {number}: {problem}")
    for number, why in list(summary["in_doubt_invoices"].items())[:20]:
        error(f"in doubt {number}: {why}")
    for note in summary["notes"]:
        error(f"needs an operator: {note}")
    if summary["in_doubt"]:
        error(f"{summary['in_doubt']} invoice(s) in doubt: check with `invoices deliveries "
              "--state in_doubt`, then re-run with --resend-in-doubt to send them again "
              "(same Message-ID).")


ResendOption = Annotated[bool, typer.Option(
    "--resend-in-doubt", help="Re-send what a stopped run left in doubt (same Message-ID).")]


@app.command()
def run(extract_dir: Annotated[Path, typer.Argument(help="Extract directory (7 Parquet tables).")],
        home: HomeOption = Path("var"), verbose: VerboseOption = False,
        resend_in_doubt: ResendOption = False) -> None:
    """Run the nightly billing flow on an extract (Prefect's embedded local API)."""
    from pipeline.preflight import check_settings, load_settings

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        summary = _run_flow(extract_dir, settings.home, verbose, resend_in_doubt)
    _print_summary(summary)
    console.print(f"reports: {settings.home / 'reports' / summary['run_id']}")
    raise typer.Exit(ExitCode.SOME_FAILED if summary["failed"] or summary["in_doubt"]
                     or summary["notes"]
                     else ExitCode.OK)


def _run_flow(extract_dir: Path, home: Path, verbose: bool,
              resend_in_doubt: bool) -> dict[str, Any]:
    _prepare_prefect(home, verbose)
    from flows.billing_run import BatchesFailed, nightly_billing
    from pipeline.progress import set_progress

    if not verbose:
        _quiet_console_logging()
    bars = RichProgress(Progress(TextColumn("{task.description:>8}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console))
    set_progress(bars)
    try:
        return nightly_billing(str(extract_dir), str(home), resend_in_doubt=resend_in_doubt)
    except BatchesFailed as exc:  # the summary says which invoices and why
        return exc.summary
    finally:
        set_progress(None)
        bars.close()


@app.command()
def serve(
    extract: Annotated[str, typer.Option(
        help="Extract location of the nightly run; {run_date} is replaced by the run date "
             "(for example /srv/erp/{run_date}).")],
    home: HomeOption = Path("var"),
    cron: Annotated[str, typer.Option(help="When nightly-billing runs.")] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(help="Time zone of the schedule.")] = "Europe/Paris",
    statements: Annotated[str | None, typer.Option(
        help="Where the bank's camt.053 statements arrive for receivables-daily; may hold "
             "{run_date}.")] = None,
    receivables_cron: Annotated[str, typer.Option(
        help="When receivables-daily runs.")] = "0 7 * * *",
    verbose: VerboseOption = False,
) -> None:
    """Serve the nightly-billing and receivables-daily (scheduled) and rerun-batch
    deployments until stopped.

    Runs and workers use the Prefect API of PREFECT_API_URL (a `prefect server start`
    or Prefect Cloud); each run executes in a process of its own on this machine.
    """
    from pipeline.preflight import check_settings, load_settings

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        if not os.environ.get("PREFECT_API_URL"):
            raise typer.BadParameter("set PREFECT_API_URL to the Prefect server that "
                                     "schedules the runs (see the README)")
        # Runs started by serve log at INFO: their counts are read in the UI, not a console.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        _prepare_prefect(settings.home, verbose)
        from flows.deployments import serve_deployments

        serve_deployments(extract, str(settings.home), cron, timezone, statements,
                          receivables_cron)


@app.command()
def deliveries(
    invoice: Annotated[str | None, typer.Option(help="One invoice number.")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Deliveries a run touched.")] = None,
    state: Annotated[str | None, typer.Option(
        help="pending, started, sent, written, failed or in_doubt.")] = None,
    home: HomeOption = Path("var"), as_json: Annotated[bool, typer.Option(
        "--json", help="JSON output, with every transition.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """What went where, when, and the servers' answers (from the delivery journal)."""
    from pipeline.journal import Journal
    from pipeline.preflight import load_settings

    with reported(verbose):
        settings = load_settings(home=home)
        journal = Journal(settings.ledger_url)
        rows = journal.rows(invoice=invoice, run_id=run_id, state=state)
        if as_json:
            history = journal.history([r.key for r in rows])
            print(json.dumps([{**r.__dict__, "events": [e for e in history if e["key"] == r.key]}
                              for r in rows], default=str, ensure_ascii=False, indent=1))
            return
        table = Table(title=f"{len(rows)} deliveries")
        for column in ("invoice", "channel", "state", "transport", "attempts", "run",
                       "finished", "server reply / error"):
            table.add_column(column, overflow="fold")
        for r in rows:
            table.add_row(r.invoice_number, r.channel, r.state, r.transport or "",
                          str(r.attempts), r.run_id or "",
                          f"{r.finished_at:%Y-%m-%d %H:%M:%S}" if r.finished_at else "",
                          (r.reply or "")[:200])
        Console().print(table)


@app.command()
def status(
    number: Annotated[str, typer.Argument(help="Invoice number.")],
    home: HomeOption = Path("var"), as_json: Annotated[bool, typer.Option(
        "--json", help="JSON output.")] = False, verbose: VerboseOption = False,
) -> None:
    """An invoice's whole history: validation, rendering and archive, each delivery, each
    lifecycle status from the platform."""
    from pipeline.archive import read_index
    from pipeline.history import invoice_history
    from pipeline.journal import Journal
    from pipeline.preflight import load_settings

    with reported(verbose):
        settings = load_settings(home=home)
        if not (settings.home / "reports").is_dir():
            console.print(f"{settings.home} holds no run: nothing is recorded about {number} "
                          "(--home or INVOICES_HOME names the home of the runs)")
            raise typer.Exit(ExitCode.BAD_SETTINGS)
        storage = _archive_storage(home)
        events = invoice_history(number, settings.home / "reports", read_index(storage),
                                 Journal(settings.ledger_url))
    if as_json:
        print(json.dumps([e.__dict__ for e in events], default=str, ensure_ascii=False,
                         indent=1))
        return
    if not events:
        console.print(f"nothing is recorded about {number} in {settings.home}")
        raise typer.Exit(1)
    table = Table(title=f"{number}: {len(events)} events")
    for column in ("when (UTC)", "stage", "what", "detail"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}" if e.at else "", e.stage, e.what,
                      e.detail[:300])
    Console().print(table)


ar_app = typer.Typer(no_args_is_help=True,
                     help="Receivables: bank statements in, matched to what was billed.")
app.add_typer(ar_app, name="ar")


def _ledger(settings: Any, must_exist: bool = True) -> Any:
    """The ledger of the home; a home without one is a usage error, not a crash."""
    from pipeline.journal import Journal

    url = settings.ledger_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if must_exist and not path.is_file():
            raise typer.BadParameter(f"{settings.home} has no ledger ({path.name}): bill or "
                                     "import statements there first, or give --home")
        path.parent.mkdir(parents=True, exist_ok=True)
    return Journal(url)


def _holder(command: str) -> str:
    """Who holds the receivables lease, as another run's message shows it."""
    import socket

    return f"{command} by {os.getpid()} on {socket.gethostname()}"


@ar_app.command("import")
def ar_import(statements: Annotated[list[Path], typer.Argument(
        help="camt.053 files, or folders of them.")],
              home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Load the payments of bank statements (camt.053) into the ledger, once each: a
    statement imported again adds nothing."""
    from pipeline.preflight import check_settings, load_settings
    from pipeline.receivables.payments import import_statements

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        report = import_statements(statements, _ledger(settings, must_exist=False))
    Console().print(f"{report.files} statement file(s): {report.read} payments read, "
                    f"{report.added} new, {report.already} already imported"
                    + "".join(f", {n} {kind}" for kind, n in sorted(report.by_kind.items()))
                    + (f"; {report.duplicates} sent twice by the bank, counted once"
                       if report.duplicates else "")
                    + (f"; {report.skipped} entries not receivables (pending, own debits)"
                       if report.skipped else ""), markup=False, highlight=False)
    for problem in report.problems.values():
        error(f"not imported: {problem}")
    raise typer.Exit(ExitCode.SOME_FAILED if report.problems else ExitCode.OK)


@ar_app.command("match")
def ar_match(oldest_first: Annotated[bool | None, typer.Option(
        help="Also give a known payer's unplaced money to its earliest due items (default: "
             "[receivables] oldest_first).")] = None,
             extract_dir: Annotated[Path | None, typer.Option(
                 "--extract", help="An extract whose customers table names the customers: "
                                   "a payer with a new IBAN is then known by its name.")
             ] = None,
             home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Match the payments not yet placed to the open items (every delivered invoice), in
    passes of decreasing certainty; prints the payments each pass placed and lists what no
    pass could place, for a person (``invoices ar allocate``)."""
    from pipeline.archive import read_index
    from pipeline.ingest import load_extract
    from pipeline.money import from_cents
    from pipeline.preflight import check_settings, load_settings
    from pipeline.receivables.lease import receivables_lease
    from pipeline.receivables.open_items import OpenItems, customer_names, match_payments
    from pipeline.storage import open_storage

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        journal = _ledger(settings)
        with receivables_lease(journal, _holder("ar match")):
            added = OpenItems(journal).refresh(read_index(open_storage(settings)))
            report = match_payments(
                journal, settings.receivables.oldest_first if oldest_first is None
                else oldest_first,
                customer_names(load_extract(extract_dir).customers) if extract_dir else None)
    Console().print(f"{added} new open items; {report.payments} payments to place: "
                    + ", ".join(f"{name} {n}" for name, n in report.by_pass.items())
                    + f"; {report.unallocated.height} left for a person")
    for row in report.unallocated.iter_rows(named=True):
        Console().print(f"  {row['payment_key']}: {from_cents(row['cents'])} "
                        f"{row['why']}", markup=False, highlight=False)


@ar_app.command("allocate")
def ar_allocate(payment: Annotated[str, typer.Argument(help="Payment key (ar match lists).")],
                invoices: Annotated[list[str], typer.Argument(help="Invoices, in order.")],
                home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """A person's decision: the payment's unplaced money to these invoices, in this order."""
    import getpass

    from pipeline.preflight import check_settings, load_settings
    from pipeline.receivables.lease import receivables_lease
    from pipeline.receivables.open_items import allocate

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        journal = _ledger(settings)
        try:
            with receivables_lease(journal, _holder("ar allocate")):
                granted = allocate(journal, payment, invoices, getpass.getuser())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    if not granted:
        error(f"{payment}: nothing allocated (its money is spent, or those invoices owe "
              "nothing)")
        raise typer.Exit(ExitCode.SOME_FAILED)
    for number, amount in granted:
        Console().print(f"{payment}: {amount} to {number}", markup=False, highlight=False)


@ar_app.command("daily")
def ar_daily(extract_dir: Annotated[Path, typer.Argument(
        help="The ERP extract whose customers the letters go to.")],
             statements: Annotated[Path | None, typer.Option(
                 help="camt.053 file, or folder of them, to import first.")] = None,
             run_date: Annotated[datetime | None, typer.Option(
                 "--date", formats=["%Y-%m-%d"],
                 help="The day the run is for (default today).")] = None,
             home: HomeOption = Path("var"), verbose: VerboseOption = False,
             resend_in_doubt: ResendOption = False) -> None:
    """Run the receivables-daily flow: import, match, 212 Encaissée, dunning, statements
    (on the statement day), aging report."""
    from pipeline.preflight import check_settings, load_settings

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        _ledger(settings)
        _prepare_prefect(settings.home, verbose)
        from flows.receivables_daily import ReceivablesProblems, receivables_daily

        if not verbose:
            _quiet_console_logging()
        try:
            result = receivables_daily(str(extract_dir), str(settings.home),
                                       str(statements) if statements else None,
                                       run_date.date() if run_date else None, resend_in_doubt)
        except ReceivablesProblems as exc:  # counts first, then what needs a person
            result = exc.result
    match, dunning, monthly = result["match"], result["dunning"], result["statements"]
    console.print(f"{result['run_date']}: {result['import']['added']} payments imported; "
                  + ", ".join(f"{k} {v}" for k, v in match["by_pass"].items())
                  + f"; {match['for_a_person']} left for a person")
    console.print(f"212 Encaissée deposited: {result['collected'].get('deposited', 0)}; "
                  f"reminders: {dunning['planned']} planned, {dunning['sent']} sent, "
                  f"{dunning['written']} written, {dunning['withdrawn']} withdrawn (no "
                  f"longer true); statements: {monthly.get('planned', 0)} "
                  f"planned, {monthly.get('sent', 0)} sent, {monthly.get('written', 0)} written")
    problems = result["problems"]
    for problem in problems.values():
        error(problem)
    console.print(f"aging report: {result['aging']['html']}")
    raise typer.Exit(ExitCode.SOME_FAILED if problems else ExitCode.OK)


@ar_app.command("aging")
def ar_aging(as_of: Annotated[datetime | None, typer.Option(
        formats=["%Y-%m-%d"], help="The day to age as of (default today).")] = None,
             extract_dir: Annotated[Path | None, typer.Option(
                 "--extract", help="An extract whose customers table names the customers.")
             ] = None,
             out: Annotated[Path | None, typer.Option(
                 help="Folder for aging.parquet and aging.html (default "
                      "<home>/receivables/<date>).")] = None,
             show_all: Annotated[bool, typer.Option(
                 "--all", help="Print every customer, not the 20 most past due.")] = False,
             home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Aged balance per customer (not due, 1-30, 31-60, 61-90, over 90 days), DSO, CEI,
    average days late and disputed amount: printed, and written as Parquet and HTML."""
    import polars as pl
    from rich.text import Text

    from pipeline.ingest import load_extract
    from pipeline.preflight import check_settings, load_settings
    from pipeline.receivables.aging_report import build_aging_report, write_aging_report
    from pipeline.receivables.disputes import Disputes
    from pipeline.receivables.open_items import OpenItems
    from pipeline.render.templates import make_environment

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings, writing=False)
        journal = _ledger(settings)
        book = OpenItems(journal)
        day = as_of.date() if as_of else datetime.now(ZoneInfo("Europe/Paris")).date()
        names: pl.DataFrame | dict[str, str] = (
            load_extract(extract_dir).customers if extract_dir else {})
        report = build_aging_report(book.items(), book.allocations(), day, names,
                                    set(Disputes(journal).current()))
        paths = write_aging_report(report, out or settings.home / "receivables" / day.isoformat(),
                                   make_environment(settings.render.templates_dir))
    rows = report.as_table()
    shown = rows[:-1] if show_all else rows[:-1][:20]
    table = Table(title=f"Aged balance as of {day} (EUR), most past due first"
                  + ("" if len(shown) == len(rows) - 1 else
                     f": {len(shown)} of {len(rows) - 1} customers (--all for every one)"))
    for column in rows[-1]:
        if column == "name":
            table.add_column(column, max_width=24, no_wrap=True, overflow="ellipsis")
        else:  # an amount is never cut: the table grows wider than a narrow terminal
            table.add_column(column, justify="left" if column == "customer" else "right",
                             no_wrap=True, min_width=max(len(column), *(
                                 len(r[column]) for r in [*shown, rows[-1]])))
    for row in [*shown, rows[-1]]:  # customer names are data, never rich markup
        table.add_row(*(Text(value) for value in row.values()),
                      end_section=row is shown[-1] if shown else False)
    natural = Console(width=10_000).measure(table).maximum  # a narrow terminal wraps it;
    Console(width=max(Console().width, natural)).print(table)  # no amount is ever cut
    figures = report.as_dict()
    console.print(f"DSO {figures['dso_days']} days, CEI {figures['cei_percent']} %, "
                  f"{figures['average_days_late']} days late on average, disputed "
                  f"{figures['disputed']} EUR")
    if report.left_out:
        console.print(f"{report.left_out} invoices and credit notes in other currencies than "
                      "EUR are not in this report")
    console.print(f"written: {paths['parquet']} and {paths['html']}")


@ar_app.command("dispute")
def ar_dispute(number: Annotated[str, typer.Argument(help="Invoice number.")],
               reason: Annotated[str, typer.Option(help="Why it is disputed.")],
               home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Put an invoice in dispute: no reminder goes out for it until it is lifted."""
    _decide(number, True, reason, home, verbose)


@ar_app.command("undispute")
def ar_undispute(number: Annotated[str, typer.Argument(help="Invoice number.")],
                 reason: Annotated[str, typer.Option(help="How it was settled.")] = "",
                 home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Lift a dispute (a person's, or a platform's 207 / 210): reminders resume."""
    _decide(number, False, reason, home, verbose)


def _decide(number: str, disputed: bool, reason: str, home: Path, verbose: bool) -> None:
    import getpass

    import polars as pl

    from pipeline.preflight import check_settings, load_settings
    from pipeline.receivables.disputes import Disputes
    from pipeline.receivables.open_items import OpenItems

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings)
        journal = _ledger(settings)
        if OpenItems(journal).items().filter(pl.col("invoice_number") == number).is_empty():
            raise typer.BadParameter(f"{number} is not a delivered invoice (ar match adds "
                                     "delivered invoices to the open items)")
        book = Disputes(journal)
        try:
            book.decide(number, disputed, reason, getpass.getuser())
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        now = book.current([number]).get(number)
    Console().print(f"{number}: " + (f"disputed ({now.reason}, by {now.source})" if now
                                     else "not disputed"), markup=False, highlight=False)


pa_app = typer.Typer(no_args_is_help=True,
                     help="The accredited platform (PA) of the French 2026 reform.")
app.add_typer(pa_app, name="pa")


@pa_app.command("sync")
def pa_sync(home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Fetch the lifecycle statuses the platform published since the last sync and record
    them per invoice (``invoices status NUMBER`` shows them)."""
    from pipeline.journal import Journal
    from pipeline.platform.lifecycle import sync
    from pipeline.preflight import check_settings, load_settings

    with reported(verbose):
        settings = load_settings(home=home)
        if not settings.pa.configured:
            raise typer.BadParameter("no platform is configured (INVOICES_PA__URL)")
        check_settings(settings)
        report = sync(settings, Journal(settings.ledger_url))
    Console().print(f"{report.flows} lifecycle flows read, {report.recorded} new statuses"
                    + "".join(f", {n} × {code}" for code, n in sorted(report.by_code.items())))
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]")
    if report.problems:
        raise typer.Exit(1)


@app.command()
def sample(out: Annotated[Path, typer.Option(help="Extract directory to write.")],
           invoices: Annotated[int, typer.Option(help="Invoices and credit notes.")] = 300,
           seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 1,
           defects: Annotated[float, typer.Option(help="Share of invoices with a defect.")] = 0.0,
           days: Annotated[int, typer.Option(
               help="Days the invoices are issued over (365: a year).")] = 26,
           statements: Annotated[Path | None, typer.Option(
               help="Also write the bank statements (camt.053) that pay these invoices, "
                    "with the generator's truth (payments_truth.parquet), here.")] = None,
           ) -> None:
    """Write a realistic French B2B sample extract (and the bank statements paying it)."""
    from pipeline.receivables.sample import generate_statements
    from pipeline.sample import generate_extract

    report = generate_extract(out, invoices, seed=seed, defect_rate=defects, days=days)
    console.print(f"{report.invoices} invoices, {report.lines} lines, {report.customers} "
                  f"customers, {report.defects} injected defects -> {report.out}")
    if statements:
        paid = generate_statements(out, statements, seed=seed)
        console.print(f"{paid.payments} payments in {len(paid.files)} statements from "
                      f"{paid.first_day} to {paid.last_day} ("
                      + ", ".join(f"{k} {n}" for k, n in paid.by_kind.items())
                      + f"), {paid.open_invoices} invoices left unpaid -> {paid.out}")


@app.command(name="validate")
def validate_cmd(extract_dir: Annotated[Path, typer.Argument(help="Extract directory.")],
                 as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
                 home: HomeOption = Path("var"), verbose: VerboseOption = False) -> None:
    """Validate an extract alone (against the archive of --home) and print invoices per rule."""
    from pipeline.archive import load_history
    from pipeline.ingest import load_extract
    from pipeline.preflight import check_settings, load_settings
    from pipeline.storage import open_storage
    from pipeline.validate import REGISTRY, validate

    with reported(verbose):
        settings = load_settings(home=home)
        check_settings(settings, writing=False)
        bundle = load_extract(extract_dir, settings.ingest.error_rows)
        history = load_history(open_storage(settings))
        result = validate(bundle, settings.seller, settings.validation, history,
                          edi=settings.edi)
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


class Status(StrEnum):
    """How an archived invoice went out."""

    sent = "sent"
    deposited = "deposited"
    written = "written"


archive_app = typer.Typer(no_args_is_help=True,
                          help="Find, fetch, verify and compact the archive.")
app.add_typer(archive_app, name="archive")


def _archive_storage(home: Path) -> Any:
    """The archive the settings name, checked (readable, reachable) first."""
    from pipeline.preflight import check_settings, load_settings
    from pipeline.storage import open_storage

    settings = load_settings(home=home)
    check_settings(settings, writing=False)
    return open_storage(settings)


@archive_app.command("find")
def archive_find(
    customer: Annotated[str | None, typer.Option(help="Customer id.")] = None,
    number: Annotated[str | None, typer.Option(help="Invoice number.")] = None,
    date_from: Annotated[datetime | None, typer.Option(
        "--from", formats=["%Y-%m-%d"], help="Issued on or after (YYYY-MM-DD).")] = None,
    date_to: Annotated[datetime | None, typer.Option(
        "--to", formats=["%Y-%m-%d"], help="Issued on or before (YYYY-MM-DD).")] = None,
    status: Annotated[Status | None, typer.Option(help="How it went out.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    home: HomeOption = Path("var"), verbose: VerboseOption = False,
) -> None:
    """Delivered invoices in the archive index, one row per invoice and channel."""
    from pipeline.archive import read_index
    from pipeline.audit import find

    with reported(verbose):
        rows = find(read_index(_archive_storage(home)), customer=customer, number=number,
                    date_from=date_from.date() if date_from else None,
                    date_to=date_to.date() if date_to else None,
                    status=status.value if status else None)
    if as_json:
        print(json.dumps(rows.to_dicts(), default=str, ensure_ascii=False, indent=1))
        return
    table = Table(title=f"{rows.height} archived deliveries (keys and digests: --json)")
    for column in ("invoice", "customer", "type", "issued", "gross", "channel", "status"):
        table.add_column(column, no_wrap=column in ("invoice", "issued", "gross"),
                         justify="right" if column == "gross" else "left")
    for r in rows.iter_rows(named=True):
        table.add_row(r["invoice_number"], r["customer_id"], r["invoice_type"],
                      str(r["issue_date"]), f"{r['total_gross']} {r['currency']}", r["channel"],
                      r["status"])
    Console().print(table)


@archive_app.command("get")
def archive_get(
    number: Annotated[str, typer.Argument(help="Invoice number.")],
    out: Annotated[Path, typer.Option(help="Folder to write the files to.")],
    home: HomeOption = Path("var"), verbose: VerboseOption = False,
) -> None:
    """Fetch an invoice's PDF and delivered files, each checked against its sha256."""
    from pipeline.audit import fetch

    with reported(verbose):
        for path in fetch(_archive_storage(home), number, out):
            console.print(str(path), markup=False, highlight=False)


@archive_app.command("verify")
def archive_verify(
    sample: Annotated[float, typer.Option(
        min=0.0001, max=1.0, help="Share of the objects to re-read (1 = all).")] = 1.0,
    home: HomeOption = Path("var"), verbose: VerboseOption = False,
) -> None:
    """Re-read archived objects; list every one altered or missing; exit 1 if any."""
    from pipeline.audit import verify

    with reported(verbose):
        storage = _archive_storage(home)
        result = verify(storage, sample)
    for problem in result.problems:
        error(f"{problem.kind}: {problem.key}: {problem.detail}")
    console.print(f"{storage.location}: {result.checked} of {result.objects} objects re-read, "
                  f"{len(result.problems)} problem(s)", markup=False, highlight=False)
    raise typer.Exit(ExitCode.SOME_FAILED if result.problems else ExitCode.OK)


@archive_app.command("compact")
def archive_compact(
    period: Annotated[str | None, typer.Option(help="One period, YYYY-MM (default: all).")
                      ] = None,
    home: HomeOption = Path("var"), verbose: VerboseOption = False,
) -> None:
    """Merge each period's index parts into one file, every row kept once."""
    from pipeline.archive import compact

    if period is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise typer.BadParameter(f"{period!r} is not a period (YYYY-MM)")
    with reported(verbose):
        done = compact(_archive_storage(home), period)
    for c in done:
        console.print(f"{c.dataset}/period={c.period}: {c.parts} parts -> {c.rows} rows in "
                      f"{c.key}", markup=False, highlight=False)
    if not done:
        console.print("nothing to compact")


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
    letter: Annotated[str | None, typer.Option(
        help="A sample letter instead: reminder, firm_reminder, formal_notice or statement.")
    ] = None,
) -> None:
    """Write the PDF (and PNGs) of one sample invoice, or of a sample letter."""
    from pipeline.errors import PipelineError
    from pipeline.workshop import preview
    from pipeline.workshop import watch as watch_templates

    root, settings = _templates(templates)

    def render() -> list[Path]:
        return preview(root, settings, out, invoice, customer, lang, png, letter)

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
