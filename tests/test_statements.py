"""Monthly statements computed by hand, and letters and statements as PDF (fr, en, de)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from babel.numbers import format_currency

from pipeline.codes import LOCALES
from pipeline.documents import Party
from pipeline.errors import TemplateError
from pipeline.receivables.dunning import DunningLetter, plan_dunning
from pipeline.receivables.letters import (
    LetterRenderer,
    Recipient,
    check_letter_templates,
    render_letter,
)
from pipeline.receivables.statements import CustomerStatement, statement_for, statements_for
from pipeline.settings import PROJECT_ROOT, Settings

TEMPLATES = PROJECT_ROOT / "templates"
ITEM_SCHEMA = {"invoice_number": pl.String(), "customer_id": pl.String(),
               "invoice_type": pl.String(), "issue_date": pl.Date(), "due_date": pl.Date(),
               "cents": pl.Int64(), "currency": pl.String(),
               "credited_invoice_number": pl.String()}
PAY_SCHEMA = {"payment_key": pl.String(), "invoice_number": pl.String(), "cents": pl.Int64(),
              "value_date": pl.Date()}
D = date


def items(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(ITEM_SCHEMA, r, strict=True)) for r in rows],
                        schema=ITEM_SCHEMA)


def allocations(*rows: tuple) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(PAY_SCHEMA, r, strict=True)) for r in rows],
                        schema=PAY_SCHEMA)


# Customer C1, February 2026 (every figure below is worked out by hand).
ITEMS = items(
    ("F1", "C1", "invoice", D(2025, 12, 10), D(2026, 1, 9), 100000, "EUR", None),
    ("F2", "C1", "invoice", D(2026, 1, 15), D(2026, 2, 14), 50000, "EUR", None),
    ("A1", "C1", "credit_note", D(2026, 1, 20), D(2026, 1, 20), -10000, "EUR", "F2"),
    ("F3", "C1", "invoice", D(2026, 2, 3), D(2026, 3, 5), 25000, "EUR", None),
    ("A2", "C1", "credit_note", D(2026, 2, 10), D(2026, 2, 10), -20000, "EUR", "F1"),
    ("F4", "C1", "invoice", D(2026, 3, 2), D(2026, 4, 1), 99999, "EUR", None),   # after
    ("G1", "C2", "invoice", D(2026, 2, 5), D(2026, 3, 7), 70000, "EUR", None),   # another
    ("H1", "C3", "invoice", D(2025, 11, 5), D(2025, 12, 5), 30000, "EUR", None),  # paid
)
PAYMENTS = allocations(
    ("P1", "F1", 30000, D(2026, 1, 25)),     # before the month
    ("P2", "F1", 50000, D(2026, 2, 12)),     # one payment, two invoices
    ("P2", "F2", 10000, D(2026, 2, 12)),
    ("P3", "F2", 5000, D(2026, 2, 12)),
    ("R1", "F1", -50000, D(2026, 2, 20)),    # P2's part for F1 came back (returned)
    ("P4", "F3", 25000, D(2026, 3, 3)),      # after the month
    ("P9", "H1", 30000, D(2025, 12, 1)),
)


def test_hand_computed_statement() -> None:
    s = statement_for("C1", ITEMS, PAYMENTS, D(2026, 2, 1))
    assert s is not None
    assert (s.statement_id, s.period_start, s.period_end) == (
        "S-C1-2026-02-EUR", D(2026, 2, 1), D(2026, 2, 28))
    # before February: F1 + F2 - A1 - P1 = 1000 + 500 - 100 - 300
    assert s.opening_balance == Decimal("1100.00")
    assert [(x.date, x.kind, x.reference, x.invoices, x.debit, x.credit, x.balance)
            for x in s.lines] == [
        (D(2026, 2, 3), "invoice", "F3", (), Decimal("250.00"), Decimal("0.00"),
         Decimal("1350.00")),
        (D(2026, 2, 10), "credit_note", "A2", ("F1",), Decimal("0.00"), Decimal("200.00"),
         Decimal("1150.00")),
        (D(2026, 2, 12), "payment", "P2", ("F1", "F2"), Decimal("0.00"), Decimal("600.00"),
         Decimal("550.00")),
        (D(2026, 2, 12), "payment", "P3", ("F2",), Decimal("0.00"), Decimal("50.00"),
         Decimal("500.00")),
        (D(2026, 2, 20), "payment_return", "R1", ("F1",), Decimal("500.00"), Decimal("0.00"),
         Decimal("1000.00")),
    ]
    assert s.lines[0].due_date == D(2026, 3, 5)
    assert (s.total_debit, s.total_credit) == (Decimal("750.00"), Decimal("850.00"))
    assert s.closing_balance == Decimal("1000.00")
    # open on 28 February: F1 1000-200-300-500+500 = 500, due 9 Jan (50 days: 31-60);
    # F2 500-100-100-50 = 250, due 14 Feb (14 days: 1-30); F3 250, due 5 March (not due)
    assert s.aged == (("not due", Decimal("250.00")), ("1-30", Decimal("250.00")),
                      ("31-60", Decimal("500.00")), ("61-90", Decimal("0.00")),
                      ("over 90", Decimal("0.00")))
    assert s.aged_total == s.closing_balance and s.overdue == Decimal("750.00")


def test_no_statement_without_balance_or_movement() -> None:
    assert statement_for("C3", ITEMS, PAYMENTS, D(2026, 2, 1)) is None   # paid in December
    assert statement_for("C9", ITEMS, PAYMENTS, D(2026, 2, 1)) is None   # unknown
    assert statement_for("C2", ITEMS, PAYMENTS, D(2026, 1, 1)) is None   # not yet invoiced
    assert [s.customer_id for s in statements_for(ITEMS, PAYMENTS, D(2026, 2, 1))] == [
        "C1", "C2"]


def test_a_statement_is_of_a_calendar_month_and_of_one_currency() -> None:
    with pytest.raises(ValueError, match="first day"):
        statement_for("C1", ITEMS, PAYMENTS, D(2026, 2, 2))
    both = pl.concat([ITEMS, items(("U1", "C1", "invoice", D(2026, 2, 1), D(2026, 3, 1), 100,
                                    "USD", None))])
    with pytest.raises(ValueError, match="EUR, USD"):
        statement_for("C1", both, PAYMENTS, D(2026, 2, 1))
    usd = statement_for("C1", both, PAYMENTS, D(2026, 2, 1), currency="USD")
    assert usd is not None and usd.statement_id == "S-C1-2026-02-USD"
    assert usd.closing_balance == Decimal("1.00")
    assert len(statements_for(both, PAYMENTS, D(2026, 2, 1))) == 3


def test_statement_survives_json_unchanged() -> None:
    s = statement_for("C1", ITEMS, PAYMENTS, D(2026, 2, 1))
    assert s is not None
    assert CustomerStatement.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# --- documents ----------------------------------------------------------------------------

HOSTILE = "<b>Évil & Co</b>"
SETTINGS = Settings()
LEVEL_WORDS = {
    "fr": {1: ["Relance"], 2: ["Second rappel"],
           3: ["Mise en demeure de payer", "vaut mise en demeure", "Lettre recommandée"]},
    "en": {1: ["Reminder"], 2: ["Second reminder"],
           3: ["Formal notice", "formal notice to pay", "Registered letter"]},
    "de": {1: ["Zahlungserinnerung"], 2: ["Zweite Mahnung"],
           3: ["Letzte Mahnung", "Einschreiben"]},
}
LEGAL = {"fr": ["L441-10", "D441-5", "Code de commerce", "Intérêts de retard",
                "Indemnité", "Jours de retard"],
         "en": ["L441-10", "D441-5", "Late interest", "Indemnity", "Days late"],
         "de": ["L441-10", "D441-5", "Verzugszinsen", "Pauschale", "Verzugstage"]}


def squash(text: str) -> str:
    """Collapse every kind of space (Babel uses narrow no-break spaces)."""
    return re.sub(r"[\s\u202f\u00a0]+", " ", text)


def money(value: Decimal, lang: str) -> str:
    return squash(format_currency(value, "EUR", locale=LOCALES[lang]))


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "letter.pdf"
    path.write_bytes(pdf)
    return squash(subprocess.run(["pdftotext", str(path), "-"], capture_output=True,
                                 text=True, check=True).stdout)


def recipient(lang: str, name: str = HOSTILE) -> Recipient:
    return Recipient(Party(name, "1 rue de la Paix", None, "75002", "Paris", "FR", None, None),
                     lang)


@pytest.fixture(scope="module")
def letters() -> dict[int, DunningLetter]:
    """A customer's letter at each level: two invoices, runs 9, 24 and 49 days after the
    first one's due date."""
    due = D(2026, 11, 1)
    frame = pl.DataFrame({"invoice_number": ["FA2026-000101", "FA2026-000102"],
                          "customer_id": ["C1", "C1"], "issue_date": [D(2026, 10, 2)] * 2,
                          "due_date": [due, due + timedelta(days=3)],
                          "cents": [123450, 7890], "currency": ["EUR", "EUR"]})
    out, sent = {}, []
    for days in (9, 24, 49):  # each run feeds back what the last one sent
        run = due + timedelta(days=days)
        [letter] = plan_dunning(frame, SETTINGS.receivables.dunning, run, pl.DataFrame(
            sent, schema={"invoice_number": pl.String(), "level": pl.Int64(), "day": pl.Date()},
            orient="row"), set(), SETTINGS.seller.recovery_indemnity)
        sent += [(number, level, run) for number, level in letter.records]
        out[letter.level] = letter
    assert sorted(out) == [1, 2, 3]
    return out


@pytest.mark.parametrize("lang", ["fr", "en", "de"])
def test_letter_per_level_says_what_is_owed(letters, lang, tmp_path) -> None:
    for level, letter in letters.items():
        text = pdf_text(render_letter(letter, recipient(lang), SETTINGS), tmp_path)
        for words in LEVEL_WORDS[lang][level] + LEGAL[lang]:
            assert words.upper() in text.upper(), (lang, level, words)
        for line in letter.lines:
            assert line.invoice_number in text
            assert f" {line.days_late} " in text
            assert money(line.open_amount, lang) in text
            assert money(line.interest, lang) in text
        assert money(Decimal("40.00"), lang) in text
        assert money(letter.total_indemnity, lang) in text
        assert money(letter.total_due, lang) in text
        assert "FR76 3000 4000 0500 0012 3456 789" in text and "BNPAFRPPXXX" in text
        assert HOSTILE in text
    # the registered-letter line is only on what goes by post
    by_email = dataclasses.replace(letters[3], channel="email")
    text = pdf_text(render_letter(by_email, recipient(lang), SETTINGS), tmp_path)
    assert LEVEL_WORDS[lang][3][-1].upper() not in text.upper()


@pytest.mark.parametrize(("lang", "words"), [
    ("fr", ["Relevé de compte", "Solde initial", "Solde final", "Facture F3",
            "Avoir A2 sur facture F1", "Règlement reçu : F1, F2", "Règlement rejeté : F1",
            "Non échu", "31 à 60 jours de retard", "01/02/2026", "28/02/2026"]),
    ("en", ["Statement of account", "Opening balance", "Closing balance", "Invoice F3",
            "Credit note A2 on invoice F1", "Payment received: F1, F2",
            "Payment returned: F1", "Not due", "31-60 days late", "28/02/2026"]),
    ("de", ["Kontoauszug", "Anfangssaldo", "Endsaldo", "Rechnung F3",
            "Gutschrift A2 zu Rechnung F1", "Zahlungseingang: F1, F2", "Nicht fällig",
            "28.02.2026"]),
])
def test_statement_pdf(lang, words, tmp_path) -> None:
    s = statement_for("C1", ITEMS, PAYMENTS, D(2026, 2, 1))
    assert s is not None
    text = pdf_text(render_letter(s, recipient(lang), SETTINGS), tmp_path)
    for expected in words:
        assert expected in text, expected
    for amount in ("1100.00", "1350.00", "600.00", "1000.00", "850.00", "750.00", "500.00"):
        assert money(Decimal(amount), lang) in text, amount
    assert HOSTILE in text


def test_customer_data_is_escaped(letters) -> None:
    html = LetterRenderer(SETTINGS.render.templates_dir).html(letters[1], recipient("fr"),
                                                             SETTINGS.seller)
    assert "<b>Évil" not in html
    assert "&lt;b&gt;Évil &amp; Co&lt;/b&gt;" in html


def test_same_letter_same_bytes_in_another_process(letters) -> None:
    pdf = render_letter(letters[3], recipient("de"), SETTINGS)
    assert LetterRenderer(TEMPLATES).render(letters[3], recipient("de"), SETTINGS.seller) == pdf
    script = (
        "import json, sys, hashlib\n"
        "from pipeline.receivables.dunning import DunningLetter\n"
        "from pipeline.receivables.letters import render_letter, Recipient\n"
        "from pipeline.documents import Party\n"
        "from pipeline.settings import Settings\n"
        "letter = DunningLetter.from_dict(json.loads(sys.argv[1]))\n"
        f"party = Party({HOSTILE!r}, '1 rue de la Paix', None, '75002', 'Paris', 'FR', "
        "None, None)\n"
        "pdf = render_letter(letter, Recipient(party, 'de'), Settings())\n"
        "print(hashlib.sha256(pdf).hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(letters[3].to_dict())],
                         capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == hashlib.sha256(pdf).hexdigest()


def test_undefined_name_fails_with_template_and_line(letters, tmp_path) -> None:
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES, copy)
    path = copy / "dunning" / "fr" / "reminder.html"
    path.write_text(path.read_text().replace("{{ letter.total_due", "{{ letter.total_owed", 1))
    with pytest.raises(TemplateError, match=r"dunning/fr/reminder\.html:\d+.*total_owed"):
        LetterRenderer(copy).html(letters[1], recipient("fr"), SETTINGS.seller)


def test_every_letter_template_renders() -> None:
    checked, problems = check_letter_templates(TEMPLATES, SETTINGS)
    assert problems == []
    assert checked == 12  # 3 levels and the statement, in 3 languages
