"""Cross-check before delivery: totals read back from the artifact actually produced.

Each format's totals are read from its bytes by its own parser
(``EInvoiceFormat.read_totals``: XPath on the XML, pydifact and pyx12 on the
interchanges), which shares no code with its writer, and compared to the cent
with the document model's: the sum of line nets, net, VAT, gross and amount due
where the format carries them, and the VAT and taxable amount of every rate. An
invoice whose artifact differs fails with the differing values; it is never
sent. The extract's own header totals were already compared with the model by
validation (TOTALS_MISMATCH).

An EDI interchange is also read back whole by a receiver's parser (pydifact,
pyx12) and compared with the segments the writer intended, value for value,
with the parser's own envelope checks (segment, message and group counts,
control numbers): totals alone would not notice a name that swallowed the
next element (issue 9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from pipeline.documents import InvoiceDocument
from pipeline.einvoice.facturx import embedded_xml
from pipeline.einvoice.registry import (
    COMMON_TOTALS,
    EInvoiceFormat,
    Totals,
    get,
    total_key,
)
from pipeline.einvoice.segments import Element, Reading, Segment, split_messages

__all__ = ["Totals", "expected_totals", "check", "compare", "check_pdf", "embedded_xml",
           "differences", "by_rate", "interchange_differences"]


def expected_totals(doc: InvoiceDocument, carried: frozenset[str] = COMMON_TOTALS) -> Totals:
    """The model's totals, named as ``registry.Totals``.

    Args:
        doc: the document.
        carried: the document totals the artifact carries (``EInvoiceFormat.totals``);
            VAT and taxable amount per rate are always there.
    """
    model = {"lines": doc.total_net, "net": doc.total_net, "vat": doc.total_vat,
             "gross": doc.total_gross, "due": doc.total_gross}
    totals = {name: value for name, value in model.items() if name in carried}
    for row in doc.vat_breakdown:
        totals[total_key("vat", row.rate, row.category)] = row.vat
        totals[total_key("base", row.rate, row.category)] = row.base
    return totals


def compare(fmt: EInvoiceFormat[Any], docs: Sequence[InvoiceDocument],
            read: Callable[[], dict[str, Totals]]) -> dict[str, list[str]]:
    """Per document, how the totals ``read`` returns differ from the model's (empty: all
    agree); a reader that fails fails every document it was to read.

    Args:
        fmt: the format read (which totals it carries, with or without VAT category).
        docs: the documents the artifact carries.
        read: the format's parser applied to the artifact, per document number.
    """
    try:
        found = read()
    except Exception as exc:  # whatever stops our reader would stop a receiver's
        problem = f"cannot read the {fmt.title} totals back: {type(exc).__name__}: {exc}"
        return {doc.number: [problem] for doc in docs}
    result = {}
    for doc in docs:
        actual = found.get(doc.number)
        if actual is None:
            result[doc.number] = [f"no {fmt.title} document numbered {doc.number!r} is read "
                                  "back"]
            continue
        expected = expected_totals(doc, fmt.totals)
        if fmt.vat_by == "rate":
            expected, actual = by_rate(expected), by_rate(actual)
        result[doc.number] = differences(expected, actual)
    return result


def check(fmt: EInvoiceFormat[Any], docs: Sequence[InvoiceDocument], data: bytes
          ) -> dict[str, list[str]]:
    """Per document, how the totals ``fmt.read_totals`` reads from ``data`` differ from the
    model's (empty: all agree)."""
    return compare(fmt, docs, lambda: fmt.read_totals(data))


def check_pdf(doc: InvoiceDocument, pdf: bytes) -> list[str]:
    """Differences between the model and the Factur-X XML inside ``pdf`` (empty: all agree)."""
    return check(get("facturx"), [doc], pdf)[doc.number]


def by_rate(totals: Totals) -> Totals:
    """Per-rate totals keyed by rate only (X12 TXI carries no VAT category): ``vat S 20%``
    becomes ``vat 20%``, and categories that share a rate add up."""
    found: Totals = {}
    for key, value in totals.items():
        parts = key.split()
        if len(parts) == 3 and parts[0] in ("vat", "base"):
            key = f"{parts[0]} {parts[2]}"
        found[key] = found.get(key, Decimal(0)) + value
    return found


def differences(expected: Totals, actual: Totals) -> list[str]:
    """Every total that differs, with both values."""
    keys = sorted(set(expected) | set(actual))
    return [f"{k}: document {expected.get(k)} != artifact {actual.get(k)}"
            for k in keys if expected.get(k) != actual.get(k)]


# Interchanges read back whole, segment for segment.
_SHOWN = 5  # differences listed per message; a shifted segment makes every later one differ


def _show(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _element_differences(name: str, tag: str, written: tuple[Element, ...],
                         read: tuple[Element, ...]) -> list[str]:
    found = []
    for position in range(max(len(written), len(read))):
        mine = written[position] if position < len(written) else ()
        theirs = read[position] if position < len(read) else ()
        for part in range(max(len(mine), len(theirs))):
            want = mine[part] if part < len(mine) else None
            got = theirs[part] if part < len(theirs) else None
            if want != got:
                ref = f"{tag}{position + 1:02d}" + (
                    f"-{part + 1}" if max(len(mine), len(theirs)) > 1 else "")
                found.append(f"{name} {ref}: expected {_show(want)}, read back {_show(got)}")
    return found


def _segment_differences(where: str, written: Sequence[Segment], read: Sequence[Segment]
                         ) -> list[str]:
    found = []
    if len(written) != len(read):
        found.append(f"{where}: {len(written)} segments written, {len(read)} read back")
    for number, (mine, theirs) in enumerate(zip(written, read, strict=False), start=1):
        name = f"{where} segment {number}"
        if mine.tag != theirs.tag:
            found.append(f"{name}: expected {mine.tag}, read back {theirs.tag}")
        else:
            found += _element_differences(name, mine.tag, mine.elements, theirs.elements)
    if len(found) > _SHOWN:
        found[_SHOWN:] = [f"{where}: {len(found) - _SHOWN} more differences"]
    return found


def interchange_differences(syntax: str, written: Sequence[Segment], reading: Reading
                            ) -> list[list[str]]:
    """Per message written, how the interchange read back differs from what was meant.

    Each message's list holds the differences in its own segments (tag, element and
    component, expected and read-back values), the parser's errors at those
    segments, and whatever concerns the whole interchange (envelope segments, the
    number of messages, errors outside any message), since none of its messages
    can go without the others. All lists empty: the interchange reads back as meant.

    Args:
        syntax: the name of a registered format with a segment syntax (``edifact``, ``x12``).
        written: the segments given to the serializer, UNA aside.
        reading: the serialized bytes as read back (``edifact.read``, ``x12.read``).
    """
    grammar = get(syntax).syntax
    if grammar is None:
        raise ValueError(f"{syntax} is not a segment syntax")
    label, start, end = grammar.MESSAGE
    outside, messages = split_messages(written, start, end)
    outside_read, messages_read = split_messages(reading.segments, start, end)
    owner = {index: n for n, message in enumerate(messages_read) for index, _ in message}
    common: list[str] = []
    own: list[list[str]] = [[] for _ in messages]
    for index, error in reading.errors:
        n = owner.get(index)
        (own[n] if n is not None and n < len(own) else common).append(error)
    if len(messages_read) != len(messages):
        common.append(f"{len(messages)} {label}s written, {len(messages_read)} read back")
    common += _segment_differences("envelope", outside, outside_read)
    for n, message in enumerate(messages):
        theirs = messages_read[n] if n < len(messages_read) else []
        own[n] += _segment_differences(f"{label} {n + 1}", [s for _, s in message],
                                       [s for _, s in theirs])
    return [common + found for found in own]
