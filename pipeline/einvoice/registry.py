"""The registry of e-invoice formats: one object per format, registered by its own module.

A format builds the bytes that go out (``build``) and reads totals back from bytes
(``read_totals``) with a parser that shares no code with its writer, as a
receiver would: the cross-check compares what it reads with the document before
anything is delivered (``crosscheck``). ``grouping`` says what one file holds:

- ``invoice``: one invoice or credit note (Factur-X, UBL);
- ``message``: one message of another kind (the lifecycle statuses of the PA);
- ``partner``: every invoice of one trading partner in a batch, in one interchange
  with a control number drawn from the journal (EDIFACT, X12).

A format module ends with ``register(EInvoiceFormat(...))``; ``formats()`` and
``get()`` import every module of this package first, so adding a format is adding
its module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from pipeline import keys
from pipeline.codes import number
from pipeline.einvoice.segments import Syntax

__all__ = ["EInvoiceFormat", "BuildContext", "Totals", "Grouping", "TOTALS", "COMMON_TOTALS",
           "FORMATS", "register", "formats", "get", "selectable", "total_key", "one"]

Totals = dict[str, Decimal]
"""Totals by name: ``lines`` (BT-106), ``net`` (BT-109), ``vat`` (BT-110), ``gross``
(BT-112), ``due`` (BT-115), and per rate ``vat <category> <rate>%`` (BT-117) and
``base <category> <rate>%`` (BT-116), the category left out where a format has none."""
Grouping = Literal["invoice", "message", "partner"]
TOTALS = frozenset({"lines", "net", "vat", "gross", "due"})
COMMON_TOTALS = frozenset({"net", "vat", "gross", "due"})
"""The document totals every invoice format carries (X12 has no sum of line nets)."""

DocT = TypeVar("DocT")


@dataclass(frozen=True)
class BuildContext:
    """What a format needs besides the documents: the envelope of an interchange."""

    sender: str = ""
    """The seller as the envelope names it (``EInvoiceFormat.sender``)."""
    receiver: str = ""
    """The partner: the buyer's GLN, else its customer id."""
    control: int = 0
    """The interchange control number (``partner`` grouping)."""
    prepared: date | None = None
    """The date the interchange says it was prepared."""


@dataclass(frozen=True)
class EInvoiceFormat(Generic[DocT]):
    """One e-invoice format: how its bytes are built, and how a receiver reads them back."""

    name: str
    """The name settings use (``[edi] formats``) and control numbers are kept under."""
    title: str
    """The name messages use."""
    grouping: Grouping
    media_type: str
    suffix: str
    """How its file names end (``.ubl.xml``, ``.edi``)."""
    build: Callable[[Sequence[DocT], BuildContext], bytes]
    """The bytes of one file: one document, or one partner's documents (``grouping``).
    Raises ``segments.FieldError`` for an identifier the format cannot carry unaltered."""
    read_totals: Callable[[bytes], dict[str, Totals]]
    """Per document number, the totals a receiver reads from the bytes."""
    totals: frozenset[str] = TOTALS
    """The document totals it carries; VAT and base per rate are always compared."""
    vat_by: Literal["category", "rate"] = "category"
    """``rate`` when it carries no VAT category (X12 TXI): totals are compared per rate."""
    sender: Literal["gln", "siren"] = "gln"
    """How an interchange names the seller: ``[edi] sender_gln`` or the SIREN."""
    syntax: Syntax | None = None
    """A segment syntax (``edifact``, ``x12``): the channel builds each invoice's segments
    first, so one that cannot be written fails alone, then reads the whole interchange
    back segment for segment (``crosscheck.interchange_differences``)."""
    selectable: bool = True
    """Whether customers can be sent it (``[edi] formats``); Factur-X is in every PDF."""

    def file_name(self, key: str, control: int = 0) -> str:
        """``<document>.<suffix>``, or ``<partner>-<control>.<suffix>`` for an interchange."""
        if self.grouping == "partner":
            return f"{keys.safe_component(key)}-{control:06d}{self.suffix}"
        return f"{keys.safe_component(key)}{self.suffix}"


FORMATS: dict[str, EInvoiceFormat[Any]] = {}
_loaded = False


def register(fmt: EInvoiceFormat[DocT]) -> EInvoiceFormat[DocT]:
    """Add a format under its name.

    Raises:
        ValueError: another format already has that name.
    """
    if FORMATS.get(fmt.name, fmt) != fmt:
        raise ValueError(f"e-invoice format {fmt.name!r} registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def formats() -> Mapping[str, EInvoiceFormat[Any]]:
    """Every registered format, once each module of this package has been imported."""
    global _loaded
    if not _loaded:
        package = importlib.import_module(__package__ or "pipeline.einvoice")
        for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
        _loaded = True
    return FORMATS


def get(name: str) -> EInvoiceFormat[Any]:
    """The format registered under ``name`` (the package is imported only when its module
    has not been yet).

    Raises:
        KeyError: no format has that name (the message lists those that do).
    """
    if name in FORMATS:
        return FORMATS[name]
    try:
        return formats()[name]
    except KeyError:
        raise KeyError(f"no e-invoice format {name!r}; registered: "
                       f"{', '.join(sorted(FORMATS))}") from None


def selectable() -> list[str]:
    """The names of the formats customers can be sent (``[edi] formats``)."""
    return sorted(name for name, fmt in formats().items() if fmt.selectable)


def total_key(kind: str, rate: Decimal, category: str | None = None) -> str:
    """The name of a per-rate total: ``vat S 20%``, ``base Z 0%``, or ``vat 20%``."""
    return f"{kind} {category} {number(rate)}%" if category else f"{kind} {number(rate)}%"


def one(documents: Sequence[DocT]) -> DocT:
    """The document of a format grouped per invoice or message.

    Raises:
        ValueError: there is not exactly one.
    """
    if len(documents) != 1:
        raise ValueError(f"one document per file, not {len(documents)}")
    return documents[0]
