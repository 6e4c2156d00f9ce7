"""One exception base; each message says what to do next.

Terminal errors stop a run or an invoice for good until someone fixes the
cause; transient errors (a busy relay, a throttled store) may be retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PipelineError", "Terminal", "Transient", "ExtractSchemaError", "SettingsError",
           "SettingProblem", "TemplateError", "RenderError", "ChannelError", "StorageError",
           "ExitCode"]


class ExitCode:
    """Process exit statuses of the CLI."""

    OK = 0
    SOME_FAILED = 1
    BAD_EXTRACT = 2
    BAD_SETTINGS = 2  # like an unusable extract: nothing was started, the input must change


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


@dataclass(frozen=True)
class SettingProblem:
    """One setting that cannot work, told the way an operator fixes it.

    Attributes:
        setting: the setting and where it is set, e.g. ``archive.url (INVOICES_ARCHIVE__URL)``.
        value: the value as shown (passwords already hidden).
        problem: what is wrong with it.
        action: what to do.
    """

    setting: str
    value: str
    problem: str
    action: str

    def __str__(self) -> str:
        return f"{self.setting} = {self.value}\n    {self.problem}\n    {self.action}"


class SettingsError(PipelineError, Terminal):
    """The settings cannot work; found before the run starts, so nothing was started."""

    exit_code = ExitCode.BAD_SETTINGS

    def __init__(self, problems: Sequence[SettingProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(["Unusable settings; nothing was started.",
                                     *(f"  {problem}" for problem in self.problems)]))


class TemplateError(PipelineError, Terminal):
    """A template cannot be rendered; the message names the file and line."""


class RenderError(PipelineError, Terminal):
    """A document could not be turned into a PDF."""


class ChannelError(PipelineError, Transient):
    """A delivery channel could not take the document; it can be retried."""


class StorageError(PipelineError, Transient):
    """The archive store refused a read or a write; it can be retried."""
