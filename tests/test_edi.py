"""EDIFACT INVOIC D.96A and ANSI X12 810: structure, counts, escaping, truncation,
identifiers never cut, interchanges read back by real parsers (pydifact, pyx12), and
the EDI channel's control numbers and cross-checks."""

import warnings
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydifact.parser import Parser
from pydifact.segmentcollection import Interchange

from pipeline.channels.base import Outgoing
from pipeline.channels.edi import EdiFormatter
from pipeline.channels.transports import OutboxTransport, Parcel
from pipeline.einvoice import crosscheck, edifact, registry, x12
from pipeline.einvoice.en16931 import to_en16931
from pipeline.einvoice.segments import FieldError, segment
from pipeline.journal import Journal
from pipeline.settings import EdiSettings, Settings

SELLER_GLN, BUYER_GLN, SIREN = "3012345000000", "3012345000017", "732829320"
PREPARED = date(2026, 11, 26)
NASTY = "O'Neil + Fils: 50% ?"


def _parse(data: bytes) -> Interchange:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interchange.from_str(data.decode("latin-1"))


@pytest.fixture(scope="module")
def docs(sample_docs):
    first = sample_docs[20]
    nasty = replace(first, buyer=replace(first.buyer, name=NASTY), lines=(
        replace(first.lines[0], description=f"{NASTY} – 5 × 2"), *first.lines[1:]))
    return [nasty, *sample_docs[21:30], next(d for d in sample_docs if d.is_credit_note)]


def test_edifact_interchange_parses_back_with_right_counts(docs) -> None:
    data = edifact.interchange([to_en16931(d) for d in docs], 42, SELLER_GLN, BUYER_GLN,
                               date(2026, 11, 26))
    raw = data.decode("latin-1")
    assert raw.startswith("UNA:+.? '\nUNB+UNOC:3+3012345000000:14+3012345000017:14+")
    interchange = _parse(data)
    messages = list(interchange.get_messages())
    assert len(messages) == len(docs)
    unz = edifact.read(data).segments[-1]  # as written (pydifact's own footer is recomputed)
    assert unz == segment("UNZ", str(len(docs)), "42")
    assert interchange.control_reference == "42"
    for text in raw.split("UNH+")[1:]:  # UNT counts UNH..UNT inclusive
        segments = ("UNH+" + text).split("'\n")
        unt = next(s for s in segments if s.startswith("UNT+"))
        assert int(unt.split("+")[1]) == segments.index(unt) + 1
    first = messages[0]
    names = [s.elements[3] for s in first.segments if s.tag == "NAD"]
    assert names[1] == NASTY  # escaped text round-trips
    items = [s.elements[2][3] for s in first.segments if s.tag == "IMD"]
    assert items[0] == f"{NASTY} - 5 x 2"  # transliterated into UNOC, then round-trips
    bgm = [s.elements for s in first.segments if s.tag == "BGM"][0]
    assert bgm[:2] == ["380", docs[0].number]
    refs = {s.elements[0][0]: s.elements[0][1] for s in first.segments if s.tag == "RFF"}
    assert refs["ON"] == docs[0].po_number and refs["DQ"] == docs[0].delivery_notes[0]


def test_edifact_totals_equal_the_documents(docs) -> None:
    data = edifact.interchange([to_en16931(d) for d in docs], 1, SELLER_GLN, BUYER_GLN,
                               date(2026, 11, 26))
    parsed = registry.get("edifact").read_totals(data)
    for doc in docs:
        got = {k: v for k, v in parsed[doc.number].items() if k != "lines"}
        assert crosscheck.differences(crosscheck.expected_totals(doc), got) == []


def test_x12_counts_control_numbers_and_totals(docs) -> None:
    docs = [replace(docs[0], buyer=replace(docs[0].buyer, name="A*B~C>D")), *docs[1:]]
    data = x12.interchange([to_en16931(d) for d in docs], 7, "732829320", BUYER_GLN,
                           date(2026, 11, 26))
    segments = x12.parse(data)
    isa, gs, ge, iea = segments[0], segments[1], segments[-2], segments[-1]
    assert len(isa) == 17 and isa[13] == "000000007" and iea == ["IEA", "1", "000000007"]
    assert gs[6] == "7" and ge == ["GE", str(len(docs)), "7"]
    starts = [i for i, s in enumerate(segments) if s[0] == "ST"]
    ends = [i for i, s in enumerate(segments) if s[0] == "SE"]
    assert len(starts) == len(ends) == len(docs)
    for st, se in zip(starts, ends, strict=True):
        assert int(segments[se][1]) == se - st + 1 and segments[se][2] == segments[st][2]
    assert ["N1", "BY", "A B C D", "UL", BUYER_GLN] in segments  # separators never in data
    parsed = registry.get("x12").read_totals(data)
    for doc in docs:
        assert crosscheck.differences(crosscheck.by_rate(crosscheck.expected_totals(doc)),
                                      crosscheck.by_rate(parsed[doc.number])) == []


def _outgoing(doc, channel="edi", gln=BUYER_GLN):
    return Outgoing(replace(doc, channel=channel, gln=gln), b"%PDF-1.7 stub", "0" * 64)


@dataclass
class _Sent:
    receipts: list[SimpleNamespace]
    files: list[Parcel]


class _EdiOutbox:
    """The EDI formatter and the outbox transport, as the delivery stage uses them."""

    def __init__(self, folder: Path, settings: EdiSettings, journal: Journal) -> None:
        self.formatter = EdiFormatter(Settings().seller, settings, journal)
        self.transport = OutboxTransport(folder)

    def send(self, items, batch_id: str) -> _Sent:
        formatted = self.formatter.format(items, batch_id)
        for parcel in formatted.parcels:
            self.transport.deliver(parcel)
        return _Sent([SimpleNamespace(number=i.doc.number,
                                      error=formatted.failures.get(i.doc.number))
                      for i in items],
                     [p for p in formatted.parcels if not p.name.endswith(".pdf")])


def test_channel_writes_formats_and_increments_control_numbers(docs, tmp_path: Path) -> None:
    settings = EdiSettings(customers={docs[1].customer_id: ["x12"]})
    ledger = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    outbox = _EdiOutbox(tmp_path / "edi", settings, ledger)
    batch = [_outgoing(docs[0]), _outgoing(docs[1]), _outgoing(docs[2], "peppol", None)]
    first = outbox.send(batch, "b-1")
    second = outbox.send([_outgoing(docs[3])], "b-2")
    assert all(r.error is None for r in first.receipts + second.receipts)
    names = sorted(f.name for f in first.files + second.files)
    assert names == sorted([f"{BUYER_GLN}-000001.edi", f"{BUYER_GLN}-000001.x12",
                            f"{docs[2].number}.ubl.xml", f"{BUYER_GLN}-000002.edi"])
    assert (tmp_path / "edi" / f"{docs[0].number}.pdf").exists()
    assert ledger.next_control_number(BUYER_GLN, "edifact") == 3


def _outbox(tmp_path: Path, settings: EdiSettings | None = None) -> _EdiOutbox:
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    return _EdiOutbox(tmp_path / "edi", settings or EdiSettings(), journal)


def _with_texts(doc, name=None, description=None):
    """The document with another buyer name and/or first line description."""
    if name is not None:
        doc = replace(doc, buyer=replace(doc.buyer, name=name))
    if description is not None:
        doc = replace(doc, lines=(replace(doc.lines[0], description=description),
                                  *doc.lines[1:]))
    return doc


@pytest.fixture(scope="module")
def short_doc(sample_docs):
    """A one-line invoice: many variants fit in one fast interchange."""
    return next(d for d in sample_docs if len(d.lines) == 1 and not d.is_credit_note)


def test_issue_9_truncation_never_frees_a_separator(docs, tmp_path: Path) -> None:
    name, description = "N" * 34 + "+Evil", "D" * 69 + "'QTY+47:999999:PCE"
    doc = _with_texts(docs[1], name, description)
    written = edifact.envelope([edifact.body(to_en16931(doc), SELLER_GLN, BUYER_GLN)], 9,
                               SELLER_GLN, BUYER_GLN, PREPARED)
    data = edifact.serialize(written)
    raw = data.decode("latin-1")
    assert "N" * 34 + "?++" in raw and "D" * 69 + "?''" in raw  # cut, then escaped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = [s for s in Parser().parse(raw) if s.tag != "UNA"]
    assert [segment(s.tag, *s.elements) for s in parsed] == written  # field for field
    unh, unt = ([i for i, s in enumerate(parsed) if s.tag == tag][0] for tag in ("UNH", "UNT"))
    assert parsed[unt].elements == [str(unt - unh + 1), parsed[unh].elements[0]]
    assert [s.elements[3] for s in parsed if s.tag == "NAD"][1:] == ["N" * 34 + "+"] * 3
    assert [s.elements[2][3] for s in parsed if s.tag == "IMD"][0] == "D" * 69 + "'"
    assert ["47", "999999", "PCE"] not in [s.elements[0] for s in parsed if s.tag == "QTY"]
    assert parsed[-1].tag == "UNZ" and parsed[-1].elements == ["1", "9"]
    assert crosscheck.interchange_differences("edifact", written, edifact.read(data)) == [[]]
    result = _outbox(tmp_path).send([_outgoing(doc)], "b-1")  # and the channel delivers it
    assert [r.error for r in result.receipts] == [None]
    assert b"N" * 34 + b"?++" in result.files[0].data


def _read_back(fmt, docs):
    """Texts read back per message (buyer name, first description) and the differences."""
    syntax, sender = (edifact, SELLER_GLN) if fmt == "edifact" else (x12, SIREN)
    written = syntax.envelope([syntax.body(to_en16931(d), sender, BUYER_GLN) for d in docs],
                              3, sender, BUYER_GLN, PREPARED)
    reading = syntax.read(syntax.serialize(written))
    differences = crosscheck.interchange_differences(fmt, written, reading)
    if fmt == "edifact":
        names = [s.elements[3][0] for s in reading.segments
                 if s.tag == "NAD" and s.elements[0] == ("BY",)]
        items = [s.elements[2][3] for s in reading.segments if s.tag == "IMD"]
    else:
        names = [s.elements[1][0] for s in reading.segments
                 if s.tag == "N1" and s.elements[0] == ("BY",)]
        items = [s.elements[4][0] for s in reading.segments if s.tag == "PID"]
    return names, items, differences


LIMITS = {("edifact", "name"): 35, ("edifact", "description"): 70,
          ("x12", "name"): 60, ("x12", "description"): 80}


@pytest.mark.parametrize("fmt, char", [("edifact", c) for c in "?'+:"]
                         + [("x12", c) for c in "*~>"])
@pytest.mark.parametrize("field", ["name", "description"])
def test_a_separator_at_every_position_reads_back_as_written(short_doc, fmt, char,
                                                             field) -> None:
    limit = LIMITS[(fmt, field)]
    base = ("Ab" * limit)[:limit + 3]
    texts = [base[:p] + run + base[p + len(run):]  # positions 0 .. limit + 1: the boundary
             for run in (char, char * 2) for p in range(limit + 2)]  # limit - 1 and beyond
    docs = [_with_texts(short_doc, **{field: text}) for text in texts]
    names, items, differences = _read_back(fmt, docs)
    assert differences == [[]] * len(docs)
    read = names if field == "name" else items
    if fmt == "edifact":
        assert read == [text[:limit] for text in texts]
    else:  # no release character in X12: separators become spaces, never data
        assert read == [text.replace(char, " ")[:limit].strip() for text in texts]


def test_identifiers_are_never_cut(docs) -> None:
    too_long = "FA2026-" + "7" * 16  # 23 characters: X12 BIG02 allows 22
    inv = to_en16931(replace(docs[1], number=too_long))
    with pytest.raises(FieldError, match=r"X12 BIG02 \(invoice number\) 'FA2026-7+' has 23 "
                                         r"characters, the element allows at most 22"):
        x12.interchange([inv], 1, SIREN, BUYER_GLN, PREPARED)
    assert too_long in edifact.interchange([inv], 1, SELLER_GLN, BUYER_GLN,
                                           PREPARED).decode("latin-1")  # an..35
    inv = to_en16931(replace(docs[1], number="F" * 36))
    with pytest.raises(FieldError, match=r"BGM 1004 \(invoice number\) .* at most 35"):
        edifact.interchange([inv], 1, SELLER_GLN, BUYER_GLN, PREPARED)
    with pytest.raises(FieldError, match="X12 BIG04"):
        x12.body(to_en16931(replace(docs[1], po_number="PO*1")), SIREN, BUYER_GLN)


def test_channel_fails_an_x12_invoice_whose_number_is_too_long(docs, tmp_path: Path) -> None:
    too_long, ok = replace(docs[1], number="FA2026-" + "7" * 16), docs[2]
    outbox = _outbox(tmp_path, EdiSettings(customers={too_long.customer_id: ["x12"],
                                                      ok.customer_id: ["x12"]}))
    result = outbox.send([_outgoing(too_long), _outgoing(ok)], "b-1")
    errors = {r.number: r.error for r in result.receipts}
    assert "BIG02 (invoice number)" in errors[too_long.number]
    assert "at most 22" in errors[too_long.number]
    assert errors[ok.number] is None  # the interchange goes out without it
    [file] = result.files
    assert file.numbers == (ok.number,) and file.name == f"{BUYER_GLN}-000001.x12"
    data = (tmp_path / "edi" / file.name).read_bytes()
    assert too_long.number[:22].encode() not in data and ok.number.encode() in data
    assert not (tmp_path / "edi" / f"{too_long.number}.pdf").exists()


def _drop_first(tag):
    def corrupt(segments):
        index = next(i for i, s in enumerate(segments) if s.tag == tag)
        return segments[:index] + segments[index + 1:]
    return corrupt


def _change(tag, qualifier, position, value):
    def corrupt(segments):
        index = next(i for i, s in enumerate(segments)
                     if s.tag == tag and s.elements[0] == (qualifier,))
        elements = list(segments[index].elements)
        elements[position] = (value,)
        return [*segments[:index], replace(segments[index], elements=tuple(elements)),
                *segments[index + 1:]]
    return corrupt


@pytest.mark.parametrize("fmt, corrupt, first_error, second_error", [
    ("edifact", _drop_first("PRI"), "UNT01 says", "withheld"),
    ("edifact", _change("NAD", "BY", 3, "Evil"), "NAD04: expected", "withheld"),
    ("edifact", _change("UNZ", "2", 0, "3"), "UNZ01 says '3' messages", "UNZ01 says"),
    ("x12", _drop_first("PID"), "pyx12: SE count of", "withheld"),
    ("x12", _change("N1", "BY", 1, "Evil"), "N102: expected", "withheld"),
    ("x12", _change("GE", "2", 0, "3"), "pyx12: GE count of 3", "pyx12: GE count of 3"),
], ids=["edifact-drop", "edifact-change", "edifact-unz", "x12-drop", "x12-change", "x12-ge"])
def test_a_corrupted_interchange_is_caught_and_withheld(docs, tmp_path: Path, monkeypatch, fmt,
                                                        corrupt, first_error,
                                                        second_error) -> None:
    syntax = edifact if fmt == "edifact" else x12
    real = syntax.serialize
    monkeypatch.setattr(syntax, "serialize", lambda segments: real(corrupt(list(segments))))
    first, second = docs[0], docs[1]
    outbox = _outbox(tmp_path, EdiSettings(customers={first.customer_id: [fmt],
                                                      second.customer_id: [fmt]}))
    result = outbox.send([_outgoing(first), _outgoing(second)], "b-1")
    errors = {r.number: r.error for r in result.receipts}
    assert first_error in errors[first.number]
    assert "read back differs from what was written" in errors[first.number]
    assert second_error in errors[second.number]
    assert result.files == [] and not list((tmp_path / "edi").glob("*"))


def test_channel_withholds_an_interchange_whose_totals_differ(docs, tmp_path: Path,
                                                              monkeypatch) -> None:
    real = edifact.body

    def one_cent_off(inv, *args):  # a fault in the mapping: written and read back alike
        if inv.number != docs[0].number:
            return real(inv, *args)
        due = segment("MOA", ("9", f"{inv.payable:.2f}"))
        return [segment("MOA", ("9", f"{inv.payable + Decimal('0.01'):.2f}")) if s == due
                else s for s in real(inv, *args)]

    monkeypatch.setattr(edifact, "body", one_cent_off)
    result = _outbox(tmp_path).send([_outgoing(docs[0]), _outgoing(docs[1])], "b-1")
    errors = {r.number: r.error for r in result.receipts}
    assert "due: document" in errors[docs[0].number]
    assert "withheld" in errors[docs[1].number]
    assert result.files == [] and not list((tmp_path / "edi").glob("*.edi"))
