"""EDI segments as structured data, shared by the EDIFACT and X12 writers.

A writer builds each segment from plain values (already transliterated and cut
to the element's size, never escaped); one serializer per syntax turns them
into bytes. The same structure, read back from the bytes by a real parser, is
compared value for value before delivery (``crosscheck.interchange_differences``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Protocol

from pipeline.einvoice.en16931 import Invoice
from pipeline.errors import PipelineError, Terminal

__all__ = ["Element", "Segment", "segment", "Reading", "FieldError", "Syntax", "split_messages"]

Element = tuple[str, ...]  # the components of one data element (one for a simple element)


@dataclass(frozen=True)
class Segment:
    """A tag and its elements, unescaped; trailing empty parts are never stored."""

    tag: str
    elements: tuple[Element, ...]


def segment(tag: str, *elements: str | Sequence[str]) -> Segment:
    """A segment whose trailing empty components and elements are dropped.

    Both syntaxes suppress them on the wire, so a value read back compares
    equal to the one intended only if neither side keeps them.
    """
    parts: list[Element] = []
    for value in elements:
        components = [value] if isinstance(value, str) else list(value)
        while components and components[-1] == "":
            components.pop()
        parts.append(tuple(components))
    while parts and not parts[-1]:
        parts.pop()
    return Segment(tag, tuple(parts))


@dataclass(frozen=True)
class Reading:
    """An interchange as a receiver's parser reads it.

    ``errors`` holds what the parser itself objects to, each with the index in
    ``segments`` of the segment it was reading (``len(segments)`` when it
    stopped early or objects to the end of the interchange).
    """

    segments: list[Segment]
    errors: list[tuple[int, str]] = field(default_factory=list)


class FieldError(PipelineError, Terminal):
    """An identifier that cannot be written unaltered (too long, or characters the
    syntax cannot carry): the invoice is not sent in that format."""

    def __init__(self, syntax: str, field_name: str, value: str, problem: str) -> None:
        super().__init__(f"{syntax} {field_name} {value!r} {problem}; identifiers are never "
                         "shortened or altered: correct it in the ERP, or deliver this "
                         "customer another format")


def split_messages(segments: Sequence[Segment], start: str, end: str
                   ) -> tuple[list[Segment], list[list[tuple[int, Segment]]]]:
    """Segments outside any message, and each message (``start`` ... ``end``) with every
    segment's index in ``segments``."""
    outside: list[Segment] = []
    messages: list[list[tuple[int, Segment]]] = []
    current: list[tuple[int, Segment]] | None = None
    for index, seg in enumerate(segments):
        if seg.tag == start:
            current = []
            messages.append(current)
        if current is None:
            outside.append(seg)
        else:
            current.append((index, seg))
        if seg.tag == end:
            current = None
    return outside, messages


class Syntax(Protocol):
    """What the EDIFACT and X12 modules both offer, so the channel treats them alike."""

    MESSAGE: tuple[str, str, str]
    """What one message is called, and the tags that open and close it."""

    def body(self, inv: Invoice, sender: str, receiver: str, /) -> list[Segment]:
        """One invoice's segments, envelope aside."""
        ...

    def envelope(self, bodies: Sequence[Sequence[Segment]], control: int, sender: str,
                 receiver: str, prepared: date, /) -> list[Segment]:
        """The whole interchange around the bodies."""
        ...

    def serialize(self, segments: Sequence[Segment], /) -> bytes:
        """The bytes delivered."""
        ...

    def read(self, data: bytes, /) -> Reading:
        """The bytes as a receiver's parser reads them."""
        ...

    def totals(self, reading: Reading, /) -> dict[str, dict[str, Decimal]]:
        """Per invoice number, the totals in an interchange already read."""
        ...
