"""Every rule fires on a targeted defect and stays silent on a clean extract."""

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from pipeline.ingest import ExtractBundle, load_extract
from pipeline.sample import DEFECTS_FILE, generate_extract
from pipeline.validate import REGISTRY, validate

Mutation = Callable[[ExtractBundle], tuple[ExtractBundle, str]]


def _invoice_of_channel(b: ExtractBundle, channel: str) -> tuple[str, str]:
    row = (b.invoices.filter(pl.col("invoice_type") == "invoice")
           .join(b.customers.filter(pl.col("channel") == channel), on="customer_id").row(0, named=True))
    return row["invoice_number"], row["customer_id"]


def _first_invoice(b: ExtractBundle) -> dict:
    return b.invoices.filter(pl.col("invoice_type") == "invoice").row(0, named=True)


def _set(frame: pl.DataFrame, where: pl.Expr, **values: object) -> pl.DataFrame:
    return frame.with_columns(**{k: pl.when(where).then(pl.lit(v, dtype=frame.schema[k]))
                                 .otherwise(pl.col(k)) for k, v in values.items()})


def _customer_field(of_channel: str, **values: object) -> Mutation:
    def mutate(b: ExtractBundle) -> tuple[ExtractBundle, str]:
        number, customer = _invoice_of_channel(b, of_channel)
        return replace(b, customers=_set(b.customers, pl.col("customer_id") == customer,
                                         **values)), number
    return mutate


def _header(**values: object) -> Mutation:
    def mutate(b: ExtractBundle) -> tuple[ExtractBundle, str]:
        number = _first_invoice(b)["invoice_number"]
        return replace(b, invoices=_set(b.invoices, pl.col("invoice_number") == number,
                                        **values)), number
    return mutate


def _first_line(**values: object) -> Mutation:
    def mutate(b: ExtractBundle) -> tuple[ExtractBundle, str]:
        number = _first_invoice(b)["invoice_number"]
        where = (pl.col("invoice_number") == number) & (pl.col("line_no") == 1)
        return replace(b, invoice_lines=_set(b.invoice_lines, where, **values)), number
    return mutate


def _duplicate(b: ExtractBundle) -> tuple[ExtractBundle, str]:
    return replace(b, invoices=pl.concat([b.invoices, b.invoices[:1]])), b.invoices[
        "invoice_number"][0]


def _no_lines(b: ExtractBundle) -> tuple[ExtractBundle, str]:
    number = _first_invoice(b)["invoice_number"]
    return replace(b, invoice_lines=b.invoice_lines.filter(
        pl.col("invoice_number") != number)), number


def _po_owner(b: ExtractBundle) -> tuple[ExtractBundle, str]:
    inv = _first_invoice(b)
    return replace(b, purchase_orders=_set(b.purchase_orders, pl.col("po_number") == inv["po_number"],
                                           customer_id="C99999")), inv["invoice_number"]


def _bump_first_line(column: str, delta: str) -> Mutation:
    def mutate(b: ExtractBundle) -> tuple[ExtractBundle, str]:
        number = _first_invoice(b)["invoice_number"]
        where = (pl.col("invoice_number") == number) & (pl.col("line_no") == 1)
        lines = b.invoice_lines.with_columns(
            pl.when(where).then(pl.col(column) + Decimal(delta)).otherwise(pl.col(column))
            .cast(b.invoice_lines.schema[column]).alias(column))
        return replace(b, invoice_lines=lines), number
    return mutate


def _dn_other_po(b: ExtractBundle) -> tuple[ExtractBundle, str]:
    number = _first_invoice(b)["invoice_number"]
    dn = b.invoice_lines.filter(pl.col("invoice_number") == number)["delivery_note_number"][0]
    return replace(b, delivery_notes=_set(b.delivery_notes, pl.col("delivery_note_number") == dn,
                                          po_number="PO-OTHER")), number


def _credit_unknown(b: ExtractBundle) -> tuple[ExtractBundle, str]:
    number = b.invoices.filter(pl.col("invoice_type") == "credit_note")["invoice_number"][0]
    return replace(b, invoices=_set(b.invoices, pl.col("invoice_number") == number,
                                    credited_invoice_number="FA1999-000001")), number


MUTATIONS: dict[str, Mutation] = {
    "INVOICE_TYPE_UNKNOWN": _header(invoice_type="proforma"),
    "DUPLICATE_NUMBER": _duplicate,
    "NO_LINES": _no_lines,
    "CUSTOMER_UNKNOWN": _header(customer_id="C-NOBODY"),
    "SIREN_INVALID": _customer_field("email", siren="732829321"),
    "VAT_ID_INVALID": _customer_field("email", vat_id="FR00732829320"),
    "CHANNEL_UNKNOWN": _customer_field("email", channel="fax"),
    "CHANNEL_ADDRESS_MISSING": _customer_field("email", email=None),
    "EMAIL_INVALID": _customer_field("email", email="compta@client.example\nBcc: x@evil.example"),
    "GLN_INVALID": _customer_field("edi", gln="3012345678901"),
    "PO_UNKNOWN": _header(po_number="PO-DOES-NOT-EXIST"),
    "PO_OTHER_CUSTOMER": _po_owner,
    "PO_LINE_UNKNOWN": _first_line(po_line_no=999),
    "PRICE_MISMATCH": _bump_first_line("unit_price", "0.0100"),
    "DELIVERY_NOTE_UNKNOWN": _first_line(delivery_note_number="BL-NOWHERE"),
    "DELIVERY_NOTE_OTHER_PO": _dn_other_po,
    "QTY_OVER_DELIVERED": _bump_first_line("quantity", "0.001"),
    "CREDITED_INVOICE_UNKNOWN": _credit_unknown,
}


def test_every_rule_has_a_firing_test() -> None:
    assert set(MUTATIONS) == set(REGISTRY)


def test_clean_extract_has_no_finding(clean_bundle: ExtractBundle) -> None:
    result = validate(clean_bundle)
    assert result.findings.height == 0
    assert result.accepted.height == clean_bundle.invoices.height


@pytest.mark.parametrize("code", sorted(MUTATIONS))
def test_rule_fires_on_its_defect_only(clean_bundle: ExtractBundle, code: str) -> None:
    bundle, number = MUTATIONS[code](clean_bundle)
    result = validate(bundle)
    fired = result.findings.filter(pl.col("code") == code)
    assert number in fired["invoice_number"].to_list(), result.findings
    assert number not in result.accepted["invoice_number"].to_list()
    assert result.input_invoices == result.accepted.height + result.rejected
    # the same rule stays silent on the untouched extract
    assert validate(clean_bundle).findings.filter(pl.col("code") == code).height == 0


def test_rule_can_be_downgraded_or_switched_off(clean_bundle: ExtractBundle) -> None:
    bundle, number = MUTATIONS["PRICE_MISMATCH"](clean_bundle)
    warned = validate(bundle, {"PRICE_MISMATCH": "warning"})
    assert number in warned.accepted["invoice_number"].to_list()
    assert warned.findings["severity"].to_list() == ["warning"]
    assert validate(bundle, {"PRICE_MISMATCH": "off"}).findings.height == 0
    with pytest.raises(ValueError, match="unknown rule code"):
        validate(bundle, {"NOT_A_RULE": "off"})


def test_credit_note_may_credit_an_archived_invoice(clean_bundle: ExtractBundle) -> None:
    bundle, number = _credit_unknown(clean_bundle)
    archived = pl.Series("invoice_number", ["FA1999-000001"])
    assert validate(bundle, archived_numbers=archived).findings.height == 0


def test_5000_invoices_every_injected_defect_caught_and_no_clean_one_rejected(
        tmp_path: Path) -> None:
    generate_extract(tmp_path / "x", 5000, seed=2026, defect_rate=0.05)
    bundle = load_extract(tmp_path / "x")
    truth = pl.read_parquet(tmp_path / "x" / DEFECTS_FILE)
    result = validate(bundle)
    errors = result.findings.filter(pl.col("severity") == "error")

    assert result.input_invoices == 5000
    assert result.input_invoices == result.accepted.height + result.rejected
    missed = truth.join(errors, left_on=["invoice_number", "expected_code"],
                        right_on=["invoice_number", "code"], how="anti")
    assert missed.height == 0, missed
    wrongly_rejected = errors.join(truth, on="invoice_number", how="anti")
    assert wrongly_rejected.height == 0, wrongly_rejected
    assert result.rejected == truth.height
