"""THE codes module: languages, unit codes, and how the e-invoice formats write numbers.

Every format (CII, UBL, EDIFACT, X12) writes amounts with ``amount``, quantities,
prices and rates with ``number``, and X12's implied-decimal amounts with ``cents``,
so they can never disagree on a digit. Numbers for people (money, dates and
quantities on the PDF and in emails) are formatted by Babel, per language, in
``render/templates.py`` with the locales named here.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

__all__ = ["LANGUAGES", "DEFAULT_LANGUAGE", "LOCALES", "language", "UNIT_CODES",
           "UNIT_SYMBOLS", "X12_UNITS", "amount", "number", "cents"]

LANGUAGES = ("fr", "en", "de")
"""The languages a customer can be written to (templates, message catalogues, emails)."""
DEFAULT_LANGUAGE = "fr"
LOCALES = {"fr": "fr_FR", "en": "en_GB", "de": "de_DE"}
"""The Babel locale of each language."""

UNIT_CODES = frozenset(
    code for line in (Path(__file__).parent / "unit_codes.txt").read_text().splitlines()
    if not line.startswith("#") for code in line.split())
"""UN/ECE Rec 20 and Rec 21 codes EN 16931 accepts (BR-CL-23): the extract's units must be
one of them, and every format writes them as they are (X12 through ``X12_UNITS``)."""
UNIT_SYMBOLS = {"C62": "pce", "KGM": "kg", "HUR": "h", "DAY": "j", "LTR": "L", "MTR": "m"}
"""How the PDF shows a unit (the code itself when it has no symbol here)."""
X12_UNITS = {"C62": "EA", "KGM": "KG", "HUR": "HR", "DAY": "DA", "LTR": "LT", "MTR": "MR"}
"""ANSI X12 355 unit codes of the Rec 20 codes we sell in (EA for any other)."""


def language(code: str | None) -> str:
    """The language to write in: the customer's when we have it, else French."""
    return code if code in LOCALES else DEFAULT_LANGUAGE


def amount(value: Decimal) -> str:
    """Two decimals, as EN 16931 amounts are: ``1234.5`` -> ``'1234.50'``."""
    return f"{value:.2f}"


def number(value: Decimal) -> str:
    """Quantities, prices and rates without trailing zeros, never in exponent notation:
    ``Decimal('20.00')`` -> ``'20'``, ``Decimal('5.50')`` -> ``'5.5'``."""
    return f"{value.normalize():f}"


def cents(value: Decimal) -> str:
    """An amount with two implied decimals (X12 TDS): ``1234.50`` -> ``'123450'``."""
    return str(int((value * 100).to_integral_value()))
