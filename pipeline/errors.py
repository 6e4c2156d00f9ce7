"""One exception base; each message says what to do next.

Terminal errors stop a run or an invoice for good until someone fixes the
cause; transient errors (a busy relay, a throttled store) may be retried.
"""

from __future__ import annotations

__all__ = ["PipelineError", "Terminal", "Transient", "ExtractSchemaError", "TemplateError",
           "RenderError", "ChannelError", "StorageError", "ExitCode"]


class ExitCode:
    """Process exit statuses of the CLI."""

    OK = 0
    SOME_FAILED = 1
    BAD_EXTRACT = 2


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = ExitCode.SOME_FAILED


class Terminal:
    """Mixin: retrying will not help; the input or configuration must change."""

    retriable = False


class Transient:
    """Mixin: the same call may succeed later."""

    retriable = True


class ExtractSchemaError(PipelineError, Terminal):
    """The extract cannot be used: nothing has been written."""

    exit_code = ExitCode.BAD_EXTRACT

    def __init__(self, file: str, problem: str, column: str | None = None,
                 rows: str | None = None) -> None:
        self.file, self.column, self.problem, self.rows = file, column, problem, rows
        where = f"{file}" + (f", column '{column}'" if column else "")
        message = f"{where}: {problem}"
        if rows:
            message += f"\n  first offending rows (0-based row number in the file):\n{rows}"
        message += "\n  Fix the extract (see sample_data/README.md for the format) and run again."
        super().__init__(message)


class TemplateError(PipelineError, Terminal):
    """A template cannot be rendered; the message names the file and line."""


class RenderError(PipelineError, Terminal):
    """A document could not be turned into a PDF."""


class ChannelError(PipelineError, Transient):
    """A delivery channel could not take the document; it can be retried."""


class StorageError(PipelineError, Transient):
    """The archive store refused a read or a write; it can be retried."""
