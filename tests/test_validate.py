"""Every rule fires on a targeted defect and stays silent on a clean extract."""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import ExtractBundle, load_extract
from pipeline.sample import DEFECTS_FILE, generate_extract, with_header_totals
from pipeline.schemas import BILLED_LINES, INDEX
from pipeline.settings import (
    PROJECT_ROOT,
    EdiSettings,
    SellerSettings,
    Settings,
    Tolerance,
    ValidationSettings,
)
from pipeline.validate import REGISTRY, History, Validation, validate
from pipeline.validate.docs import rules_markdown

SELLER = Settings().seller
TODAY = date(2026, 11, 27)


@dataclass(frozen=True)
class Case:
    bundle: ExtractBundle
    number: str
    seller: SellerSettings = field(default_factory=lambda: SELLER)
    history: History | None = None
    edi: EdiSettings | None = None


Mutation = Callable[[ExtractBundle], Case]


def run(case: Case, config: ValidationSettings | None = None) -> Validation:
    return validate(case.bundle, case.seller, config, case.history, TODAY, case.edi)


def _first(b: ExtractBundle, kind: str = "invoice") -> dict:
    return b.invoices.filter(pl.col("invoice_type") == kind).row(0, named=True)


def _set(frame: pl.DataFrame, where: pl.Expr, **values: object) -> pl.DataFrame:
    return frame.with_columns(**{k: pl.when(where).then(pl.lit(v, dtype=frame.schema[k]))
                                 .otherwise(pl.col(k)) for k, v in values.items()})


def _customer(of_channel: str, **values: object) -> Mutation:
    def mutate(b: ExtractBundle) -> Case:
        row = (b.invoices.filter(pl.col("invoice_type") == "invoice")
               .join(b.customers.filter(pl.col("channel") == of_channel), on="customer_id")
               .row(0, named=True))
        return Case(replace(b, customers=_set(b.customers,
                                              pl.col("customer_id") == row["customer_id"],
                                              **values)), row["invoice_number"])
    return mutate


def _header(kind: str = "invoice", **values: object) -> Mutation:
    def mutate(b: ExtractBundle) -> Case:
        number = _first(b, kind)["invoice_number"]
        return Case(replace(b, invoices=_set(b.invoices, pl.col("invoice_number") == number,
                                             **values)), number)
    return mutate


def _with_lines(b: ExtractBundle, lines: pl.DataFrame) -> ExtractBundle:
    """New lines, and header totals that agree with them (as an ERP would print)."""
    headers = with_header_totals(b.invoices.drop("total_net", "total_vat", "total_gross"), lines)
    return replace(b, invoice_lines=lines, invoices=headers.select(b.invoices.columns))


def _line(**values: object) -> Mutation:
    def mutate(b: ExtractBundle) -> Case:
        number = _first(b)["invoice_number"]
        where = (pl.col("invoice_number") == number) & (pl.col("line_no") == 1)
        return Case(_with_lines(b, _set(b.invoice_lines, where, **values)), number)
    return mutate


def _bump_line(column: str, delta: str, kind: str = "invoice", times: int = 1) -> Mutation:
    def mutate(b: ExtractBundle) -> Case:
        number = _first(b, kind)["invoice_number"]
        where = (pl.col("invoice_number") == number) & (pl.col("line_no") == 1)
        bumped = pl.col(column) * times + Decimal(delta)
        lines = b.invoice_lines.with_columns(
            pl.when(where).then(bumped).otherwise(pl.col(column))
            .cast(b.invoice_lines.schema[column]).alias(column))
        return Case(_with_lines(b, lines), number)
    return mutate


def _of_first_invoice(table: str, key: str, **values: object) -> Mutation:
    """Change the PO (key po_number) or delivery note (key delivery_note_number) of the first
    invoice's first line."""
    def mutate(b: ExtractBundle) -> Case:
        number = _first(b)["invoice_number"]
        line = b.invoice_lines.filter((pl.col("invoice_number") == number)
                                      & (pl.col("line_no") == 1)).row(0, named=True)
        value = _first(b)["po_number"] if key == "po_number" else line[key]
        where = pl.col(key) == value
        if table == "po_lines":
            where = where & (pl.col("po_line_no") == line["po_line_no"])
        changed = _set(getattr(b, table), where, **values)
        return Case(replace(b, **{table: changed}), number)
    return mutate


def _duplicate(b: ExtractBundle) -> Case:
    return Case(replace(b, invoices=pl.concat([b.invoices, b.invoices[:1]])),
                b.invoices["invoice_number"][0])


def _no_lines(b: ExtractBundle) -> Case:
    number = _first(b)["invoice_number"]
    return Case(replace(b, invoice_lines=b.invoice_lines.filter(
        pl.col("invoice_number") != number)), number)


def _gap(b: ExtractBundle) -> Case:
    last = b.invoices.filter(pl.col("invoice_number").str.starts_with("FA"))["invoice_number"].max()
    moved = last[:-3] + "999"
    rename = {"invoice_number": pl.when(pl.col("invoice_number") == last).then(pl.lit(moved))
              .otherwise(pl.col("invoice_number"))}
    return Case(replace(b, invoices=b.invoices.with_columns(**rename),
                        invoice_lines=b.invoice_lines.with_columns(**rename)), moved)


def _history_row(b: ExtractBundle, number: str, **changes: object) -> pl.DataFrame:
    inv = b.invoices.filter(pl.col("invoice_number") == number).row(0, named=True)
    row = {c: inv.get(c) for c in INDEX}
    row.update(channel="email", status="delivered", storage_key="k", sha256="0", bytes=1,
               period="2026-11", run_id="r", **changes)
    return pl.DataFrame([row], schema=INDEX)


def _archived_with_other_content(b: ExtractBundle) -> Case:
    number = _first(b)["invoice_number"]
    history = History(_history_row(b, number, customer_id="C99999"),
                      pl.DataFrame(schema=BILLED_LINES))
    return Case(b, number, history=history)


def _bad_seller(b: ExtractBundle) -> Case:
    return Case(b, b.invoices["invoice_number"][0], seller=SELLER.model_copy(
        update={"siren": "732829321"}))


def _vat_of_other_siren(b: ExtractBundle) -> Case:
    return _customer("email", vat_id="FR44732829320")(b)


def _credit_too_much(b: ExtractBundle) -> Case:
    return _bump_line("unit_price", "1000000", kind="credit_note")(b)


def _credit_of_rejected(b: ExtractBundle) -> Case:
    credit = _first(b, "credit_note")
    invoices = _set(b.invoices, pl.col("invoice_number") == credit["credited_invoice_number"],
                    currency="EURO")
    return Case(replace(b, invoices=invoices), credit["invoice_number"])


def _credit_of_credit(b: ExtractBundle) -> Case:
    credit = _first(b, "credit_note")
    return _header("credit_note", credited_invoice_number=credit["invoice_number"])(b)


def _intra_eu_supply_to_a_buyer_without_vat_id(b: ExtractBundle) -> Case:
    case = _line(vat_rate=Decimal("0"), vat_category="K", vat_exemption_reason="VATEX-EU-IC")(b)
    customers = _set(case.bundle.customers, pl.col("customer_id") == _first(b)["customer_id"],
                     vat_id=None)
    return replace(case, bundle=replace(case.bundle, customers=customers))


def _credit_unknown(b: ExtractBundle) -> Case:
    return _header("credit_note", credited_invoice_number="FA1999-000001")(b)


def _copy_row(table: str, **changes: object) -> Mutation:
    """Append a copy of the row of ``table`` the first invoice relies on, with ``changes``."""
    def mutate(b: ExtractBundle) -> Case:
        inv = _first(b)
        line = b.invoice_lines.filter((pl.col("invoice_number") == inv["invoice_number"])
                                      & (pl.col("line_no") == 1)).row(0, named=True)
        where = {"customers": pl.col("customer_id") == inv["customer_id"],
                 "purchase_orders": pl.col("po_number") == inv["po_number"],
                 "po_lines": (pl.col("po_number") == inv["po_number"])
                 & (pl.col("po_line_no") == line["po_line_no"]),
                 "delivery_notes": pl.col("delivery_note_number") == line["delivery_note_number"],
                 "delivery_note_lines": (pl.col("delivery_note_number")
                                         == line["delivery_note_number"])
                 & (pl.col("po_line_no") == line["po_line_no"]),
                 "invoice_lines": (pl.col("invoice_number") == inv["invoice_number"])
                 & (pl.col("line_no") == 1)}[table]
        frame = getattr(b, table)
        copy = _set(frame.filter(where), pl.lit(True), **changes)
        bundle = replace(b, **{table: pl.concat([frame, copy])})
        if table == "invoice_lines":
            bundle = _with_lines(b, bundle.invoice_lines)
        return Case(bundle, inv["invoice_number"])
    return mutate


def _line_without_invoice(b: ExtractBundle) -> Case:
    line = b.invoice_lines[:1].with_columns(invoice_number=pl.lit("FA2026-GHOST"))
    return Case(replace(b, invoice_lines=pl.concat([b.invoice_lines, line])), "FA2026-GHOST")


def _renumber(new: str) -> Mutation:
    def mutate(b: ExtractBundle) -> Case:
        old = _first(b)["invoice_number"]
        rename = {"invoice_number": pl.when(pl.col("invoice_number") == old).then(pl.lit(new))
                  .otherwise(pl.col("invoice_number"))}
        return Case(replace(b, invoices=b.invoices.with_columns(**rename),
                            invoice_lines=b.invoice_lines.with_columns(**rename)), new)
    return mutate


def _x12_number_too_long(b: ExtractBundle) -> Case:
    """A 23-character number for a customer receiving X12 (BIG02 holds 22)."""
    case = _renumber("FA2026-00000000000000001")(b)
    customer = _first(b)["customer_id"]
    return replace(case, edi=EdiSettings(customers={customer: ["x12"]}))


MUTATIONS: dict[str, Mutation] = {
    # integrity
    "DUPLICATE_CUSTOMER": _copy_row("customers", legal_name="Other SARL",
                                    email="other@evil.example"),
    "DUPLICATE_PO": _copy_row("purchase_orders"),
    "DUPLICATE_PO_LINE": _copy_row("po_lines", quantity_ordered=Decimal("1")),
    "DUPLICATE_DELIVERY_NOTE": _copy_row("delivery_notes"),
    "DUPLICATE_DELIVERY_NOTE_LINE": _copy_row("delivery_note_lines"),
    "DUPLICATE_LINE_NO": _copy_row("invoice_lines"),
    "REQUIRED_VALUE_MISSING": _customer("email", language=None),
    "LINE_NO_INVALID": _line(line_no=2**62),
    "LINE_WITHOUT_INVOICE": _line_without_invoice,
    "EDI_REFERENCE_UNFIT": _x12_number_too_long,
    "CONTROL_CHARACTER": _customer("email", legal_name="Martin\x00SARL"),
    "IDENTIFIER_INVALID": _customer("email", brand="marque été"),
    "TEXT_TOO_LONG": _line(description="x" * 1001),
    "NAME_OR_ADDRESS_MISSING": _customer("email", city=" "),
    "INVOICE_NUMBER_INVALID": _renumber("../FA2026"),
    "DATE_OUT_OF_RANGE": _header(due_date=date(9999, 12, 31)),
    "DUE_DATE_TOO_FAR": _header(due_date=date(2028, 1, 1)),
    "PAYMENT_TERMS_INVALID": _customer("email", payment_terms_days=-1),
    "DELIVERY_DATE_IMPLAUSIBLE": _header(delivery_date=date(2026, 12, 31)),
    "UNIT_INVALID": _line(unit="PIECE"),
    "VAT_CATEGORY_UNKNOWN": _line(vat_category="Q"),
    "AMOUNT_OUT_OF_RANGE": _bump_line("unit_price", "99999999999999.9999", times=0),
    "QUANTITY_ZERO": _bump_line("quantity", "0", times=0),
    "LANGUAGE_UNKNOWN": _customer("email", language="es"),
    "PEPPOL_ID_INVALID": _customer("peppol", peppol_id="12345678900011"),
    # numbering
    "INVOICE_TYPE_UNKNOWN": _header(invoice_type="proforma"),
    "DUPLICATE_NUMBER": _duplicate,
    "DUPLICATE_OF_ARCHIVED": _archived_with_other_content,
    "SEQUENCE_GAP": _gap,
    "DUE_BEFORE_ISSUE": _header(due_date=date(2026, 10, 1)),
    "ISSUE_DATE_IN_FUTURE": _header(issue_date=TODAY + timedelta(days=1),
                                    due_date=TODAY + timedelta(days=31)),
    # parties
    "CUSTOMER_UNKNOWN": _header(customer_id="C-NOBODY"),
    "SELLER_ID_INVALID": _bad_seller,
    "SIREN_INVALID": _customer("email", siren="732829321"),
    "VAT_ID_INVALID": _customer("email", vat_id="FR00732829320"),
    "VAT_ID_SIREN_MISMATCH": _vat_of_other_siren,
    "COUNTRY_INVALID": _customer("email", country="Channel Islands"),
    "CHANNEL_UNKNOWN": _customer("email", channel="fax"),
    "CHANNEL_ADDRESS_MISSING": _customer("email", email=None),
    "EMAIL_INVALID": _customer("email", email="compta@client.example\nBcc: x@evil.example"),
    "GLN_INVALID": _customer("edi", gln="3012345678901"),
    "POSTAL_ADDRESS_INCOMPLETE": _customer("print", postcode="7500"),
    "POSTAL_LINE_TOO_LONG": _customer("print", address_line1="Zone industrielle des Grands "
                                      "Champs, bâtiment C"),
    "POSTCODE_INVALID": _customer("edi", postcode="75004 PARIS CEDEX"),
    "SHIP_TO_INCOMPLETE": _header(ship_to_address_line1="Quai 4", ship_to_postcode="69007",
                                  ship_to_city="Lyon", ship_to_country="France"),
    # three-way match
    "PO_UNKNOWN": _header(po_number="PO-DOES-NOT-EXIST"),
    "PO_CLOSED": _of_first_invoice("purchase_orders", "po_number", status="closed"),
    "PO_OTHER_CUSTOMER": _of_first_invoice("purchase_orders", "po_number", customer_id="C99999"),
    "CURRENCY_MISMATCH": _of_first_invoice("purchase_orders", "po_number", currency="USD"),
    "PO_LINE_UNKNOWN": _line(po_line_no=999),
    "PO_LINE_SKU_MISMATCH": _line(sku="ART-0000"),
    "PRICE_MISMATCH": _bump_line("unit_price", "0.0100"),
    "DELIVERY_NOTE_UNKNOWN": _line(delivery_note_number="BL-NOWHERE"),
    "DELIVERY_NOTE_OTHER_PO": _of_first_invoice("delivery_notes", "delivery_note_number",
                                                po_number="PO-OTHER"),
    "DELIVERED_AFTER_INVOICE": _of_first_invoice("delivery_notes", "delivery_note_number",
                                                 delivery_date=TODAY),
    "QTY_OVER_DELIVERED": _bump_line("quantity", "0.001"),
    "QTY_OVER_ORDERED": _of_first_invoice("po_lines", "po_number",
                                          quantity_ordered=Decimal("0.001")),
    # amounts
    "NO_LINES": _no_lines,
    "DESCRIPTION_MISSING": _line(description="  "),
    "CURRENCY_INVALID": _header(currency="EURO"),
    "VAT_RATE_NOT_ALLOWED": _line(vat_rate=Decimal("19.60")),
    "VAT_CATEGORY_INCONSISTENT": _line(vat_rate=Decimal("0")),
    "VAT_EXEMPTION_MISSING": _line(vat_rate=Decimal("0"), vat_category="E"),
    "ITEM_NATURE_UNKNOWN": _line(item_nature="hardware"),
    "EXEMPTION_CONDITIONS_UNMET": _intra_eu_supply_to_a_buyer_without_vat_id,
    "NEGATIVE_QTY_ON_INVOICE": _bump_line("quantity", "0", times=-1),
    "UNIT_PRICE_NEGATIVE": _bump_line("unit_price", "-1", times=0),
    "UNIT_PRICE_ZERO": _bump_line("unit_price", "0", times=0),
    "TOTALS_MISMATCH": _header(total_gross=Decimal("0.01")),
    "CREDITED_INVOICE_UNKNOWN": _credit_unknown,
    "CREDITED_INVOICE_REJECTED": _credit_of_rejected,
    "CREDIT_NOTE_REFERENCE_INVALID": _credit_of_credit,
    "CREDIT_EXCEEDS_INVOICE": _credit_too_much,
}


def test_every_rule_has_a_firing_test() -> None:
    assert set(MUTATIONS) == set(REGISTRY)


def test_clean_extract_has_no_finding(clean_bundle: ExtractBundle) -> None:
    result = validate(clean_bundle, SELLER, today=TODAY)
    assert result.findings.height == 0, result.findings
    assert result.accepted.height == clean_bundle.invoices.height


@pytest.mark.parametrize("code", sorted(MUTATIONS))
def test_rule_fires_on_its_defect_only(clean_bundle: ExtractBundle, code: str) -> None:
    case = MUTATIONS[code](clean_bundle)
    result = run(case)
    fired = result.findings.filter(pl.col("code") == code)
    assert case.number in fired["invoice_number"].to_list(), result.findings
    assert set(fired["severity"]) == {REGISTRY[code].severity}
    if REGISTRY[code].severity == "error":
        assert case.number not in result.accepted["invoice_number"].to_list()
    assert result.input_invoices == result.accepted.height + result.rejected
    # the same rule stays silent on the untouched extract
    clean = validate(clean_bundle, SELLER, history=case.history, today=TODAY)
    assert clean.findings.filter(pl.col("code") == code).height == (
        1 if code == "DUPLICATE_OF_ARCHIVED" else 0)


def test_findings_carry_expected_actual_and_context(clean_bundle: ExtractBundle) -> None:
    case = MUTATIONS["PRICE_MISMATCH"](clean_bundle)
    [finding] = run(case).findings.to_dicts()
    assert finding["line_no"] == 1 and finding["po_number"].startswith("PO-")
    assert Decimal(finding["actual"]) - Decimal(finding["expected"]) == Decimal("0.0100")
    assert finding["amount_at_stake"] > 0 and finding["customer_id"].startswith("C")


def test_rule_can_be_downgraded_or_switched_off(clean_bundle: ExtractBundle) -> None:
    case = MUTATIONS["PRICE_MISMATCH"](clean_bundle)
    warned = run(case, ValidationSettings(rules={"PRICE_MISMATCH": "warning"}))
    assert case.number in warned.accepted["invoice_number"].to_list()
    assert warned.findings["severity"].to_list() == ["warning"]
    assert run(case, ValidationSettings(rules={"PRICE_MISMATCH": "off"})).findings.height == 0
    with pytest.raises(ValueError, match="unknown rule code"):
        run(case, ValidationSettings(rules={"NOT_A_RULE": "off"}))


def test_price_tolerance_absolute_percent_and_per_customer(clean_bundle: ExtractBundle) -> None:
    case = MUTATIONS["PRICE_MISMATCH"](clean_bundle)  # 0.01 above the PO price
    customer = _first(clean_bundle)["customer_id"]
    assert run(case, ValidationSettings(price_tolerance=Tolerance(absolute=Decimal("0.01")))
               ).findings.height == 0
    assert run(case, ValidationSettings(price_tolerance=Tolerance(absolute=Decimal("0.009")))
               ).findings.height == 1
    assert run(case, ValidationSettings(price_tolerance=Tolerance(percent=Decimal("100")))
               ).findings.height == 0
    per_customer = ValidationSettings(customer_tolerances={customer: Tolerance(
        absolute=Decimal("0.05"))})
    assert run(case, per_customer).findings.height == 0


def test_archived_invoices_count_in_cumulative_quantities(clean_bundle: ExtractBundle) -> None:
    inv = _first(clean_bundle)
    line = clean_bundle.invoice_lines.filter(pl.col("invoice_number") == inv["invoice_number"]
                                             ).row(0, named=True)
    billed = pl.DataFrame([{"invoice_number": "FA2025-000001", "po_number": inv["po_number"],
                            "po_line_no": line["po_line_no"], "quantity": Decimal("0.001")}],
                          schema=BILLED_LINES)
    result = validate(clean_bundle, SELLER, history=History(pl.DataFrame(schema=INDEX), billed),
                      today=TODAY)
    assert set(result.findings["code"]) == {"QTY_OVER_DELIVERED", "QTY_OVER_ORDERED"}


def test_an_unchanged_rerun_is_not_a_duplicate(clean_bundle: ExtractBundle) -> None:
    """The archive holding this very extract (a re-run) yields no finding at all."""
    from pipeline import money
    from pipeline.validate import compute_totals
    lines = clean_bundle.invoice_lines.with_columns(
        net_cents=money.line_net_cents("quantity", "unit_price"))
    totals = compute_totals(lines)
    index = clean_bundle.invoices.join(totals, on="invoice_number").with_columns(
        total_gross=money.cents_to_text("gross_cents").cast(money.AMOUNT),
        channel=pl.lit("email"), status=pl.lit("delivered"), storage_key=pl.lit("k"),
        sha256=pl.lit("0"), bytes=pl.lit(1), period=pl.lit("2026-11"), run_id=pl.lit("r"),
        delivered_keys=pl.lit(None, dtype=pl.List(pl.String))
    ).select(list(INDEX)).cast(dict(INDEX))
    billed = clean_bundle.invoice_lines.join(clean_bundle.invoices, on="invoice_number").filter(
        pl.col("po_number").is_not_null()).select(list(BILLED_LINES))
    result = validate(clean_bundle, SELLER, history=History(index, billed), today=TODAY)
    assert result.findings.height == 0, result.findings


def test_5000_invoices_every_injected_defect_caught_and_no_clean_one_rejected(
        tmp_path: Path) -> None:
    generate_extract(tmp_path / "x", 5000, seed=2026, defect_rate=0.05)
    bundle = load_extract(tmp_path / "x")
    truth = pl.read_parquet(tmp_path / "x" / DEFECTS_FILE)
    result = validate(bundle, SELLER, today=TODAY)
    errors = result.findings.filter(pl.col("severity") == "error")

    assert result.input_invoices == 5000
    assert result.input_invoices == result.accepted.height + result.rejected
    missed = truth.join(errors, left_on=["invoice_number", "expected_code"],
                        right_on=["invoice_number", "code"], how="anti")
    assert missed.height == 0, missed
    wrongly_rejected = errors.join(truth, on="invoice_number", how="anti")
    assert wrongly_rejected.height == 0, wrongly_rejected
    assert result.rejected == truth.height


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invoices=st.integers(min_value=1, max_value=400), seed=st.integers(0, 2**32 - 1),
       defect_rate=st.sampled_from([0.0, 0.0, 0.03, 0.2]))
def test_property_every_invoice_is_accounted_for(tmp_path_factory, invoices, seed,
                                                 defect_rate) -> None:
    out = tmp_path_factory.mktemp("prop") / "x"
    generate_extract(out, invoices, seed=seed, defect_rate=defect_rate)
    result = validate(load_extract(out), SELLER, today=TODAY)
    truth = pl.read_parquet(out / DEFECTS_FILE)
    assert result.accepted.height + result.rejected == result.input_invoices == invoices
    assert result.rejected == truth.height
    if defect_rate == 0:
        assert result.findings.filter(pl.col("severity") == "error").height == 0


def test_rules_doc_is_generated_from_the_registry() -> None:
    committed = (PROJECT_ROOT / "docs" / "validation-rules.md").read_text()
    assert committed == rules_markdown(), "run: invoices rules > docs/validation-rules.md"
    assert all(f"`{code}`" in committed for code in REGISTRY)


def test_fixed_rules_cannot_be_lowered(clean_bundle: ExtractBundle) -> None:
    case = MUTATIONS["CONTROL_CHARACTER"](clean_bundle)
    for severity in ("warning", "off"):
        with pytest.raises(ValueError, match="always reject"):
            run(case, ValidationSettings(rules={"CONTROL_CHARACTER": severity}))


def test_duplicate_customer_names_both_rows_and_what_differs(clean_bundle: ExtractBundle) -> None:
    case = MUTATIONS["DUPLICATE_CUSTOMER"](clean_bundle)
    found = run(case).findings.filter(pl.col("code") == "DUPLICATE_CUSTOMER")
    customer = _first(clean_bundle)["customer_id"]
    first = clean_bundle.customers.with_row_index().filter(
        pl.col("customer_id") == customer)["index"][0]
    last = case.bundle.customers.height - 1
    assert found.height == clean_bundle.invoices.filter(pl.col("customer_id") == customer).height
    assert set(found["detail"]) == {f"customers rows {first}, {last} share customer_id "
                                    f"{customer}; they differ in legal_name, email"}


def test_overflowing_line_is_rejected_not_a_crash(clean_bundle: ExtractBundle) -> None:
    """Issue 9: unit price 99,999,999,999,999.9999 x 500 overflowed decimal(18,2) in Polars."""
    number = _first(clean_bundle)["invoice_number"]
    where = (pl.col("invoice_number") == number) & (pl.col("line_no") == 1)
    lines = _set(clean_bundle.invoice_lines, where, unit_price=Decimal("99999999999999.9999"),
                 quantity=Decimal("500"))
    result = run(Case(replace(clean_bundle, invoice_lines=lines), number))
    codes = set(result.findings.filter(pl.col("invoice_number") == number)["code"])
    assert "AMOUNT_OUT_OF_RANGE" in codes
    assert result.accepted.height == clean_bundle.invoices.height - 1
    found = result.findings.filter(pl.col("code") == "AMOUNT_OUT_OF_RANGE")
    assert dict(zip(found["detail"], found["actual"], strict=True)) == {
        "unit_price": "99999999999999.9999", "line amount": "49999999999999999.95"}


def test_unit_codes_are_the_en16931_list() -> None:
    import re

    from pipeline.settings import SHARED_DIR
    from pipeline.validate.amounts import UNIT_CODES
    xslt = (SHARED_DIR / "standards" / "cii" / "EN16931-CII-validation.xslt").read_text()
    start = xslt.index('ram:BasisQuantity[@unitCode] | ram:BilledQuantity[@unitCode]" mode=')
    listed = re.search(r"contains\(' ([^']*) '", xslt[start:]).group(1).split()
    assert UNIT_CODES == frozenset(listed)
