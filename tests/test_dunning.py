"""Dunning plans: who gets which letter on a run date, across consecutive runs."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.receivables.dunning import DunningLetter, late_interest, plan_dunning
from pipeline.settings import DunningSettings

INDEMNITY = Decimal("40.00")
SCHEMA = {"invoice_number": pl.String(), "customer_id": pl.String(), "issue_date": pl.Date(),
          "due_date": pl.Date(), "cents": pl.Int64(), "currency": pl.String()}
NO_SENT = pl.DataFrame(schema={"invoice_number": pl.String(), "level": pl.Int64(),
                               "day": pl.Date()})


def reference_interest(amount: Decimal, rate: Decimal, days: int) -> Decimal:
    return (amount * rate * days / Decimal(36500)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


def item(number: str, customer: str, due: date, euros: str, currency: str = "EUR") -> dict:
    return {"invoice_number": number, "customer_id": customer,
            "issue_date": due - timedelta(days=30), "due_date": due,
            "cents": int(Decimal(euros) * 100), "currency": currency}


def sent_frame(rows: list[tuple[str, int]] | list[tuple[str, int, date]]) -> pl.DataFrame:
    """What was sent; a row without a day was sent long ago."""
    full = [(*row, date(2000, 1, 1)) if len(row) == 2 else row for row in rows]
    return pl.DataFrame(full, schema=NO_SENT.schema, orient="row") if full else NO_SENT


# --- the property: consecutive runs feeding back what was sent -----------------------------

CUSTOMERS = ["C1", "C/2 <x>", "C3"]
ACTIONS = ["pay", "partial", "credit", "dispute", "undispute", "nothing"]


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    start = date(2026, 1, 1)
    invoices = {}
    for i in range(draw(st.integers(1, 12))):
        issue = start + timedelta(days=draw(st.integers(0, 90)))
        invoices[f"F{i:03d}"] = {
            "invoice_number": f"F{i:03d}", "customer_id": draw(st.sampled_from(CUSTOMERS)),
            "issue_date": issue,
            "due_date": issue + timedelta(days=draw(st.sampled_from([0, 15, 30, 45]))),
            "cents": draw(st.integers(-1000, 400_000)),
            "currency": draw(st.sampled_from(["EUR", "EUR", "EUR", "USD"]))}
    runs = draw(st.lists(st.tuples(
        st.integers(1, 30),
        st.lists(st.tuples(st.sampled_from(sorted(invoices)), st.sampled_from(ACTIONS)),
                 max_size=4)), min_size=2, max_size=6))
    return {"invoices": invoices, "runs": runs,
            "disputed": draw(st.sets(st.sampled_from(sorted(invoices)), max_size=2)),
            "policy": DunningSettings(
                minimum_amount=draw(st.sampled_from([Decimal(0), Decimal("50.00"),
                                                     Decimal("1500.00")])),
                excluded_customers=sorted(draw(st.sets(st.sampled_from(CUSTOMERS),
                                                       max_size=1))),
                late_interest_rate=draw(st.decimals(0, 25, places=2)))}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_consecutive_runs_never_dun_twice_never_go_down_and_skip_what_is_settled(scenario):
    invoices, policy = dict(scenario["invoices"]), scenario["policy"]
    disputed = set(scenario["disputed"])
    run_date = date(2026, 3, 1)
    sent: list[tuple[str, int, date]] = []
    highest: dict[str, int] = {}
    last_day: dict[str, date] = {}
    thresholds = [level.days for level in policy.levels]
    for gap, actions in scenario["runs"]:
        run_date += timedelta(days=gap)
        for number, action in actions:
            if number not in invoices:
                continue  # paid or credited in an earlier run: gone for good
            if action in ("pay", "credit"):
                del invoices[number]
            elif action == "partial":
                invoices[number] = {**invoices[number], "cents": invoices[number]["cents"] // 2}
            elif action == "dispute":
                disputed.add(number)
            elif action == "undispute":
                disputed.discard(number)
        before = dict(highest)
        last_day_before = dict(last_day)
        letters = plan_dunning(frame(list(invoices.values())), policy, run_date,
                               sent_frame(sent), set(disputed), INDEMNITY)

        dunnable = {n: v for n, v in invoices.items()
                    if v["cents"] > 0 and n not in disputed and v["due_date"] < run_date}
        recorded_now: set[str] = set()
        for letter in letters:
            assert letter.customer_id not in policy.excluded_customers
            assert letter.records, "a letter always reminds of at least one invoice"
            listed_before = [before.get(line.invoice_number, 0) for line in letter.lines]
            assert letter.level == max(*(level for _, level in letter.records),
                                       *listed_before), "never below what a line already got"
            assert letter.level_name == policy.levels[letter.level - 1].name
            assert letter.total_open >= policy.minimum_amount
            listed = {line.invoice_number for line in letter.lines}
            for line in letter.lines:
                row = dunnable[line.invoice_number]  # KeyError: paid, credited or disputed
                assert (row["customer_id"], row["currency"]) == (letter.customer_id,
                                                                 letter.currency)
                assert line.days_late == (run_date - row["due_date"]).days > 0
                assert line.open_amount == Decimal(row["cents"]) / 100
                assert line.interest == reference_interest(
                    line.open_amount, policy.late_interest_rate, line.days_late)
            for number, level in letter.records:
                assert number in listed
                assert level == highest.get(number, 0) + 1, "one level at a time, up only"
                assert (number, level) not in {(n, lv) for n, lv, _ in sent}
                highest[number] = level
                last_day[number] = run_date
                sent.append((number, level, run_date))
                recorded_now.add(number)
            assert listed == {n for n, v in dunnable.items()
                              if (v["customer_id"], v["currency"]) == (letter.customer_id,
                                                                       letter.currency)}
        # Exactly the triggered invoices are recorded, each at the level after the last one,
        # once late enough and far enough from the last letter, unless their customer is
        # excluded or owes less than the minimum.
        for number, row in dunnable.items():
            days = (run_date - row["due_date"]).days
            done = before.get(number, 0)
            due = (done < len(thresholds) and days >= thresholds[done]
                   and (done == 0 or (run_date - last_day_before[number]).days
                        >= thresholds[done] - thresholds[done - 1]))
            group = [v for v in dunnable.values()
                     if (v["customer_id"], v["currency"]) == (row["customer_id"],
                                                              row["currency"])]
            owed = sum(Decimal(v["cents"]) / 100 for v in group)
            expected = (due and row["customer_id"] not in policy.excluded_customers
                        and owed >= policy.minimum_amount)
            assert (number in recorded_now) == expected
            if expected:
                assert highest[number] == done + 1


# --- examples ---------------------------------------------------------------------------

def test_late_interest_is_pro_rata_and_rounded_half_up() -> None:
    assert late_interest(Decimal("1000.00"), Decimal("12.15"), 30) == Decimal("9.99")
    assert late_interest(Decimal("1000.00"), Decimal("10"), 365) == Decimal("100.00")
    # 100 x 7.3 % x 1/365 = 0.02 exactly; 50 x 7.3 % / 365 = 0.01 exactly; 0.005 rounds up
    assert late_interest(Decimal("100.00"), Decimal("7.30"), 1) == Decimal("0.02")
    assert late_interest(Decimal("25.00"), Decimal("7.30"), 1) == Decimal("0.01")
    assert late_interest(Decimal("1000.00"), Decimal("12.15"), 0) == Decimal("0.00")
    assert late_interest(Decimal("1000.00"), Decimal("12.15"), -5) == Decimal("0.00")


def test_one_letter_per_customer_at_the_highest_triggered_level() -> None:
    run = date(2026, 6, 30)
    items = frame([item("A", "C1", run - timedelta(days=50), "100.00"),   # level 3
                   item("B", "C1", run - timedelta(days=25), "200.00"),   # level 2
                   item("C", "C1", run - timedelta(days=3), "300.00"),    # late, no level yet
                   item("D", "C1", run, "400.00"),                        # due today: not late
                   item("E", "C1", run - timedelta(days=10), "0.00"),     # nothing owed
                   item("F", "C1", run - timedelta(days=10), "-5.00")])   # defensive
    [letter] = plan_dunning(items, DunningSettings(), run, NO_SENT, set(), INDEMNITY)
    # first seen late: the reminder, whatever the days (levels are never skipped)
    assert (letter.level, letter.level_name, letter.channel) == (1, "reminder", "email")
    assert letter.records == (("A", 1), ("B", 1))
    assert [line.invoice_number for line in letter.lines] == ["A", "B", "C"]
    assert [line.days_late for line in letter.lines] == [50, 25, 3]
    assert letter.total_open == Decimal("600.00")
    assert letter.total_indemnity == Decimal("120.00")
    assert letter.total_due == letter.total_open + letter.total_interest + Decimal("120.00")
    assert letter.letter_id == "R1-C1-20260630-EUR"
    # 13 days after the reminder (20 - 7) A and B get the second one; A's formal notice
    # comes 25 days after that (45 - 20)
    sent = [("A", 1, run), ("B", 1, run)]
    [later] = plan_dunning(items, DunningSettings(), run + timedelta(days=12),
                           sent_frame(sent), set(), INDEMNITY)  # A and B: not yet
    assert (later.level, later.records) == (1, (("C", 1), ("D", 1)))
    sent += [("C", 1, run + timedelta(days=12)), ("D", 1, run + timedelta(days=12))]
    [second] = plan_dunning(items, DunningSettings(), run + timedelta(days=13),
                            sent_frame(sent), set(), INDEMNITY)
    assert (second.level, second.records) == (2, (("A", 2), ("B", 2)))
    sent += [("A", 2, run + timedelta(days=13)), ("B", 2, run + timedelta(days=13))]
    [notice] = plan_dunning(items, DunningSettings(), run + timedelta(days=38),
                            sent_frame(sent), set(), INDEMNITY)
    assert (notice.level, notice.level_name, notice.channel) == (3, "formal_notice", "print")
    assert notice.records == (("A", 3), ("B", 3), ("C", 2), ("D", 2))


def test_an_invoice_already_sent_at_its_level_is_listed_but_not_recorded_again() -> None:
    run = date(2026, 6, 30)
    items = frame([item("A", "C1", run - timedelta(days=25), "100.00"),
                   item("B", "C1", run - timedelta(days=8), "100.00")])
    [letter] = plan_dunning(items, DunningSettings(), run, sent_frame([("A", 1), ("A", 2)]),
                            set(), INDEMNITY)
    # A had the second reminder already: the letter listing it is one too
    assert letter.level == 2 and letter.records == (("B", 1),)
    assert [line.invoice_number for line in letter.lines] == ["A", "B"]
    # everything already sent: no letter
    assert plan_dunning(items, DunningSettings(), run, sent_frame([("A", 2), ("B", 1)]),
                        set(), INDEMNITY) == []
    # a letter is never friendlier than what one of its lines already got
    [firm] = plan_dunning(items, DunningSettings(), run,
                          sent_frame([("A", 1), ("A", 2), ("A", 3)]), set(), INDEMNITY)
    assert (firm.level, firm.records) == (3, (("B", 1),))


def test_minimum_amount_counts_undisputed_past_due_principal() -> None:
    run = date(2026, 6, 30)
    policy = DunningSettings(minimum_amount=Decimal("50.00"))
    small = frame([item("A", "C1", run - timedelta(days=10), "49.99"),
                   item("N", "C1", run + timedelta(days=5), "500.00"),    # not due
                   item("X", "C1", run - timedelta(days=10), "500.00")])  # disputed
    assert plan_dunning(small, policy, run, NO_SENT, {"X"}, INDEMNITY) == []
    enough = frame([item("A", "C1", run - timedelta(days=10), "49.99"),
                    item("B", "C1", run - timedelta(days=2), "0.01")])   # late, no level yet
    [letter] = plan_dunning(enough, policy, run, NO_SENT, set(), INDEMNITY)
    assert letter.records == (("A", 1),) and letter.total_open == Decimal("50.00")


def test_excluded_and_disputed_are_left_out() -> None:
    run = date(2026, 6, 30)
    items = frame([item("A", "PUBLIC", run - timedelta(days=60), "9000.00"),
                   item("B", "C2", run - timedelta(days=60), "100.00"),
                   item("C", "C2", run - timedelta(days=30), "100.00")])
    policy = DunningSettings(excluded_customers=["PUBLIC"])
    [letter] = plan_dunning(items, policy, run, NO_SENT, {"B"}, INDEMNITY)
    assert letter.customer_id == "C2" and letter.level == 1
    assert [line.invoice_number for line in letter.lines] == ["C"]


def test_one_letter_per_currency_and_indemnity_kept_out_of_a_foreign_total() -> None:
    run = date(2026, 6, 30)
    items = frame([item("A", "C1", run - timedelta(days=10), "100.00"),
                   item("B", "C1", run - timedelta(days=10), "100.00", "USD")])
    letters = plan_dunning(items, DunningSettings(), run, NO_SENT, set(), INDEMNITY)
    assert [(x.currency, x.letter_id) for x in letters] == [
        ("EUR", "R1-C1-20260630-EUR"), ("USD", "R1-C1-20260630-USD")]
    usd = letters[1]
    assert not usd.indemnity_in_total
    assert usd.total_due == usd.total_open + usd.total_interest


def test_letter_ids_are_safe_whatever_the_customer_id() -> None:
    run = date(2026, 6, 30)
    hostile = "../C 1/<b>é%"
    [letter] = plan_dunning(frame([item("A", hostile, run - timedelta(days=10), "100.00")]),
                            DunningSettings(), run, pl.DataFrame(), set(), INDEMNITY)
    assert letter.customer_id == hostile
    assert re.fullmatch(r"[A-Za-z0-9_%-]+", letter.letter_id)
    assert ".." not in letter.letter_id and "/" not in letter.letter_id
    # a customer id too long to name a file still gets its letter (cut, with a digest)
    long_ids = ["É" * 120, "É" * 120 + "x"]
    letters = plan_dunning(frame([item("A", long_ids[0], run - timedelta(days=10), "100.00"),
                                  item("B", long_ids[1], run - timedelta(days=10), "100.00")]),
                           DunningSettings(), run, pl.DataFrame(), set(), INDEMNITY)
    assert [len(x.letter_id) < 90 for x in letters] == [True, True]
    assert len({x.letter_id for x in letters}) == 2


def test_letter_survives_json_unchanged() -> None:
    run = date(2026, 6, 30)
    items = frame([item("A", "C1", run - timedelta(days=50), "1234.56"),
                   item("B", "C1", run - timedelta(days=9), "0.07")])
    [letter] = plan_dunning(items, DunningSettings(), run, NO_SENT, set(), INDEMNITY)
    again = DunningLetter.from_dict(json.loads(json.dumps(letter.to_dict())))
    assert again == letter
    assert again.total_due == letter.total_due
    assert str(again.lines[0].open_amount) == "1234.56"


def test_what_a_customer_has_in_its_favour_counts_against_the_minimum() -> None:
    """The review's case: a paid invoice credited afterwards leaves the customer 200.00 in
    its favour, and a credit note correcting no invoice 150.00 more; it owes 500.00 past
    due on another invoice, so 150.00 net: under a 400.00 minimum, no letter."""
    from pipeline.receivables.aging import credit_balances

    run = date(2026, 3, 31)
    items = pl.DataFrame({
        "invoice_number": ["I1", "I2", "CN1", "CN2"], "customer_id": ["C1"] * 4,
        "invoice_type": ["invoice", "invoice", "credit_note", "credit_note"],
        "issue_date": [date(2026, 1, 1)] * 4,
        "due_date": [date(2026, 2, 1), run - timedelta(days=10), date(2026, 3, 1),
                     date(2026, 3, 2)],
        "cents": [100000, 50000, -20000, -15000], "currency": ["EUR"] * 4,
        "credited_invoice_number": [None, None, "I1", None]})
    paid = pl.DataFrame({"invoice_number": ["I1"], "cents": [100000]})
    credits = {(c, cur): n for c, cur, n in credit_balances(items, paid).iter_rows()}
    assert credits == {("C1", "EUR"): 35000}
    # a credit in another currency does not pay euros
    usd = {("C1", "USD"): 500000}
    assert len(plan_dunning(frame([item("I2", "C1", run - timedelta(days=10), "500.00")]),
                            DunningSettings(), run, NO_SENT, set(), INDEMNITY, usd)) == 1
    open_items = frame([item("I2", "C1", run - timedelta(days=10), "500.00")])
    policy = DunningSettings(minimum_amount=Decimal("400.00"))
    assert plan_dunning(open_items, policy, run, NO_SENT, set(), INDEMNITY, credits) == []
    [letter] = plan_dunning(open_items, policy, run, NO_SENT, set(), INDEMNITY,
                            {("C1", "EUR"): 5000})
    assert letter.records == (("I2", 1),)
