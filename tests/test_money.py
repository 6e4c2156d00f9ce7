from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pipeline import money


def test_round_half_up_to_the_cent() -> None:
    assert money.round_amount(Decimal("1.005")) == Decimal("1.01")
    assert money.round_amount(Decimal("-1.005")) == Decimal("-1.01")
    assert money.line_net(Decimal("3"), Decimal("0.3333")) == Decimal("1.00")


def test_vat_is_computed_per_rate_on_the_sum_of_lines() -> None:
    # Three lines of 0.05 at 20 %: per line VAT would be 3 x 0.01 = 0.03; EN 16931 gives 0.03
    # on 0.15 -> 0.03; with 7 lines of 0.07 per-line gives 7 x 0.01 = 0.07, per-rate 0.10.
    lines = [("S", Decimal("20.00"), Decimal("0.07"))] * 7
    assert money.vat_breakdown(lines) == [("S", Decimal("20.00"), Decimal("0.49"),
                                           Decimal("0.10"))]


def test_breakdown_orders_rates_descending() -> None:
    lines = [("S", Decimal("5.50"), Decimal("10")), ("S", Decimal("20.00"), Decimal("10")),
             ("S", Decimal("2.10"), Decimal("10"))]
    assert [r[1] for r in money.vat_breakdown(lines)] == [Decimal("20.00"), Decimal("5.50"),
                                                           Decimal("2.10")]


amounts = st.decimals(min_value=Decimal("-99999"), max_value=Decimal("99999"), places=2)
rates = st.sampled_from([Decimal("20.00"), Decimal("10.00"), Decimal("5.50"), Decimal("2.10")])


@given(st.lists(st.tuples(rates, amounts), min_size=1, max_size=30))
def test_breakdown_bases_add_up_to_the_net_total(lines: list[tuple[Decimal, Decimal]]) -> None:
    breakdown = money.vat_breakdown(("S", rate, net) for rate, net in lines)
    assert sum(row[2] for row in breakdown) == sum(net for _, net in lines)
    for _, rate, base, vat in breakdown:
        assert vat == money.vat_amount(base, rate)
        assert vat == vat.quantize(money.CENT)


def test_decimal_series_is_exact() -> None:
    import numpy as np
    series = money.decimal_series("x", np.array([12345, -250, 0]), 4)
    assert series.to_list() == [Decimal("1.2345"), Decimal("-0.0250"), Decimal("0.0000")]


quantities = st.decimals(min_value=Decimal("-999999.999"), max_value=Decimal("999999.999"),
                         places=3)
prices = st.decimals(min_value=Decimal("-99999.9999"), max_value=Decimal("99999.9999"), places=4)


@given(st.lists(st.tuples(quantities, prices, rates), min_size=1, max_size=20))
def test_vectorised_rules_agree_with_decimal_rules(lines) -> None:
    import polars as pl
    frame = pl.DataFrame(lines, schema={"q": money.QUANTITY, "p": money.UNIT_PRICE,
                                        "r": money.RATE}, orient="row")
    nets = frame.select(money.line_net_cents("q", "p")).to_series().to_list()
    assert nets == [int(money.line_net(q, p) * 100) for q, p, _ in lines]
    per_rate = frame.with_columns(net=money.line_net_cents("q", "p")).group_by("r").agg(
        base=pl.col("net").sum()).with_columns(vat=money.vat_cents("base", "r"))
    for rate, base, vat in per_rate.iter_rows():
        assert vat == int(money.vat_amount(Decimal(base) / 100, rate) * 100)
    text = pl.DataFrame({"c": [-1205, 5, 0, 123456]}).select(money.cents_to_text("c"))
    assert text.to_series().to_list() == ["-12.05", "0.05", "0.00", "1234.56"]
