"""EDIFACT INVOIC D.96A and ANSI X12 810: structure, counts, escaping, totals read back,
and the EDI channel's control numbers and cross-check."""

import warnings
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pydifact.segmentcollection import Interchange

from pipeline.channels.base import Outgoing
from pipeline.channels.edi import EdiOutbox
from pipeline.einvoice import crosscheck, edifact, x12
from pipeline.einvoice.en16931 import to_en16931
from pipeline.ledger import Ledger
from pipeline.settings import EdiSettings, Settings

SELLER_GLN, BUYER_GLN = "3012345000000", "3012345000017"
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
    unz = interchange.get_footer_segment()
    assert unz.elements == [str(len(docs)), "42"]
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
    parsed = crosscheck.edifact_totals(data)
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
    parsed = crosscheck.x12_totals(data)
    for doc in docs:
        assert crosscheck.differences(crosscheck.by_rate(crosscheck.expected_totals(doc)),
                                      crosscheck.by_rate(parsed[doc.number])) == []


def _outgoing(doc, channel="edi", gln=BUYER_GLN):
    return Outgoing(replace(doc, channel=channel, gln=gln), b"%PDF-1.7 stub", "0" * 64)


def test_channel_writes_formats_and_increments_control_numbers(docs, tmp_path: Path) -> None:
    settings = EdiSettings(customers={docs[1].customer_id: ["x12"]})
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    outbox = EdiOutbox(tmp_path / "edi", Settings().seller, settings, ledger)
    batch = [_outgoing(docs[0]), _outgoing(docs[1]), _outgoing(docs[2], "peppol", None)]
    first = outbox.send(batch, "b-1")
    second = outbox.send([_outgoing(docs[3])], "b-2")
    assert all(r.error is None for r in first.receipts + second.receipts)
    names = sorted(f.name for f in first.files + second.files)
    assert names == sorted([f"{BUYER_GLN}-000001.edi", f"{BUYER_GLN}-000001.x12",
                            f"{docs[2].number}.ubl.xml", f"{BUYER_GLN}-000002.edi"])
    assert (tmp_path / "edi" / f"{docs[0].number}.pdf").exists()
    assert ledger.next_control_number(BUYER_GLN, "edifact") == 3


def test_channel_withholds_an_interchange_whose_totals_differ(docs, tmp_path: Path,
                                                              monkeypatch) -> None:
    real = edifact.interchange

    def one_cent_off(invoices, *args):  # a fault injected into the EDIFACT writer
        data = real(invoices, *args).decode("latin-1")
        due = f"MOA+86:{invoices[0].payable:.2f}'"
        return data.replace(due, f"MOA+86:{invoices[0].payable + Decimal('0.01'):.2f}'",
                            1).encode("latin-1")

    monkeypatch.setattr(edifact, "interchange", one_cent_off)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    outbox = EdiOutbox(tmp_path / "edi", Settings().seller, EdiSettings(), ledger)
    result = outbox.send([_outgoing(docs[0]), _outgoing(docs[1])], "b-1")
    errors = {r.number: r.error for r in result.receipts}
    assert "due: document" in errors[docs[0].number]
    assert "withheld" in errors[docs[1].number]
    assert result.files == [] and not list((tmp_path / "edi").glob("*.edi"))
