"""The Jinja environment for editor-authored templates.

Sandboxed (templates cannot reach Python internals), autoescaped for HTML,
and strict: an undefined name fails loudly with the template file and line,
because a template editor is not a programmer and a silent blank on an
invoice is worse than a failed render.
"""

from __future__ import annotations

import traceback
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import TemplateError

__all__ = ["make_environment", "render_template", "LOCALES"]

LOCALES = {"fr": "fr_FR", "en": "en_GB", "de": "de_DE"}
_UNITS = {"C62": "pce", "KGM": "kg", "HUR": "h", "DAY": "j", "LTR": "L", "MTR": "m"}


def _locale(context: Any) -> str:
    return LOCALES.get(context.get("lang", "fr"), "fr_FR")


@jinja2.pass_context
def _money(context: Any, value: Decimal, currency: str = "EUR") -> str:
    return format_currency(value, currency, locale=_locale(context))


@jinja2.pass_context
def _date(context: Any, value: date) -> str:
    return format_date(value, format="short" if context.get("lang") != "de" else "medium",
                       locale=_locale(context)) if context.get("lang") != "fr" else \
        value.strftime("%d/%m/%Y")


@jinja2.pass_context
def _qty(context: Any, value: Decimal) -> str:
    return format_decimal(value.normalize(), format="#,##0.###", locale=_locale(context))


@jinja2.pass_context
def _percent(context: Any, value: Decimal) -> str:
    return format_decimal(value.normalize(), format="0.##", locale=_locale(context)) + " %"


def _unit(code: str) -> str:
    return _UNITS.get(code, code)


def make_environment(templates_dir: Path) -> jinja2.Environment:
    """A sandboxed, autoescaping (HTML/XML), StrictUndefined environment over ``templates_dir``."""
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(money=_money, date=_date, qty=_qty, percent=_percent, unit=_unit)
    return env


def _template_location(exc: BaseException, fallback: str) -> str:
    """``file:line`` of the innermost template frame Jinja put in the traceback."""
    where = fallback
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith((".html", ".txt", ".xml")):
            where = f"{frame.filename}:{frame.lineno}"
    return where


def render_template(env: jinja2.Environment, name: str, **context: Any) -> str:
    """Render one template, turning Jinja errors into a TemplateError naming file and line."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or name}:{exc.lineno}: syntax error: {exc.message}. "
                            "Fix the template and run 'invoices run' again.") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{_template_location(exc, name)}: {exc.message}. "
                            "Use only names the document provides.") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{_template_location(exc, name)}: not allowed in a template: "
                            f"{exc}") from exc
