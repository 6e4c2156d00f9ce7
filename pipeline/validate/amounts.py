"""Amounts: lines, VAT, currency, header totals and credit notes.

Totals are recomputed with EN 16931 rounding through ``money`` (line nets to
the cent, VAT per rate on the sum of the lines) and compared to the cent.
"""

from __future__ import annotations

import polars as pl
from babel.numbers import list_currencies

from pipeline import money
from pipeline.codes import UNIT_CODES
from pipeline.schemas import ITEM_NATURES
from pipeline.validate.integrity import BLANK
from pipeline.validate.registry import RuleInput, rule

# ISO 4217 codes nobody pays an invoice in: precious metals, SDR and settlement units,
# the testing code, "no currency", and fund or index codes.
NOT_TENDER = frozenset({"XAG", "XAU", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU",
                        "XUA", "XTS", "XXX", "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN",
                        "UYI", "UYW"})
CURRENCIES = frozenset(list_currencies()) - NOT_TENDER
VAT_CATEGORIES = ("S", "Z", "E", "AE", "K", "G", "O", "L", "M")


@rule("NO_LINES", "error", "The invoice has no lines in invoice_lines.")
def no_lines(x: RuleInput) -> pl.DataFrame:
    return x.invoices.join(x.bundle.invoice_lines, on="invoice_number", how="anti").select(
        "invoice_number", detail=pl.lit("no line refers to this invoice"))


@rule("DESCRIPTION_MISSING", "error",
      "A line's description is empty or shows nothing (zero-width characters only; "
      "EN 16931 BT-153).")
def description_missing(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(pl.col("description").str.contains(BLANK)).select(
        "invoice_number", "line_no", actual=pl.col("sku"))


@rule("CURRENCY_INVALID", "error",
      "The currency is not an ISO 4217 code one can pay in (metals, XTS, XXX and fund codes "
      "are refused).")
def currency_invalid(x: RuleInput) -> pl.DataFrame:
    return x.invoices.filter(~pl.col("currency").is_in(sorted(CURRENCIES))).select(
        "invoice_number", actual="currency")


@rule("UNIT_INVALID", "error",
      "The unit is not a UN/ECE Rec 20 / Rec 21 code (EN 16931 BR-CL-23), e.g. C62, KGM, HUR.")
def unit_invalid(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(~pl.col("unit").is_in(sorted(UNIT_CODES))).select(
        "invoice_number", "line_no", actual=pl.col("unit").str.slice(0, 60))


@rule("VAT_CATEGORY_UNKNOWN", "error",
      "The VAT category is not an EN 16931 code (S, Z, E, AE, K, G, O, L, M).")
def vat_category_unknown(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(~pl.col("vat_category").is_in(VAT_CATEGORIES)).select(
        "invoice_number", "line_no", actual=pl.col("vat_category").str.slice(0, 60))


@rule("AMOUNT_OUT_OF_RANGE", "error",
      "A unit price, quantity, line amount or invoice total is beyond [validation.limits] "
      "max_amount (999,999,999.99) or max_quantity: the formats and the layout could not "
      "carry it, or it is an error.", fixed=True)
def amount_out_of_range(x: RuleInput) -> pl.DataFrame:
    limits = x.config.limits
    cents = int(limits.max_amount * 100)
    checks = (("unit_price", money.scaled("unit_price").abs() > int(limits.max_amount * 10_000),
               pl.col("unit_price").cast(pl.String)),
              ("quantity", money.scaled("quantity").abs() > int(limits.max_quantity * 1000),
               pl.col("quantity").cast(pl.String)),
              ("line amount", pl.col("raw_net_cents").abs() > cents,
               money.cents_to_text("raw_net_cents")))
    found = [x.lines.filter(over).select("invoice_number", "line_no", detail=pl.lit(what),
                                         actual=shown,
                                         expected=pl.lit(f"<= {limits.max_amount}"))
             for what, over, shown in checks]
    for total in ("net_cents", "vat_cents", "gross_cents"):
        found.append(x.totals.filter(pl.col(total).abs() > cents).select(
            "invoice_number", detail=pl.lit("invoice " + total.removesuffix("_cents")),
            actual=money.cents_to_text(total), expected=pl.lit(f"<= {limits.max_amount}")))
    return pl.concat(found, how="diagonal")


@rule("QUANTITY_ZERO", "error", "A line with quantity zero bills nothing: a missing quantity.")
def quantity_zero(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(pl.col("quantity") == 0).select("invoice_number", "line_no",
                                                          actual=pl.col("sku"))


@rule("VAT_RATE_NOT_ALLOWED", "error", "The VAT rate is not one of the seller country's rates.")
def vat_rate_not_allowed(x: RuleInput) -> pl.DataFrame:
    rates = x.config.vat_rates.get(x.seller.country, [])
    allowed = pl.Series([money.round_amount(r) for r in rates], dtype=money.RATE)
    return x.lines.filter(~pl.col("vat_rate").is_in(allowed.implode())).select(
        "invoice_number", "line_no", actual=pl.col("vat_rate").cast(pl.String),
        expected=pl.lit(" / ".join(str(r) for r in rates)))


@rule("VAT_CATEGORY_INCONSISTENT", "error",
      "Category S (standard) needs a rate above 0; any other category needs rate 0.")
def vat_category_inconsistent(x: RuleInput) -> pl.DataFrame:
    standard = pl.col("vat_category") == "S"
    zero = pl.col("vat_rate") == 0
    return x.lines.filter((standard & zero) | (~standard & ~zero)).select(
        "invoice_number", "line_no",
        actual=pl.format("category {} at {} %", "vat_category", "vat_rate"))


@rule("VAT_EXEMPTION_MISSING", "error",
      "A line outside category S gives no exemption reason (text or VATEX code).")
def vat_exemption_missing(x: RuleInput) -> pl.DataFrame:
    reason = pl.col("vat_exemption_reason")
    return x.lines.filter((pl.col("vat_category") != "S")
                          & (reason.is_null() | (reason.str.strip_chars() == ""))).select(
        "invoice_number", "line_no", actual="vat_category")


@rule("ITEM_NATURE_UNKNOWN", "error",
      "A line's item_nature is neither goods nor services (it decides the billing mode BT-23 "
      "and the operation category printed; leave it empty for the seller's default).")
def item_nature_unknown(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(pl.col("item_nature").is_not_null()
                          & ~pl.col("item_nature").is_in(ITEM_NATURES)).select(
        "invoice_number", "line_no", actual=pl.col("item_nature").str.slice(0, 60))


@rule("EXEMPTION_CONDITIONS_UNMET", "error",
      "An intra-community supply (K) or a reverse charge (AE) names no buyer VAT number, or an "
      "intra-community supply has no date of supply (EN 16931 BR-IC-02, BR-AE-02, BR-IC-11).")
def exemption_conditions_unmet(x: RuleInput) -> pl.DataFrame:
    buyers = x.customers.select("customer_id", buyer_vat="vat_id")
    supplied = x.bundle.delivery_notes.select("delivery_note_number", "delivery_date").rename(
        {"delivery_date": "dn_date"})
    dated = x.invoices.select("invoice_number", "delivery_date").unique("invoice_number",
                                                                         keep="first")
    lines = (x.lines.join(buyers, on="customer_id", how="left")
             .join(dated, on="invoice_number", how="left")
             .join(supplied, on="delivery_note_number", how="left"))
    no_vat_id = pl.col("vat_category").is_in(["K", "AE"]) & (
        pl.col("buyer_vat").is_null() | (pl.col("buyer_vat").str.strip_chars() == ""))
    no_date = (pl.col("vat_category") == "K") & pl.col("delivery_date").is_null() & pl.col(
        "dn_date").is_null()
    return lines.filter(no_vat_id | no_date).select(
        "invoice_number", "line_no",
        detail=pl.when(no_vat_id).then(pl.lit("the buyer has no VAT number"))
        .otherwise(pl.lit("no delivery date, on the invoice or its delivery notes")),
        actual="vat_category")


@rule("NEGATIVE_QTY_ON_INVOICE", "error", "A negative quantity on an invoice (only credit notes).")
def negative_qty_on_invoice(x: RuleInput) -> pl.DataFrame:
    return x.invoice_lines_only.filter(pl.col("quantity") < 0).select(
        "invoice_number", "line_no", actual=pl.col("quantity").cast(pl.String))


@rule("UNIT_PRICE_NEGATIVE", "error", "A negative unit price (an adjustment, not a sale).")
def unit_price_negative(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(pl.col("unit_price") < 0).select(
        "invoice_number", "line_no", actual=pl.col("unit_price").cast(pl.String))


@rule("UNIT_PRICE_ZERO", "warning", "A line at unit price zero (free goods or a missing price).")
def unit_price_zero(x: RuleInput) -> pl.DataFrame:
    return x.lines.filter(pl.col("unit_price") == 0).select("invoice_number", "line_no",
                                                            actual=pl.col("sku"))


@rule("TOTALS_MISMATCH", "error",
      "A header total given by the ERP differs from the total recomputed from the lines.")
def totals_mismatch(x: RuleInput) -> pl.DataFrame:
    found = []
    for header, computed in (("total_net", "net_cents"), ("total_vat", "vat_cents"),
                             ("total_gross", "gross_cents")):
        given = x.invoices.filter(pl.col(header).is_not_null()).select(
            "invoice_number", given=money.scaled(header))
        found.append(given.join(x.totals.select("invoice_number", computed), on="invoice_number")
                     .filter(pl.col("given") != pl.col(computed)).select(
            "invoice_number", detail=pl.lit(header),
            expected=money.cents_to_text(computed), actual=money.cents_to_text("given")))
    return pl.concat(found)


@rule("CREDITED_INVOICE_UNKNOWN", "error",
      "A credit note names no invoice, or one found neither in the extract nor in the archive.")
def credited_invoice_unknown(x: RuleInput) -> pl.DataFrame:
    known = pl.concat([x.invoices["invoice_number"], x.history.invoices["invoice_number"]])
    return x.invoices.filter(
        (pl.col("invoice_type") == "credit_note")
        & (pl.col("credited_invoice_number").is_null()
           | ~pl.col("credited_invoice_number").is_in(known.implode()))
    ).select("invoice_number", actual=pl.col("credited_invoice_number").fill_null("(none)"))


@rule("CREDIT_NOTE_REFERENCE_INVALID", "error",
      "A credit note names itself, another credit note, an invoice of another customer, or an "
      "invoice issued after it.")
def credit_note_reference_invalid(x: RuleInput) -> pl.DataFrame:
    documents = pl.concat([
        x.invoices.select("invoice_number", "invoice_type", "customer_id", "issue_date"),
        x.history.invoices.select("invoice_number", "invoice_type", "customer_id", "issue_date"),
    ]).unique("invoice_number", keep="first").rename(lambda c: f"credited_{c}")
    credits = x.invoices.filter(pl.col("invoice_type") == "credit_note").join(
        documents, left_on="credited_invoice_number", right_on="credited_invoice_number")
    reason = (pl.when(pl.col("credited_invoice_number") == pl.col("invoice_number"))
              .then(pl.lit("credits itself"))
              .when(pl.col("credited_invoice_type") != "invoice")
              .then(pl.lit("credits a credit note"))
              .when(pl.col("credited_customer_id") != pl.col("customer_id"))
              .then(pl.format("credits an invoice of customer {}", "credited_customer_id"))
              .when(pl.col("credited_issue_date") > pl.col("issue_date"))
              .then(pl.format("credits an invoice issued later, on {}",
                              "credited_issue_date")))
    return credits.with_columns(reason=reason).filter(pl.col("reason").is_not_null()).select(
        "invoice_number", detail="reason", actual=pl.col("credited_invoice_number"))


@rule("CREDITED_INVOICE_REJECTED", "error",
      "The invoice this credit note corrects is rejected in this extract (and was never "
      "issued before): the credit note waits for it.", after_others=True)
def credited_invoice_rejected(x: RuleInput) -> pl.DataFrame:
    rejected = x.rejected if x.rejected is not None else pl.Series([], dtype=pl.String)
    issued = x.history.invoices["invoice_number"].implode()
    return x.invoices.filter(
        (pl.col("invoice_type") == "credit_note")
        & pl.col("credited_invoice_number").is_in(rejected.implode())
        & ~pl.col("credited_invoice_number").is_in(issued)
    ).select("invoice_number", actual=pl.col("credited_invoice_number").str.slice(0, 60))


@rule("CREDIT_EXCEEDS_INVOICE", "error",
      "Credit notes (archived ones included) credit more than the invoice's gross amount.")
def credit_exceeds_invoice(x: RuleInput) -> pl.DataFrame:
    invoiced = pl.concat([
        x.invoices.filter(pl.col("invoice_type") == "invoice").join(
            x.totals, on="invoice_number").select("invoice_number", "gross_cents"),
        x.history.invoices.filter(pl.col("invoice_type") == "invoice").select(
            "invoice_number", gross_cents=money.scaled("total_gross")),
    ]).unique("invoice_number", keep="first")
    credits = pl.concat([
        x.invoices.filter(pl.col("invoice_type") == "credit_note").join(
            x.totals, on="invoice_number").select(
            "invoice_number", "credited_invoice_number", "issue_date",
            credit=pl.col("gross_cents").abs()),
        x.history.invoices.filter(pl.col("invoice_type") == "credit_note").select(
            "invoice_number", "credited_invoice_number", "issue_date",
            credit=money.scaled("total_gross").abs()),
    ]).sort("issue_date", "invoice_number")
    running = credits.join(invoiced.rename({"invoice_number": "credited_invoice_number"}),
                           on="credited_invoice_number").with_columns(
        credited=pl.col("credit").cum_sum().over("credited_invoice_number"))
    return running.filter(pl.col("credited") > pl.col("gross_cents")).join(
        x.invoices.select("invoice_number"), on="invoice_number").select(
        "invoice_number", detail=pl.format("credits {}", "credited_invoice_number"),
        expected=pl.format("<= {}", money.cents_to_text("gross_cents")),
        actual=money.cents_to_text("credited"))
