"""Check the settings before a run starts: one message per problem, not a late traceback.

A wrong path or URL otherwise surfaces deep in a run (after the extract was
read and validated) as a traceback from the file system, SQLite or Jinja that
names neither the setting nor what to do. Every check here is cheap (a stat, a
probe file, one database connection), leaves nothing behind (the run creates
the home, the archive and the ledger itself), and reports the setting, its
environment variable, the value and the next step.
"""

from __future__ import annotations

import difflib
import os
import re
import sqlite3
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from pipeline.codes import LANGUAGES
from pipeline.errors import SettingProblem, SettingsError
from pipeline.schemas import CHANNELS
from pipeline.settings import RenderSettings, Settings
from pipeline.storage import SCHEMES, open_storage, url_scheme
from pipeline.storage.local import folder_problem
from pipeline.validate import REGISTRY, check_rule_settings

__all__ = ["load_settings", "check_settings"]

_ENV_PREFIX = "INVOICES_"
# INVOICES_* variables that are read outside the settings object.
_NOT_SETTINGS = {"INVOICES_CONFIG", "INVOICES_SHARED_DIR"}
_SECRET = re.compile(r"password|secret|token", re.IGNORECASE)
_CONNECT_TIMEOUT = {"postgresql": {"connect_timeout": 10}, "mysql": {"connect_timeout": 10}}

# What a run reads from the templates root: override folders may hold only
# some of these, but the root is the last resort for every document.
_TEMPLATE_FILES = ("invoice.html", "credit_note.html", "reports/exceptions.html",
                  "assets/invoice.css", "print/cover.html", "assets/print.css",
                  *(f"i18n/{lang}.po" for lang in LANGUAGES),
                  *(f"emails/{lang}/{part}" for lang in LANGUAGES
                    for part in ("subject.txt", "body.txt", "body.html", "letter_subject.txt",
                                 "letter_body.txt", "letter_body.html")),
                  "reports/aging.html", "dunning/page.html", "dunning/letter.html",
                  "dunning/statement.html",
                  *(f"dunning/{lang}/{name}.html" for lang in LANGUAGES
                    for name in ("reminder", "firm_reminder", "formal_notice", "statement")))


def _env_name(loc: tuple[str, ...]) -> str:
    """The variable of a setting: ``("render", "workers")`` -> INVOICES_RENDER__WORKERS."""
    return _ENV_PREFIX + "__".join(loc).upper()


def _toml_name(loc: tuple[str, ...]) -> str:
    return f"[{'.'.join(loc[:-1])}] {loc[-1]}" if len(loc) > 1 else loc[0]


def _label(loc: tuple[str, ...]) -> str:
    """The setting, its variable and, when it comes from there, the file that sets it."""
    if loc == ("home",):
        return "home (--home or INVOICES_HOME)"
    config = _user_config()
    if (config and config.data and _lookup(config.data, loc) is not None
            and _env_name(loc) not in {name.upper() for name in os.environ}):
        return f"{_toml_name(loc)} in {config.path} ({_env_name(loc)})"
    return f"{'.'.join(loc)} ({_env_name(loc)})"


def _show(value: object, loc: tuple[str, ...] = ()) -> str:
    if any(_SECRET.search(part) for part in loc):
        return "'***'"
    shown = repr(str(value) if isinstance(value, Path) else value)
    return shown if len(shown) <= 120 else shown[:117] + "..."


class _UserConfig(NamedTuple):
    """The INVOICES_CONFIG file as read."""

    path: Path
    data: dict[str, Any] | None
    problem: str  # why it cannot be read, or ""


def _user_config() -> _UserConfig | None:
    """The file named by INVOICES_CONFIG, read the way Settings reads it; None if unset."""
    if not (name := os.environ.get("INVOICES_CONFIG")):
        return None
    path = Path(name)
    try:
        return _UserConfig(path, tomllib.loads(path.read_text(encoding="utf-8")), "")
    except FileNotFoundError:
        return _UserConfig(path, None, f"no such file (looked for {path.absolute()})")
    except IsADirectoryError:
        return _UserConfig(path, None, "a folder, not a TOML file")
    except OSError as exc:
        return _UserConfig(path, None, f"cannot be read: {exc.strerror}")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return _UserConfig(path, None, f"not valid TOML: {exc}")


def _config_problems(config: _UserConfig | None) -> list[SettingProblem]:
    """The configuration file cannot be read (Settings would skip a missing one silently)."""
    return [SettingProblem(
        "INVOICES_CONFIG", _show(config.path), config.problem,
        "Point INVOICES_CONFIG at your TOML configuration file, or unset it to use the "
        "embedded defaults.")] if config and config.problem else []


def _model_fields(model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel] | None]]:
    """Each field name and, for a section, its model (None for a plain value or a mapping)."""
    for name, field in model.model_fields.items():
        kind = field.annotation
        yield name, kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _all_names(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, section in _model_fields(model):
        yield (*prefix, name)
        if section is not None:
            yield from _all_names(section, (*prefix, name))


def _unknown(names: Mapping[str, Any], model: type[BaseModel],
             prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Keys of ``names`` (nested like the model) that are no setting of ``model``."""
    fields = dict(_model_fields(model))
    for key, value in names.items():
        if key not in fields:
            yield (*prefix, key)
        elif (section := fields[key]) is not None and isinstance(value, Mapping):
            yield from _unknown(value, section, (*prefix, key))


def _nest(loc: tuple[str, ...]) -> dict[str, Any]:
    return {loc[0]: _nest(loc[1:]) if len(loc) > 1 else None}


def _lookup(data: Mapping[str, Any], loc: tuple[str, ...]) -> Any:
    """The value at ``loc`` in nested tables, or None."""
    value: Any = data
    for part in loc:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _did_you_mean(loc: tuple[str, ...]) -> str:
    known = {"__".join(name): name for name in _all_names(Settings)}
    close = difflib.get_close_matches("__".join(loc).lower(), known, n=1, cutoff=0.8)
    if not close:
        return ""
    name = known[close[0]]
    return f"; did you mean {_env_name(name)} ({_toml_name(name)})?"


_SECRETS = frozenset({"password", "client_secret"})


def _secrets_in_file(config: _UserConfig | None) -> list[SettingProblem]:
    """Secrets written in the configuration file: they belong in the environment only (a
    file is copied, committed and read by more people than the secret should be)."""
    found: list[SettingProblem] = []

    def walk(data: dict[str, Any], loc: tuple[str, ...]) -> None:
        for key, value in data.items():
            if isinstance(value, dict):
                walk(value, (*loc, key))
            elif key in _SECRETS and config is not None:
                variable = "INVOICES_" + "__".join((*loc, key)).upper()
                found.append(SettingProblem(
                    f"{_toml_name((*loc, key))} in {config.path}", "(hidden)",
                    "a secret in a configuration file", f"Remove it and set {variable} in "
                    "the environment of the run instead."))

    if config and config.data:
        walk(config.data, ())
    return found


def _unknown_names(config: _UserConfig | None) -> list[tuple[tuple[str, ...], SettingProblem]]:
    """Keys of the configuration file and INVOICES_* variables that are no setting.

    pydantic-settings ignores unknown keys inside a section and unknown
    variables, so a misspelt name would silently leave the default in place.
    """
    found = []
    if config and config.data:
        found += [(loc, SettingProblem(
            f"{_toml_name(loc)} in {config.path}", _show(_lookup(config.data, loc), loc),
            "not a setting, so it would be ignored" + _did_you_mean(loc),
            "Correct or remove it; README.md (Configuration) lists the settings."))
            for loc in _unknown(config.data, Settings)]
    for variable, value in sorted(os.environ.items()):
        upper = variable.upper()
        if not upper.startswith(_ENV_PREFIX) or upper in _NOT_SETTINGS:
            continue
        loc = tuple(upper.removeprefix(_ENV_PREFIX).lower().split("__"))
        if any(_unknown(_nest(loc), Settings)):
            found.append((loc, SettingProblem(
                f"{variable} (environment variable)", _show(value, loc),
                "not a setting, so it would be ignored" + _did_you_mean(loc),
                "Rename or unset it; README.md (Configuration) lists the variables.")))
    return found


def _field_description(loc: tuple[str, ...]) -> str | None:
    model: type[BaseModel] | None = Settings
    field = None
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        model = dict(_model_fields(model))[part]
    return field.description if field else None


def _validation_problems(exc: ValidationError,
                         reported: set[tuple[str, ...]]) -> list[SettingProblem]:
    """One problem per error, except the unknown names already ``reported``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(part) for part in err["loc"])
        if loc in reported:
            continue
        if err["type"] == "missing":
            problems.append(SettingProblem(
                _label(loc), "(not set)", "required, and set nowhere",
                f"Set it in the file named by INVOICES_CONFIG or with {_env_name(loc)}."))
            continue
        described = _field_description(loc)
        problems.append(SettingProblem(
            _label(loc), _show(err["input"], loc), f"{err['msg']}.",
            "Give it a valid value" + (f" ({described.rstrip('.')})" if described else "")
            + ", or remove it to use the default."))
    return problems


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning an unreadable file or an invalid value into one message.

    Args:
        overrides: keyword arguments for :class:`Settings` (``home`` from ``--home``).

    Raises:
        SettingsError: every problem of the configuration file, the variables and the values.
    """
    config = _user_config()
    unknown = _unknown_names(config)
    problems = [problem for _, problem in unknown] + _secrets_in_file(config)
    if unreadable := _config_problems(config):
        raise SettingsError(unreadable + problems)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(problems + _validation_problems(
            exc, reported={loc for loc, _ in unknown})) from exc
    if problems:
        raise SettingsError(problems)
    return settings


def _home_problems(settings: Settings, writing: bool) -> list[SettingProblem]:
    problem = folder_problem(settings.home, writing=writing)
    return [SettingProblem(_label(("home",)), _show(settings.home), problem,
                           "Choose a folder you can write to, with --home or INVOICES_HOME.")
            ] if problem else []


def _archive_problems(settings: Settings, writing: bool) -> list[SettingProblem]:
    """An archive the run cannot use stops it before anything is sent."""
    url, label = settings.archive.url, _label(("archive", "url"))
    scheme = url_scheme(url)
    hint = (f"Set INVOICES_ARCHIVE__URL to a local folder or s3://bucket/prefix, or unset it "
            f"to archive under {settings.home / 'archive'}.")
    if scheme is not None and scheme not in SCHEMES:
        return [SettingProblem(label, _show(url), f"{scheme}:// archives are not supported",
                               hint)]
    if scheme is None and settings.archive.endpoint_url:
        return [SettingProblem(_label(("archive", "endpoint_url")),
                               settings.archive.endpoint_url,
                               "an endpoint is only used by s3:// archives", hint)]
    years = settings.archive.retention_years
    if scheme is None and years:
        return [SettingProblem(_label(("archive", "retention_years")), str(years),
                               "retention needs an S3 archive with Object Lock; a folder "
                               "cannot keep it", "Unset it, or archive to such a bucket.")]
    try:
        storage = open_storage(settings)
        problem = storage.check(writing)
    except ValueError as exc:  # an S3 URL without a bucket, or misspelt
        problem = str(exc)
    shown = _show(url) if url else str(settings.home / "archive")
    if problem:
        return [SettingProblem(label, shown, problem, hint)]
    if years and writing and (locked := storage.retention_problem()):  # type: ignore[attr-defined]
        return [SettingProblem(_label(("archive", "retention_years")), str(years), locked,
                               "Unset it, or archive to a bucket created with Object Lock.")]
    return []


def _ledger_problem(settings: Settings) -> tuple[str, str] | None:
    """The shown URL and what is wrong with it, or None."""
    raw = settings.ledger_url
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw), "not a SQLAlchemy database URL"
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() != "sqlite":
        problem = _connect_problem(url)
        return (shown, problem) if problem else None
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return shown, ("an in-memory ledger forgets every delivery when the run ends, so the "
                       "next run would deliver everything again")
    path = Path(database).absolute()
    if path.parent != settings.home:  # the run creates the home, nothing under it
        if not path.parent.is_dir():
            return shown, (f"the folder {path.parent} does not exist or is not a folder (SQLite "
                           "would only say 'unable to open database file')")
        if problem := folder_problem(path.parent, writing=True):
            return shown, problem
    if path.is_dir():
        return shown, f"{path} is a folder, not a database file"
    if path.exists():
        try:
            with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
                conn.execute("PRAGMA schema_version")
        except sqlite3.Error as exc:
            return shown, f"{path} cannot be opened as a SQLite database: {exc}"
    return None


def _connect_problem(url: sa.URL) -> str | None:
    try:
        engine = sa.create_engine(url, connect_args=_CONNECT_TIMEOUT.get(
            url.get_backend_name(), {}))
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ImportError as exc:
        return f"its database driver is not installed ({exc})"
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if url.password:
            reason = reason.replace(str(url.password), "***")
        return f"cannot connect: {reason}"
    return None


def _ledger_problems(settings: Settings) -> list[SettingProblem]:
    found = _ledger_problem(settings)
    if not found:
        return []
    shown, problem = found
    return [SettingProblem(
        _label(("ledger", "url")), repr(shown), problem,
        "Fix INVOICES_LEDGER__URL (e.g. sqlite:////srv/invoices/ledger.db, in an existing "
        f"folder), or unset it to use {settings.home / 'ledger.db'}.")]


def _templates_problems(settings: Settings) -> list[SettingProblem]:
    root = settings.render.templates_dir.absolute()
    if not root.is_dir():
        problem = "the folder does not exist" if not root.exists() else "not a folder"
    else:
        missing = [name for name in _TEMPLATE_FILES if not (root / name).is_file()]
        if not missing:
            return []
        problem = (f"the folder lacks {', '.join(missing[:4])}"
                   + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
    default = RenderSettings.model_fields["templates_dir"].default
    return [SettingProblem(
        _label(("render", "templates_dir")), _show(root), problem,
        f"Point INVOICES_RENDER__TEMPLATES_DIR at a copy of {default} with your changes "
        f"(`invoices templates check --templates DIR` checks it), or unset it to use {default}.")]


def _rule_problems(settings: Settings) -> list[SettingProblem]:
    """Unknown codes one by one, then whatever else ``validate`` would refuse, now."""
    problems = []
    for code, severity in settings.validation.rules.items():
        if code not in REGISTRY:
            close = difflib.get_close_matches(code, REGISTRY, n=1)
            problems.append(SettingProblem(
                _label(("validation", "rules", code)), repr(severity),
                "no rule has this code" + (f"; did you mean {close[0]}?" if close else ""),
                "Correct or remove it in [validation.rules]; `invoices rules` lists the codes."))
    if not problems:
        try:
            check_rule_settings(settings.validation)
        except ValueError as exc:
            problems.append(SettingProblem(
                _label(("validation", "rules")), _show(settings.validation.rules), str(exc),
                "`invoices rules` lists every rule and its severity."))
    return problems


def _delivery_problems(settings: Settings) -> list[SettingProblem]:
    """Transports the settings choose but cannot serve, found before anything is sent."""
    from pipeline.channels.base import transport_name

    found = []
    for channel in CHANNELS:
        name = transport_name(channel, settings)
        label = f"delivery.transports.{channel} (INVOICES_DELIVERY__TRANSPORTS__{channel.upper()})"
        if name == "smtp" and (channel != "email" or not settings.smtp.host):
            found.append(SettingProblem(
                label, repr(name), "smtp serves the email channel, and needs a relay host",
                "Set INVOICES_SMTP__HOST (and __PORT, __STARTTLS, __USERNAME, __PASSWORD), or "
                "choose outbox."))
        if name == "sftp" and channel == "print" and \
                settings.delivery.print_partner not in settings.sftp:
            found.append(SettingProblem(
                label, repr(name), f"no [sftp.{settings.delivery.print_partner}] section for "
                                   "the print house", "Add it, or choose outbox."))
        if name == "platform" and (channel != "pa" or not settings.pa.configured):
            found.append(SettingProblem(
                label, repr(name), "the platform serves the pa channel, and needs its URL",
                "Set INVOICES_PA__URL, __TOKEN_URL, __CLIENT_ID and __CLIENT_SECRET."))
        if name == "sftp" and channel != "print" and not settings.sftp:
            found.append(SettingProblem(label, repr(name), "no [sftp.<partner>] section",
                                        "Add one per trading partner, or choose outbox."))
    if settings.pa.configured:
        from pipeline.platform import client_for
        try:
            client_for(settings.pa).close()
        except ValueError as exc:
            found.append(SettingProblem("pa (INVOICES_PA__*)", repr(settings.pa.url), str(exc),
                                        "The platform gives a token URL, a client id and a "
                                        "secret with its API access."))
    for partner, drop in settings.sftp.items():
        where = f"[sftp.{partner}]"
        if not drop.known_hosts.is_file():
            found.append(SettingProblem(
                f"{where} known_hosts", str(drop.known_hosts), "no such file",
                "Point it at a known_hosts file holding the server's key (ssh-keyscan)."))
        if drop.key_file is None and drop.password is None:
            found.append(SettingProblem(
                f"{where} key_file / password", "(not set)", "no way to log in",
                f"Set key_file, or INVOICES_SFTP__{partner.upper()}__PASSWORD."))
        elif drop.key_file is not None and not drop.key_file.is_file():
            found.append(SettingProblem(f"{where} key_file", str(drop.key_file),
                                        "no such file", "Point it at the private key."))
    return found


def check_settings(settings: Settings, *, writing: bool = True) -> None:
    """Refuse settings a run cannot work with, before anything starts.

    Args:
        settings: the settings of the run.
        writing: a billing run (home, archive and ledger are written, templates
            rendered); False for ``invoices validate``, which only reads the archive.

    Raises:
        SettingsError: every problem found, each naming the setting, its
            environment variable, the value and what to do.
    """
    home = _home_problems(settings, writing)
    problems = list(home)
    # A problem of the home is not repeated for what defaults to a place under it.
    if not (home and settings.archive.url is None):
        problems += _archive_problems(settings, writing)
    if writing:
        if not (home and settings.ledger.url is None):
            problems += _ledger_problems(settings)
        problems += _templates_problems(settings)
        problems += _delivery_problems(settings)
    problems += _rule_problems(settings)
    if problems:
        raise SettingsError(problems)
