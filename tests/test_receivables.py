"""Receivables: bank statements (camt.053) in."""

from __future__ import annotations

import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipeline.journal import Journal
from pipeline.receivables.camt import StatementError, read_statement
from pipeline.receivables.matching import match
from pipeline.receivables.payments import PaymentBook, import_statements
from tests.conftest import INVOICES_CLI

BY_HAND = Path(__file__).parent / "data" / "camt053_by_hand.xml"


def test_a_statement_written_by_hand_reads_with_the_right_amounts_and_references() -> None:
    (statement,) = read_statement(BY_HAND.read_bytes(), str(BY_HAND))
    assert statement.statement_id == "STMT-2026-11-27"
    assert statement.iban == "FR7630004000050000123456789"
    found = {p.key: p for p in statement.payments}
    # the own debit (entry 3) and the pending entry (5) are not payments
    assert sorted(found) == ["STMT-2026-11-27/1/1", "STMT-2026-11-27/2/1", "STMT-2026-11-27/2/2",
                             "STMT-2026-11-27/2/3", "STMT-2026-11-27/4/1"]
    single = found["STMT-2026-11-27/1/1"]
    assert (single.kind, single.amount, single.currency) == ("credit", Decimal("1234.56"), "EUR")
    assert single.value_date == date(2026, 11, 27)
    assert single.creditor_reference == "RF31FA2026000123" and single.remittance is None
    assert single.debtor_name == "Boulangerie Martin SARL"
    assert single.debtor_iban == "FR7610278060010002020280124"
    assert (single.bank_reference, single.end_to_end_id) == ("BNP-27-000001", "E2E-MARTIN-0042")
    batch = [found[f"STMT-2026-11-27/2/{n}"] for n in (1, 2, 3)]
    assert [p.amount for p in batch] == [Decimal("1000.00"), Decimal("2000.00"),
                                         Decimal("300.10")]
    assert sum(p.amount for p in batch) == Decimal("3300.10")  # the entry's amount
    assert [p.value_date for p in batch] == [date(2026, 11, 28)] * 3
    assert batch[0].remittance == "Facture FA2026-000124 et FA2026-000125"
    assert batch[0].end_to_end_id is None  # NOTPROVIDED is no reference
    assert batch[1].remittance == "REGLEMENT FA 2026 000130"
    assert batch[2].remittance is None and batch[2].debtor_name == "Cabinet Petit & Associés"
    assert [p.bank_reference for p in batch] == ["BNP-27-000002-1", "BNP-27-000002-2",
                                                 "BNP-27-000002-3"]
    returned = found["STMT-2026-11-27/4/1"]
    assert (returned.kind, returned.amount) == ("return", Decimal("-450.00"))
    assert returned.value_date == date(2026, 11, 26)
    assert returned.end_to_end_id == "SDD-FA2026-000099"
    assert returned.debtor_iban == "FR7617569000407823456789012"


@pytest.mark.parametrize(("change", "message"), [
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">1234.56</Amt>\n        <CdtDbtInd>",
                         b"<Amt Ccy=\"EUR\">12,34</Amt>\n        <CdtDbtInd>"),
     "entry 1: Amt '12,34' is not an amount"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"EUR\">300.11</Amt>"),
     "entry 2: its transactions add up to 3300.11, the entry says 3300.10"),
    (lambda x: x.replace(b"<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts>", b"<Sts>", 1),
     "entry 1: CdtDbtInd is None"),
    (lambda x: x.replace(b"BkToCstmrStmt", b"BkToCstmrDbtCdtNtfctn"),
     "not a camt.053 statement"),
    (lambda x: x[:200], "not XML"),
    (lambda x: x.replace(b"<Document", b'<!DOCTYPE Document [<!ENTITY r "FA2026-000123">]>'
                         b"<Document", 1), "a statement with a DOCTYPE is refused"),
    (lambda x: x.replace(b"<ValDt><Dt>2026-11-28</Dt>", b"<ValDt><Dt>2026-11-31</Dt>"),
     "entry 2: ValDt/Dt '2026-11-31' is not a date"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"EUR\">1E+30</Amt>"),
     "entry 2 TxDtls 3: Amt '1E\\+30' is not an amount"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"EUR\">"
                         b"99999999999999999999.99</Amt>"), "entry 2 TxDtls 3: Amt '9+"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"eur\">300.10</Amt>"),
     "entry 2 TxDtls 3: Amt Ccy 'eur' is not an ISO 4217 currency in use"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"FRF\">300.10</Amt>"),
     "entry 2 TxDtls 3: Amt Ccy 'FRF' is not an ISO 4217 currency in use"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"USD\">300.10</Amt>"),
     "entry 2 TxDtls 3: Amt in USD, its entry in EUR"),
])
def test_a_bad_statement_names_the_file_entry_and_element(change, message, tmp_path) -> None:
    with pytest.raises(StatementError, match="camt053_by_hand.xml: .*" + message.replace(
            "(", r"\(")):
        read_statement(change(BY_HAND.read_bytes()), str(BY_HAND))


def test_importing_a_statement_twice_adds_nothing(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    first = import_statements([BY_HAND], journal)
    assert (first.read, first.added, first.already) == (5, 5, 0)
    assert first.by_kind == {"credit": 4, "return": 1}
    again = import_statements([BY_HAND, BY_HAND.parent], journal)
    assert (again.added, again.already) == (0, 10)
    assert PaymentBook(journal).count() == 5
    journal.dispose()


def _variant(tmp_path: Path, name: str, *changes: tuple[bytes, bytes]) -> Path:
    data = BY_HAND.read_bytes()
    for old, new in changes:
        assert old in data
        data = data.replace(old, new)
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def test_what_a_bank_sends_twice_counts_once_and_a_clash_of_ids_is_loud(tmp_path) -> None:
    """The same transactions under another statement id are the bank's duplicate (same
    reference, amount and value date); a statement id reused with other money is refused
    whole, naming both files, and the morning's other files are imported all the same."""
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    again = _variant(tmp_path, "again.xml", (b"<Id>STMT-2026-11-27</Id>",
                                             b"<Id>STMT-2026-11-27-CORR</Id>"))
    clash = _variant(tmp_path, "clash.xml", (b"<Amt Ccy=\"EUR\">300.10</Amt>",
                                             b"<Amt Ccy=\"EUR\">300.20</Amt>"),
                     (b"<Amt Ccy=\"EUR\">3300.10</Amt>", b"<Amt Ccy=\"EUR\">3300.20</Amt>"))
    broken = _variant(tmp_path, "broken.xml", (b"<ValDt><Dt>2026-11-28</Dt>",
                                               b"<ValDt><Dt>2026-11-31</Dt>"))
    report = import_statements([BY_HAND, broken, again, clash, tmp_path / "gone.xml"], journal)
    assert (report.files, report.added, report.duplicates) == (2, 5, 5)
    assert set(report.problems) == {str(broken), str(clash), str(tmp_path / "gone.xml")}
    assert "is not a date" in report.problems[str(broken)]
    assert "STMT-2026-11-27/2/3 was imported from" in report.problems[str(clash)]
    assert "300.10 EUR on 2026-11-28, here it says 300.20 EUR" in report.problems[str(clash)]
    assert PaymentBook(journal).count() == 5


def test_a_credit_reversing_our_own_debit_is_not_a_receivable(tmp_path) -> None:
    changed = _variant(tmp_path, "reversal.xml", (
        b"<CdtDbtInd>DBIT</CdtDbtInd>\n        <RvslInd>true</RvslInd>",
        b"<CdtDbtInd>CRDT</CdtDbtInd>\n        <RvslInd>true</RvslInd>"))
    [statement] = read_statement(changed.read_bytes(), str(changed))
    assert {p.kind for p in statement.payments} == {"credit"}
    assert len(statement.payments) == 4 and statement.skipped == 3


def test_ar_import_on_the_command_line(tmp_path: Path) -> None:
    command = [str(INVOICES_CLI), "ar", "import", str(BY_HAND), "--home", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    said = " ".join(first.stdout.split())
    assert said == "1 statement file(s): 5 payments read, 5 new, 0 already imported, 4 credit, " \
                   "1 return; 2 entries not receivables (pending, own debits)", said
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "0 new, 5 already imported" in " ".join(again.stdout.split())


def _items() -> pl.DataFrame:
    rows = [("FA2026-000001", "C1", "100.00", 1), ("FA2026-000002", "C1", "50.00", 2),
            ("FA2026-000003", "C1", "70.00", 3), ("FA2026-000004", "C2", "200.00", 1),
            ("FA2026-000005", "C2", "200.00", 2)]
    return pl.DataFrame({
        "invoice_number": [r[0] for r in rows], "customer_id": [r[1] for r in rows],
        "cents": [int(Decimal(r[2]) * 100) for r in rows],
        "due_date": [date(2026, 10, r[3]) for r in rows]})


def _payments(*rows: tuple[str, str, str | None, str | None, str | None]) -> pl.DataFrame:
    return pl.DataFrame({
        "key": [r[0] for r in rows],
        "cents": [int(Decimal(r[1]) * 100) for r in rows],
        "value_date": [date(2026, 11, 1 + n) for n in range(len(rows))],
        "debtor_iban": pl.Series([r[2] for r in rows], dtype=pl.String),
        "creditor_reference": pl.Series([r[3] for r in rows], dtype=pl.String),
        "remittance": pl.Series([r[4] for r in rows], dtype=pl.String)})


def test_matching_passes_partial_payments_overpayments_and_unknown_payers() -> None:
    known = pl.DataFrame({"iban": ["FR76I1", "FR76I2"], "customer_id": ["C1", "C2"]})
    payments = _payments(
        ("p1", "100.00", None, None, "Facture fa 2026 000001"),  # named, spaced, lower case
        ("p2", "120.00", "FR76I1", None, None),                 # = B + C, earliest first
        ("p5", "250.00", "FR76I2", "RF16FA2026000005", None),   # E, and 50 too much
        ("p6", "40.00", "FR76I2", None, "acompte FA2026-000004"),  # part of D
        ("p3", "200.00", "FR76I2", None, None),                 # D has only 160 left
        ("p4", "30.00", "DE00UNKNOWN", None, None),             # nobody we know
        # a mistyped number naming another customer's invoice is not taken at its word
        ("p7", "70.00", "FR76I2", None, "FA2026-000003"),
        ("p8", "75.00", None, None, "FA2026-000003"))
    result = match(payments, _items(), known)
    placed = {(r["payment_key"], r["invoice_number"]): (r["cents"], r["pass"], r["confidence"])
              for r in result.allocations.iter_rows(named=True)}
    assert placed == {
        ("p1", "FA2026-000001"): (10000, "reference", 1.0),
        ("p5", "FA2026-000005"): (20000, "reference", 1.0),
        ("p6", "FA2026-000004"): (4000, "reference", 1.0),
        ("p2", "FA2026-000002"): (5000, "iban_sum", 0.8),
        ("p2", "FA2026-000003"): (7000, "iban_sum", 0.8)}
    left = {r["payment_key"]: (r["cents"], r["why"]) for r in result.unallocated.iter_rows(
        named=True)}
    assert left == {"p5": (5000, "overpaid: the rest"),
                    "p3": (20000, "known payer, no item matches the amount"),
                    "p4": (3000, "unknown payer, naming no invoices for exactly this amount"),
                    "p7": (7000, "known payer, no item matches the amount"),
                    "p8": (7500, "unknown payer, naming no invoices for exactly this amount")}
    assert result.counts() == {"reference": 3, "fuzzy_reference": 0, "iban_amount": 0,
                               "iban_sum": 1, "subset_sum": 0, "oldest_first": 0}
    # allowed, the last pass gives a known payer's money to its earliest item, in the
    # order the money came (p5's rest, then p3), never beyond what the item owes
    with_oldest = match(payments, _items(), known, oldest_first=True).allocations
    last = with_oldest.filter(pl.col("pass") == "oldest_first")
    assert dict(last.select("payment_key", "cents").iter_rows()) == {"p5": 5000, "p3": 11000}
    assert with_oldest.filter(pl.col("invoice_number") == "FA2026-000004")["cents"].sum() == 20000


def test_one_item_is_never_paid_twice_and_the_exact_amount_pass() -> None:
    known = pl.DataFrame({"iban": ["FR76I2"], "customer_id": ["C2"]})
    payments = _payments(("a", "200.00", "FR76I2", None, None),
                         ("b", "200.00", "FR76I2", None, None),
                         ("c", "200.00", "FR76I2", None, None))
    result = match(payments, _items(), known)
    placed = {(r["payment_key"], r["invoice_number"], r["cents"], r["confidence"])
              for r in result.allocations.iter_rows(named=True)}
    # a and b both fit D and E exactly: each item once, earliest payment to earliest item
    assert ("a", "FA2026-000004", 20000, 0.7) in placed
    assert sum(c for _, n, c, _ in placed if n == "FA2026-000005") == 20000
    assert result.allocations.group_by("invoice_number").agg(pl.col("cents").sum())[
        "cents"].max() == 20000
    assert set(result.unallocated["payment_key"]) == {"c"}


def test_open_items_are_matched_and_a_person_places_the_rest(tmp_path: Path) -> None:
    from pipeline.receivables.open_items import OpenItems, allocate, match_payments

    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    import_statements([BY_HAND], journal)
    rows = [("FA2026-000123", "C1", "1234.56"), ("FA2026-000124", "C2", "400.00"),
            ("FA2026-000125", "C2", "600.00"), ("FA2026-000130", "C3", "2000.00"),
            ("FA2026-000131", "C4", "500.00"), ("AV2026-000001", "C4", "200.00")]
    index = pl.DataFrame({
        "invoice_number": [r[0] for r in rows], "customer_id": [r[1] for r in rows],
        "invoice_type": ["credit_note" if r[0].startswith("AV") else "invoice" for r in rows],
        "issue_date": [date(2026, 10, 1)] * 6, "due_date": [date(2026, 11, 1)] * 6,
        "total_gross": pl.Series([Decimal(r[2]) for r in rows], dtype=pl.Decimal(18, 2)),
        "currency": ["EUR"] * 6,
        "credited_invoice_number": [None] * 5 + ["FA2026-000131"]})
    book = OpenItems(journal)
    assert book.refresh(index) == 6 and book.refresh(index) == 0
    report = match_payments(journal)
    assert report.by_pass == {"reference": 3, "fuzzy_reference": 0, "iban_amount": 0,
                              "iban_sum": 0, "subset_sum": 0, "oldest_first": 0}
    assert dict(report.unallocated.select("payment_key", "why").iter_rows()) == {
        "STMT-2026-11-27/2/3": "unknown payer, naming no invoices for exactly this amount",
        "STMT-2026-11-27/4/1": "a return of no credit we hold"}
    still_open = dict(book.open().select("invoice_number", "cents").iter_rows())
    assert still_open == {"FA2026-000131": 30000}  # 500.00 less the 200.00 credit note
    assert allocate(journal, "STMT-2026-11-27/2/3", ["FA2026-000131"], "clerk") == [
        ("FA2026-000131", Decimal("300.00"))]
    assert book.open().is_empty()
    with pytest.raises(ValueError, match="not an open item"):
        allocate(journal, "STMT-2026-11-27/2/3", ["FA2026-000123"], "clerk")
    # 10 cents of that payment are left, and the return of a collection we never saw
    assert match_payments(journal).payments == 2
    journal.dispose()


RETURN_ONLY = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
 <GrpHdr><MsgId>M2</MsgId><CreDtTm>2026-12-02T06:00:00+01:00</CreDtTm></GrpHdr>
 <Stmt><Id>STMT-2026-12-02</Id>
  <Acct><Id><IBAN>FR7630004000050000123456789</IBAN></Id></Acct>
  <Ntry><Amt Ccy="EUR">1234.56</Amt><CdtDbtInd>DBIT</CdtDbtInd><RvslInd>true</RvslInd>
   <Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-12-02</Dt></BookgDt><ValDt><Dt>2026-12-02</Dt></ValDt>
   <NtryDtls><TxDtls><Refs><EndToEndId>E2E-MARTIN-0042</EndToEndId></Refs></TxDtls></NtryDtls>
  </Ntry></Stmt></BkToCstmrStmt></Document>
"""


def test_a_returned_payment_reopens_the_invoice_it_had_paid(tmp_path: Path) -> None:
    from pipeline.receivables.open_items import OpenItems, match_payments

    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    import_statements([BY_HAND], journal)
    index = pl.DataFrame({
        "invoice_number": ["FA2026-000123"], "customer_id": ["C1"],
        "invoice_type": ["invoice"], "issue_date": [date(2026, 10, 1)],
        "due_date": [date(2026, 11, 1)],
        "total_gross": pl.Series([Decimal("1234.56")], dtype=pl.Decimal(18, 2)),
        "currency": ["EUR"], "credited_invoice_number": pl.Series([None], dtype=pl.String)})
    book = OpenItems(journal)
    book.refresh(index)
    match_payments(journal)
    assert book.open().is_empty()
    # days later the payer's bank takes the transfer back (same end-to-end id and amount)
    (tmp_path / "later.xml").write_text(RETURN_ONLY)
    import_statements([tmp_path / "later.xml"], journal)
    match_payments(journal)
    assert dict(book.open().select("invoice_number", "cents").iter_rows()) == {
        "FA2026-000123": 123456}
    journal.dispose()


def test_one_receivables_writer_at_a_time(tmp_path) -> None:
    """Two runs matching at once would place a payment twice: the second stops, saying who
    holds the ledger; a dead holder's lease expires."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from pipeline.receivables.lease import LEASE_FOR, LeaseBusy, leases, receivables_lease

    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    with receivables_lease(journal, "run A"):
        with pytest.raises(LeaseBusy, match=r"another receivables run \(run A\)"):
            with receivables_lease(journal, "run B"):
                raise AssertionError("run B must not get in")
    with receivables_lease(journal, "run B"):
        pass
    with journal.engine.begin() as conn:  # run C died holding it, long ago
        conn.execute(leases.update().values(
            holder="run C", expires_at=datetime.now(UTC) - LEASE_FOR - timedelta(minutes=1)))
    with receivables_lease(journal, "run D") as keep:
        with journal.engine.connect() as conn:
            assert conn.execute(sa.select(leases.c.holder)).scalar() == "run D"
        keep()  # a long morning extends its lease between steps
        with journal.engine.begin() as conn:  # ... unless it expired and run E took it
            conn.execute(leases.update().values(holder="run E"))
        with pytest.raises(LeaseBusy, match="expired and another run took it"):
            keep()


def _payment(key: str, cents: int, day: date, e2e: str, kind: str = "credit"):
    from pipeline.receivables.camt import BankPayment

    statement, entry, tx = key.split("/")
    return BankPayment(statement, int(entry), int(tx), kind, Decimal(cents).scaleb(-2), "EUR",
                       day, day, "Client SA", "FR7630001007941234567890185", None, None,
                       f"REF-{key}", e2e)


def test_one_return_takes_back_one_credit_once(tmp_path) -> None:
    """Two monthly direct debits under one mandate reference, then one return: only the
    latest credit before it is taken back, and only once, however often matching runs."""
    from pipeline.receivables.open_items import OpenItems, allocate, match_payments

    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    book = OpenItems(journal)
    index = pl.DataFrame({
        "invoice_number": ["FA1", "FA2", "FA3"], "customer_id": ["C1"] * 3,
        "invoice_type": ["invoice"] * 3, "issue_date": [date(2026, 1, 1)] * 3,
        "due_date": [date(2026, 1, 5), date(2026, 2, 5), date(2026, 3, 5)],
        "total_gross": pl.Series([Decimal("99.00"), Decimal("99.00"), Decimal("100.00")],
                                 dtype=pl.Decimal(18, 2)),
        "currency": ["EUR"] * 3, "credited_invoice_number": [None] * 3})
    book.refresh(index)
    PaymentBook(journal).add([_payment("S1/1/1", 9900, date(2026, 1, 5), "MANDATE-42"),
                              _payment("S2/1/1", 9900, date(2026, 2, 5), "MANDATE-42"),
                              _payment("S3/1/1", 12000, date(2026, 3, 5), "MANDATE-43")], "x")
    allocate(journal, "S1/1/1", ["FA1"], "clerk")
    allocate(journal, "S2/1/1", ["FA2"], "clerk")
    allocate(journal, "S3/1/1", ["FA3"], "clerk")
    assert book.open().is_empty()
    PaymentBook(journal).add([_payment("S4/1/1", -9900, date(2026, 2, 12), "MANDATE-42",
                                       "return"),
                              _payment("S5/1/1", -12000, date(2026, 3, 9), "MANDATE-43",
                                       "return")], "y")
    for _ in range(3):
        report = match_payments(journal)
    still = dict(book.open().select("invoice_number", "cents").iter_rows())
    assert still == {"FA2": 9900, "FA3": 10000}  # FA1 stays paid; FA3 reopened once
    # the 20.00 the credit had over (FA3 owed 100.00 of its 120.00) went back too
    assert dict(book.unplaced_payments().select("key", "cents").iter_rows()) == {
        "S3/1/1": 2000, "S5/1/1": -2000}
    assert report.unallocated.is_empty()  # a credit and its return cancel: nothing to do
    # a credit of the same mandate imported late does not move the return: it pays FA2
    PaymentBook(journal).add([_payment("S6/1/1", 9900, date(2026, 2, 10), "MANDATE-42")], "z")
    match_payments(journal)
    assert ("S4/1/1", "S2/1/1") in book.return_pairs().rows()
    assert dict(book.open().select("invoice_number", "cents").iter_rows()) == {"FA3": 10000}


def test_a_return_takes_back_a_credit_of_its_currency_and_account() -> None:
    from pipeline.receivables.matching import pair_returns

    day = date(2026, 2, 1)
    credits = pl.DataFrame({"key": ["EUR", "USD", "OTHER"], "cents": [10000] * 3,
                            "value_date": [day] * 3, "end_to_end_id": ["1"] * 3,
                            "currency": ["EUR", "USD", "EUR"],
                            "debtor_iban": ["FR1", "FR1", "FR2"]})
    back = pl.DataFrame({"key": ["R"], "cents": [-10000], "value_date": [day],
                         "end_to_end_id": ["1"], "currency": ["USD"], "debtor_iban": ["FR1"]})
    assert pair_returns(credits, back).rows() == [("R", "USD")]
    other = back.with_columns(currency=pl.lit("EUR"), debtor_iban=pl.lit("FR2"))
    assert pair_returns(credits, other).rows() == [("R", "OTHER")]  # its own account first
    elsewhere = back.with_columns(currency=pl.lit("EUR"), debtor_iban=pl.lit("FR9"))
    assert pair_returns(credits, elsewhere).height == 1  # none of its account: any in EUR


def test_payments_alike_without_a_bank_reference_are_both_kept(tmp_path) -> None:
    from pipeline.receivables.open_items import OpenItems

    """Two accounts' statements, each with a 1234.56 transfer on the same day, no servicer
    reference and the same payer-chosen end-to-end id, from two payers: two payments."""
    journal = Journal(f"sqlite:///{tmp_path / 'ledger.db'}")
    plain = (b"        <AcctSvcrRef>BNP-27-000001</AcctSvcrRef>\n", b"")
    one = _variant(tmp_path, "one.xml", plain,
                   (b"<EndToEndId>E2E-MARTIN-0042</EndToEndId>", b"<EndToEndId>1</EndToEndId>"))
    two = _variant(tmp_path, "two.xml", plain,
                   (b"<EndToEndId>E2E-MARTIN-0042</EndToEndId>", b"<EndToEndId>1</EndToEndId>"),
                   (b"<Id>STMT-2026-11-27</Id>", b"<Id>OTHER-ACCOUNT-2026-11-27</Id>"),
                   (b"FR76 1027 8060 0100 0202 0280 124", b"FR76 3000 6000 0112 3456 7890 189"))
    report = import_statements([one, two], journal)
    # the two transfers are both kept; the other entries carry the bank's own references,
    # the same in both files: those are the bank's duplicates
    assert (report.added, report.duplicates) == (6, 4), report.problems
    unplaced = OpenItems(journal).unplaced_payments()
    assert sorted(unplaced.filter(pl.col("cents") == 123456)["key"].to_list()) == [
        "OTHER-ACCOUNT-2026-11-27/1/1", "STMT-2026-11-27/1/1"]
