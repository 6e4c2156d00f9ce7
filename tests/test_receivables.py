"""Receivables: bank statements (camt.053) in."""

from __future__ import annotations

import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.journal import Journal
from pipeline.receivables.camt import StatementError, read_statement
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
    assert single.creditor_reference == "RF18FA2026000123" and single.remittance is None
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
     "entry 1: Amt '12,34' is not a number"),
    (lambda x: x.replace(b"<Amt Ccy=\"EUR\">300.10</Amt>", b"<Amt Ccy=\"EUR\">300.11</Amt>"),
     "entry 2: its transactions add up to 3300.11, the entry says 3300.10"),
    (lambda x: x.replace(b"<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts>", b"<Sts>", 1),
     "entry 1: CdtDbtInd is None"),
    (lambda x: x.replace(b"BkToCstmrStmt", b"BkToCstmrDbtCdtNtfctn"),
     "not a camt.053 statement"),
    (lambda x: x[:200], "not XML"),
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


def test_ar_import_on_the_command_line(tmp_path: Path) -> None:
    command = [str(INVOICES_CLI), "ar", "import", str(BY_HAND), "--home", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    said = " ".join(first.stdout.split())
    assert said == "1 statement file(s): 5 payments read, 5 new, 0 already imported, 4 credit, " \
                   "1 return", said
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "0 new, 5 already imported" in " ".join(again.stdout.split())
