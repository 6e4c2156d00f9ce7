"""Templates as editors see them: an override chain, three languages, a sandbox.

A document is rendered with the first template found in
``templates/brands/<brand>/``, then ``templates/customers/<customer_id>/``,
then ``templates/``; its labels come from the message catalogue of its
language (``templates/i18n/<lang>.po``) and its numbers, money and dates are
formatted by Babel for that language. The environment is sandboxed (no
Python internals), autoescaped for HTML and strict: an undefined name fails
with the template file and line, because a silent blank on an invoice is
worse than a failed render.
"""

from __future__ import annotations

import io
import traceback
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, get_currency_precision
from babel.support import Translations
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.codes import DEFAULT_LANGUAGE, LANGUAGES, LOCALES, UNIT_SYMBOLS, language
from pipeline.documents import InvoiceDocument
from pipeline.errors import TemplateError

__all__ = ["TemplateSet", "make_environment", "render_template"]

_DATE_FORMATS = {"fr": "dd/MM/yyyy", "en": "dd/MM/yyyy", "de": "dd.MM.yyyy"}


def _locale(context: Any) -> str:
    return LOCALES[context.get("lang", DEFAULT_LANGUAGE)]


@jinja2.pass_context
def _money(context: Any, value: Decimal, currency: str = "EUR") -> str:
    return format_currency(value, currency, locale=_locale(context))


@jinja2.pass_context
def _price(context: Any, value: Decimal, currency: str = "EUR") -> str:
    """A unit price: the currency's decimals, or up to 4 when the price has them."""
    digits = get_currency_precision(currency)
    shown = value.quantize(Decimal("0.0001")).normalize()
    exponent = shown.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < digits:
        shown = shown.quantize(Decimal(1).scaleb(-digits))
    return format_currency(shown, currency, locale=_locale(context), decimal_quantization=False)


@jinja2.pass_context
def _date(context: Any, value: date) -> str:
    return format_date(value, _DATE_FORMATS[context.get("lang", DEFAULT_LANGUAGE)],
                       locale=_locale(context))


@jinja2.pass_context
def _qty(context: Any, value: Decimal) -> str:
    return format_decimal(value.normalize(), format="#,##0.###", locale=_locale(context))


@jinja2.pass_context
def _percent(context: Any, value: Decimal) -> str:
    return format_decimal(value.normalize(), format="0.##", locale=_locale(context)) + " %"


@jinja2.pass_context
def _country(context: Any, code: str) -> str:
    from babel import Locale
    return Locale.parse(_locale(context)).territories.get(code, code)


def _unit(code: str) -> str:
    return UNIT_SYMBOLS.get(code, code)


FILTERS = {"money": _money, "price": _price, "date": _date, "qty": _qty, "percent": _percent,
           "unit": _unit, "country": _country}


def _translations(templates_dir: Path, lang: str) -> Translations:
    """The compiled message catalogue of one language."""
    with (templates_dir / "i18n" / f"{lang}.po").open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def make_environment(search_path: list[Path] | Path,
                     translations: Translations | None = None) -> jinja2.Environment:
    """A sandboxed, autoescaping (HTML/XML), StrictUndefined environment.

    Args:
        search_path: template directories, first match wins.
        translations: the message catalogue ``_()`` uses (none: labels stay as written).
    """
    paths = [search_path] if isinstance(search_path, Path) else search_path
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader([str(p) for p in paths]),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations or Translations(), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(FILTERS)
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
                            "Fix the template and render again.") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{_template_location(exc, name)}: {exc.message}. "
                            "Use only the names listed in templates/README.md.") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{_template_location(exc, name)}: not allowed in a template: "
                            f"{exc}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name!r} not found "
                            f"(looked in {env.loader.searchpath})") from exc  # type: ignore[union-attr]


@dataclass(frozen=True)
class _Chain:
    dirs: tuple[Path, ...]
    lang: str


class TemplateSet:
    """The templates under one root, resolved per document (override chain + language)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._envs: dict[_Chain, jinja2.Environment] = {}
        self._translations = {lang: _translations(self.root, lang) for lang in LANGUAGES}

    def translations(self, lang: str) -> Translations:
        """The message catalogue of a language (letters build their own environments)."""
        return self._translations[lang]

    def chain(self, brand: str | None, customer_id: str | None) -> tuple[Path, ...]:
        """Existing override directories for a document, most specific first, root last."""
        candidates = []
        if brand:
            candidates.append(self.root / "brands" / brand)
        if customer_id:
            candidates.append(self.root / "customers" / customer_id)
        # Only plain directory names: a brand or customer id can never climb out of the root.
        found = tuple(d for d in candidates
                      if d.parent.parent == self.root and d.name not in ("", ".", "..")
                      and d.is_dir())
        return (*found, self.root)

    def asset_dirs(self) -> list[Path]:
        """Every folder resources may be loaded from: ``assets/`` at each level."""
        return [self.root / "assets", *self.root.glob("brands/*/assets"),
                *self.root.glob("customers/*/assets")]

    def environment(self, doc: InvoiceDocument, lang: str | None = None) -> jinja2.Environment:
        """The environment for a document (cached per override chain and language)."""
        key = _Chain(self.chain(doc.brand, doc.customer_id), lang or language_of(doc))
        if key not in self._envs:
            self._envs[key] = make_environment(list(key.dirs), self._translations[key.lang])
        return self._envs[key]

    def stylesheet(self, doc: InvoiceDocument) -> Path:
        """The invoice stylesheet of the most specific level that has one."""
        for directory in self.chain(doc.brand, doc.customer_id):
            css = directory / "assets" / "invoice.css"
            if css.is_file():
                return css
        raise TemplateError(f"no assets/invoice.css under {self.root}")

    def html(self, doc: InvoiceDocument, lang: str | None = None) -> str:
        """The HTML of one document."""
        lang = lang or language_of(doc)
        name = "credit_note.html" if doc.is_credit_note else "invoice.html"
        return render_template(self.environment(doc, lang), name, doc=doc, lang=lang)


def language_of(doc: InvoiceDocument) -> str:
    """The document's language, French when the customer's is not one we have."""
    return language(doc.language)
