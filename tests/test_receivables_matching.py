"""Matching beyond exact references: a number one character off, a payer known by its
name, a grouped payment of a set of items, a gross paid before its credit note; and a
generated year placed at 97 % or more with no wrong match."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.ingest import load_extract
from pipeline.receivables.aging import open_amounts
from pipeline.receivables.camt import payment_frame, read_statement
from pipeline.receivables.matching import PASSES, match, name_key
from pipeline.receivables.open_items import item_rows
from pipeline.receivables.sample import TRUTH_FILE, generate_statements
from pipeline.sample import generate_extract

NOBODY = pl.DataFrame(schema={"iban": pl.String(), "customer_id": pl.String()})


def _items(*rows: tuple[str, str, int, int]) -> pl.DataFrame:
    """(invoice_number, customer_id, cents open, day of December it is due)."""
    return pl.DataFrame({
        "invoice_number": [r[0] for r in rows], "customer_id": [r[1] for r in rows],
        "cents": pl.Series([r[2] for r in rows], dtype=pl.Int64),
        "due_date": [date(2026, 12, r[3]) for r in rows]})


def _payments(*rows: tuple[str, int, str | None, str | None, str | None]) -> pl.DataFrame:
    """(key, cents, debtor_iban, debtor_name, remittance), paid on 20 December."""
    return pl.DataFrame({
        "key": [r[0] for r in rows], "cents": pl.Series([r[1] for r in rows], dtype=pl.Int64),
        "value_date": [date(2026, 12, 20)] * len(rows),
        "debtor_iban": pl.Series([r[2] for r in rows], dtype=pl.String),
        "debtor_name": pl.Series([r[3] for r in rows], dtype=pl.String),
        "creditor_reference": pl.Series([None] * len(rows), dtype=pl.String),
        "remittance": pl.Series([r[4] for r in rows], dtype=pl.String)})


def _placed(result) -> dict[str, set[tuple[str, int, str]]]:
    placed: dict[str, set[tuple[str, int, str]]] = {}
    for r in result.allocations.iter_rows(named=True):
        placed.setdefault(r["payment_key"], set()).add(
            (r["invoice_number"], r["cents"], r["pass"]))
    return placed


def _why(result) -> dict[str, str]:
    return dict(result.unallocated.select("payment_key", "why").iter_rows())


# -- one wrong character ---------------------------------------------------------------

ITEMS = _items(("FA2026-002487", "C1", 50_000, 10), ("FA2026-002481", "C1", 70_000, 10),
               ("FA2026-003915", "C1", 12_345, 12), ("FA2026-007777", "C2", 99_000, 10),
               ("FA2026-004444", "C3", 42_000, 10))
KNOWN = pl.DataFrame({"iban": ["FR76C1", "FR76C2"], "customer_id": ["C1", "C2"]})


def test_one_wrong_character_is_taken_from_a_known_payer() -> None:
    result = match(_payments(
        # a wrong digit, in part payment: the payer is known, one item of its is that near
        ("wrong", 10_000, "FR76C1", None, "Facture FA2026-603915"),
        # a missing digit, from an unknown payer paying exactly what the near item owes
        ("missing", 42_000, None, None, "FA2026-04444")), ITEMS, KNOWN)
    assert _placed(result) == {"wrong": {("FA2026-003915", 10_000, "fuzzy_reference")},
                               "missing": {("FA2026-004444", 42_000, "fuzzy_reference")}}
    assert result.counts() == {p: 2 if p == "fuzzy_reference" else 0 for p in PASSES}
    assert result.allocations["confidence"].unique().to_list() == [0.9]


def test_a_transposition_is_one_character() -> None:
    result = match(_payments(("p", 10_000, "FR76C1", None, "REGLEMENT FA2026-003195")),
                   ITEMS, KNOWN)
    assert _placed(result) == {"p": {("FA2026-003915", 10_000, "fuzzy_reference")}}


def test_one_wrong_character_is_refused_when_in_doubt() -> None:
    payments = _payments(
        # FA2026-002480 is one digit off both FA2026-002487 and FA2026-002481
        ("both", 30_000, "FR76C1", None, "FA2026-002480"),
        # an unknown payer, not paying what the near item owes
        ("unknown", 41_000, None, None, "FA2026-004445"),
        # a known payer near another customer's item only
        ("theirs", 42_000, "FR76C2", None, "FA2026-004445"),
        # two characters off is no mistype
        ("far", 99_000, "FR76C1", None, "FA2026-007711"))
    result = match(payments, ITEMS, KNOWN)
    assert result.allocations.is_empty(), result.allocations
    assert _why(result) == {
        "both": "known payer, no item matches the amount",
        "unknown": "unknown payer, naming no invoices for exactly this amount",
        "theirs": "known payer, no item matches the amount",
        "far": "known payer, no item matches the amount"}
    # unless the near items together are the amount: then they are what it pays
    summed = match(_payments(("both", 120_000, "FR76C1", None, "FA2026-002480")), ITEMS,
                   KNOWN)
    assert _placed(summed) == {"both": {("FA2026-002487", 50_000, "fuzzy_reference"),
                                        ("FA2026-002481", 70_000, "fuzzy_reference")}}


def test_another_customers_number_is_a_mistype_only_when_the_amount_says_so() -> None:
    # C1's FA2026-010000 is one digit off C9's FA2026-010001, which C1's payer names
    near = _items(("FA2026-010000", "C1", 25_000, 10), ("FA2026-010001", "C9", 31_000, 10))
    payments = _payments(
        ("for C9", 31_000, "FR76C1", None, "FA2026-010001"),  # exactly C9's: paid for C9
        ("part", 20_000, "FR76C1", None, "FA2026-010001"),  # neither's amount
        ("mistype", 25_000, "FR76C1", None, "FA2026-010001"))  # exactly C1's own, near
    for key in ("for C9", "part"):
        alone = match(payments.filter(pl.col("key") == key), near, KNOWN)
        assert alone.allocations.is_empty(), key
    mistyped = match(payments.filter(pl.col("key") == "mistype"), near, KNOWN)
    assert _placed(mistyped) == {"mistype": {("FA2026-010000", 25_000, "fuzzy_reference")}}


def test_the_rest_of_an_overpayment_is_no_mistype_of_the_next_invoice() -> None:
    near = _items(("FA2026-010000", "C1", 25_000, 10), ("FA2026-010001", "C1", 700, 11))
    result = match(_payments(("p", 25_500, "FR76C1", None, "FA2026-010000")), near, KNOWN)
    # FA2026-010001 is one digit off what the text names, but the text named
    # FA2026-010000, which this payment paid
    assert _placed(result) == {"p": {("FA2026-010000", 25_000, "reference")}}
    assert _why(result) == {"p": "overpaid: the rest"}


def test_numbers_are_found_whatever_their_shape() -> None:
    # letters then digits: sought by their shape, even glued to other text
    lettered = _items(("FA2026-000123", "C1", 1_000, 10), ("FA2026-000124", "C1", 2_000, 10))
    glued = match(_payments(("p", 3_000, "FR76C1", None, "XFA2026000123FA2026-000124")),
                  lettered, KNOWN)
    assert {n for n, _, _ in _placed(glued)["p"]} == {"FA2026-000123", "FA2026-000124"}
    # digits only could be found across two numbers: every number is sought instead
    digits = _items(("2026000123", "C1", 1_000, 10), ("2026000124", "C1", 2_000, 10))
    found = match(_payments(("p", 3_000, None, None, "Rechnung 1-2026000123, 2026000124")),
                  digits, KNOWN)
    assert {n for n, _, _ in _placed(found)["p"]} == {"2026000123", "2026000124"}


# -- a payer known by name -------------------------------------------------------------

NAMES = pl.DataFrame({"customer_id": ["C1", "C2", "C3", "C4", "C5"],
                      "name": ["Hôtel Garcia SARL", "Acme Industrial Supplies Inc.",
                               "Acme Industrial Supplies Inc.", "Garage Richard SAS",
                               "Boulangerie Fournier et Fils"]})
NAMED_ITEMS = _items(("FA2026-000101", "C1", 80_000, 10), ("FA2026-000102", "C1", 30_000, 11),
                     ("FA2026-000201", "C2", 60_000, 10), ("FA2026-000301", "C3", 60_000, 10),
                     ("FA2026-000401", "C4", 45_000, 10), ("FA2026-000501", "C5", 15_000, 10))


def test_name_key() -> None:
    keys = pl.select(name_key(pl.Series(["Hôtel Garcia S.A.R.L.", "HOTEL GARCIA",
                                         "Janssens & Peeters NV", None]))).to_series()
    assert keys.to_list() == ["HOTEL GARCIA", "HOTEL GARCIA", "JANSSENS ET PEETERS", ""]


def test_a_payer_without_iban_is_known_by_its_name() -> None:
    payments = _payments(
        # a partial payment naming its invoice: from an unknown payer it would not be taken
        ("partial", 20_000, None, "HOTEL GARCIA S.A.R.L.", "Acompte FA2026-000101"),
        # no reference: the exact amount of one of its items
        ("amount", 30_000, "CH9300762011623852957", "Hotel Garcia", None),
        # a name near one customer's only (a letter missing)
        ("near", 15_000, None, "BOULANGERIE FOURNIER ET FIL", "virement"),
        # a name two customers share names neither
        ("shared", 60_000, None, "ACME INDUSTRIAL SUPPLIES INC", None),
        # another legal form is another company
        ("form", 45_000, None, "Garage Richard SARL", None))
    without = match(payments, NAMED_ITEMS, NOBODY)
    assert without.allocations.is_empty()
    result = match(payments, NAMED_ITEMS, NOBODY, customer_names=NAMES)
    placed = _placed(result)
    assert placed == {"partial": {("FA2026-000101", 20_000, "reference")},
                      "amount": {("FA2026-000102", 30_000, "iban_amount")},
                      "near": {("FA2026-000501", 15_000, "iban_amount")}}
    assert _why(result) == {
        "shared": "unknown payer, naming no invoices for exactly this amount",
        "form": "unknown payer, naming no invoices for exactly this amount"}
    # the last pass never gives money to a payer on its name alone
    rest = match(_payments(("x", 1_000, None, "Hôtel Garcia", None)), NAMED_ITEMS, NOBODY,
                 oldest_first=True, customer_names=NAMES)
    assert rest.allocations.is_empty()


def test_a_known_iban_wins_over_a_name() -> None:
    known = pl.DataFrame({"iban": ["FR76C4"], "customer_id": ["C4"]})
    result = match(_payments(("p", 20_000, "FR76C4", "Hôtel Garcia", "FA2026-000101")),
                   NAMED_ITEMS, known, customer_names=NAMES)
    assert result.allocations.is_empty()  # C4's payer naming C1's invoice, partly


# -- grouped payments ------------------------------------------------------------------

GROUPED = _items(("FA2026-000001", "C1", 10_000, 1), ("FA2026-000002", "C1", 23_000, 5),
                 ("FA2026-000003", "C1", 40_000, 12), ("FA2026-000004", "C1", 7_000, 18),
                 ("FA2026-000005", "C1", 55_000, 22), ("FA2026-000006", "C1", 1_000, 30))


def test_a_grouped_payment_of_items_that_are_not_the_earliest_is_found() -> None:
    # 23,000 + 7,000 + 55,000: not a prefix, not one item, one set only
    result = match(_payments(("p", 85_000, "FR76C1", None, None)), GROUPED, KNOWN)
    assert _placed(result)["p"] == {("FA2026-000002", 23_000, "subset_sum"),
                                    ("FA2026-000004", 7_000, "subset_sum"),
                                    ("FA2026-000005", 55_000, "subset_sum")}
    assert result.allocations["confidence"].unique().to_list() == [0.7]


def test_a_sum_two_sets_make_is_left_for_a_person() -> None:
    # 63,000 is 23,000 + 40,000, and 7,000 + 55,000 + 1,000
    result = match(_payments(("p", 63_000, "FR76C1", None, None)), GROUPED, KNOWN)
    assert result.allocations.is_empty()
    assert _why(result) == {"p": "known payer, no item matches the amount"}
    # and an unknown payer's amount is no one's set
    unknown = match(_payments(("p", 85_000, None, None, None)), GROUPED, KNOWN)
    assert unknown.allocations.is_empty()


def test_two_payments_claiming_one_item_are_left_for_a_person() -> None:
    # a: 23,000 + 7,000 + 55,000 only; b: 7,000 + 55,000 only
    result = match(_payments(("a", 85_000, "FR76C1", None, None),
                             ("b", 62_000, "FR76C1", None, None)), GROUPED, KNOWN)
    assert result.allocations.is_empty()
    assert set(_why(result)) == {"a", "b"}


# -- a gross paid before its credit note -----------------------------------------------

def _issued(items: pl.DataFrame, notes: tuple[tuple[str, str, str, int], ...] = ()
            ) -> pl.DataFrame:
    """The items as issued, and credit notes (number, customer, invoice credited, cents)."""
    invoices = items.select("invoice_number", "customer_id",
                            invoice_type=pl.lit("invoice"), cents="cents",
                            credited_invoice_number=pl.lit(None, dtype=pl.String))
    credit = pl.DataFrame({
        "invoice_number": [n[0] for n in notes], "customer_id": [n[1] for n in notes],
        "invoice_type": ["credit_note"] * len(notes),
        "cents": pl.Series([-n[3] for n in notes], dtype=pl.Int64),
        "credited_invoice_number": pl.Series([n[2] for n in notes], dtype=pl.String)})
    return pl.concat([invoices, credit])


def test_a_gross_paid_before_its_credit_note_pays_the_invoice_and_leaves_the_credit() -> None:
    # FA2026-000101 was 100,000; a 20,000 credit note leaves 80,000 open
    issued = _issued(NAMED_ITEMS.with_columns(
        cents=pl.when(pl.col("invoice_number") == "FA2026-000101").then(100_000)
        .otherwise(pl.col("cents"))), (("AV2026-000001", "C1", "FA2026-000101", 20_000),))
    payments = _payments(("named", 100_000, None, "Someone", "FA2026-000101"),
                         ("known", 100_000, "FR76C1", None, None))
    without = match(payments.head(1), NAMED_ITEMS, NOBODY)
    assert without.allocations.is_empty()  # an unknown payer, not the open amount
    result = match(payments.head(1), NAMED_ITEMS, NOBODY, issued=issued)
    assert _placed(result) == {"named": {("FA2026-000101", 80_000, "reference")}}
    assert result.unallocated.rows() == [("named", 20_000,
                                          "overpaid: a credit note it did not deduct")]
    # a known payer, no reference: the gross of one of its items
    known = match(payments.tail(1), NAMED_ITEMS, KNOWN, issued=issued)
    assert _placed(known) == {"known": {("FA2026-000101", 80_000, "iban_amount")}}
    assert _why(known) == {"known": "overpaid: a credit note it did not deduct"}


# -- a generated year ------------------------------------------------------------------

@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    work = tmp_path_factory.mktemp("year")
    generate_extract(work / "extract", 2_000, seed=2026)
    generate_statements(work / "extract", work / "statements", seed=2026)
    found = [p for f in sorted((work / "statements").glob("*.xml"))
             for s in read_statement(f.read_bytes(), str(f)) for p in s.payments]
    payments = payment_frame(found)
    return work, payments


def test_a_generated_year_is_placed_at_97_percent_with_no_wrong_match(year) -> None:
    work, payments = year
    bundle = load_extract(work / "extract")
    items = item_rows(bundle.invoices)
    nothing = pl.DataFrame(schema={"invoice_number": pl.String(), "cents": pl.Int64()})
    start = time.perf_counter()
    result = match(payments, open_amounts(items, nothing), NOBODY,
                   customer_names=bundle.customers.select("customer_id", name="legal_name"),
                   issued=items)
    assert time.perf_counter() - start < 10
    truth = pl.read_parquet(work / "statements" / TRUTH_FILE)
    pays = truth.filter(pl.col("invoice_number").is_not_null()).select(
        "payment_key", "invoice_number")
    credits = payments.filter(pl.col("cents") > 0).select(pl.col("key").alias("payment_key"))
    placeable = pays.select("payment_key").unique().join(credits, on="payment_key",
                                                         how="semi")
    allocated = result.allocations.select("payment_key", "invoice_number").unique()
    wrong = allocated.join(pays, on=["payment_key", "invoice_number"], how="anti")
    assert wrong.is_empty(), wrong
    placed = allocated.join(pays, on=["payment_key", "invoice_number"], how="semi").select(
        "payment_key")
    returned = result.unallocated.filter(
        (pl.col("why") == "returned by the payer's bank") & (pl.col("cents") > 0)).select(
        "payment_key")
    ok = pl.concat([placed, returned]).unique().join(placeable, on="payment_key", how="semi")
    rate = ok.height / placeable.height
    assert rate >= 0.97, rate
    # unknown payers stay unplaced
    unknown = credits.join(placeable, on="payment_key", how="anti")
    assert unknown.height and unknown.join(allocated, on="payment_key", how="semi").is_empty()
    counts = result.counts()
    assert counts["reference"] > 0 and counts["fuzzy_reference"] > 0
    assert counts["subset_sum"] > 0
