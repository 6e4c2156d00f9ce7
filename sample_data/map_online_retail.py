#!/usr/bin/env python3
"""Map the UCI "Online Retail" dataset (../shared/datasets) into our extract format.

    .venv/bin/python sample_data/map_online_retail.py --out /tmp/online_retail_extract
    .venv/bin/invoices validate /tmp/online_retail_extract

The dataset (Chen, D. (2012), UCI Machine Learning Repository, CC BY 4.0,
https://doi.org/10.24432/C5BW33) holds invoice lines of a UK online giftware
wholesaler: invoice number, stock code, description, quantity, date, unit
price (GBP), customer id and country. It has no purchase orders, delivery
notes, addresses, tax or credited-invoice references, so this mapping says
exactly what it derives and leaves the data's own anomalies in place:

- every invoice not starting with ``C`` becomes an ``invoice``; ``C`` (cancellation)
  invoices become ``credit_note`` without ``credited_invoice_number``, since the
  dataset does not say which invoice a cancellation corrects;
- a missing CustomerID becomes an empty ``customer_id``; a missing description an
  empty one; quantities and prices are kept as they are, zero and negative included;
- one purchase order (``PO-<invoice>``) and one delivery note (``DN-<invoice>``) per
  invoice are DERIVED from the invoice's own lines (ordered = delivered = invoiced,
  same prices, dated on the invoice day), so the three-way match cannot invent
  anomalies: what validation reports comes from the dataset itself;
- customers: ``Customer <id>``, the country they bought from most often, mapped to
  ISO 3166 with CLDR names (``Unspecified``, ``European Community`` and
  ``Channel Islands`` have no ISO code and are kept as written); the dataset has no
  addresses or identifiers, so the address is a marked placeholder, the channel is
  ``print`` and the language ``en``;
- every line is standard-rated 20 % VAT (the dataset carries no tax), unit ``C62``,
  currency GBP, due 30 days after issue.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from babel import Locale

from pipeline.schemas import polars_schema
from pipeline.settings import SHARED_DIR

DATASET = SHARED_DIR / "datasets" / "online_retail.parquet"
PLACEHOLDER = "(no address in the UCI dataset)"
ALIASES = {"EIRE": "IE", "USA": "US", "RSA": "ZA", "Czech Republic": "CZ"}


def country_codes() -> dict[str, str]:
    """English country names (CLDR, via Babel) and the dataset's aliases -> ISO alpha-2."""
    names = {name: code for code, name in Locale("en").territories.items()
             if len(code) == 2 and code.isalpha()}
    return {**names, **ALIASES}


def map_dataset(source: Path, out: Path) -> dict[str, int]:
    """Write the seven tables to ``out``; returns row counts."""
    raw = pl.read_parquet(source).with_row_index("row")
    lines = raw.with_columns(
        invoice_number=pl.col("InvoiceNo"),
        line_no=(pl.int_range(pl.len()).over("InvoiceNo") + 1).cast(pl.Int64),
        issue_date=pl.col("InvoiceDate").dt.date(),
        customer_id=pl.col("CustomerID").cast(pl.String).fill_null(""),
        is_credit=pl.col("InvoiceNo").str.starts_with("C"),
    )
    headers = lines.group_by("invoice_number", maintain_order=True).agg(
        pl.col("customer_id").first(), pl.col("issue_date").first(), pl.col("is_credit").first())
    invoices = headers.select(
        "invoice_number",
        invoice_type=pl.when("is_credit").then(pl.lit("credit_note")).otherwise(pl.lit("invoice")),
        customer_id="customer_id", issue_date="issue_date",
        delivery_date=pl.lit(None, dtype=pl.Date),
        due_date=pl.col("issue_date") + pl.duration(days=30), currency=pl.lit("GBP"),
        po_number=pl.when("is_credit").then(None).otherwise(pl.format("PO-{}", "invoice_number")),
        credited_invoice_number=pl.lit(None, dtype=pl.String))
    invoice_lines = lines.select(
        "invoice_number", "line_no", sku="StockCode",
        description=pl.col("Description").fill_null(""),
        quantity=pl.col("Quantity"), unit=pl.lit("C62"),
        unit_price=pl.col("UnitPrice").round(4), vat_rate=pl.lit(20),
        vat_category=pl.lit("S"), vat_exemption_reason=pl.lit(None, dtype=pl.String),
        po_line_no=pl.when("is_credit").then(None).otherwise("line_no"),
        delivery_note_number=pl.when("is_credit").then(None).otherwise(
            pl.format("DN-{}", "invoice_number")))

    codes = country_codes()
    customers = (lines.filter(pl.col("customer_id") != "")
                 .group_by("customer_id", "Country").agg(n=pl.len(), first=pl.col("row").min())
                 .sort("customer_id", "n", "first", descending=[False, True, False])
                 .unique("customer_id", keep="first").sort("customer_id")
                 .select("customer_id", legal_name=pl.format("Customer {}", "customer_id"),
                         address_line1=pl.lit(PLACEHOLDER), postcode=pl.lit("(none)"),
                         city=pl.lit("(none)"),
                         country=pl.col("Country").replace(codes),
                         channel=pl.lit("print"), language=pl.lit("en"),
                         payment_terms_days=pl.lit(30)))

    sold = invoice_lines.join(invoices.filter(pl.col("invoice_type") == "invoice")
                              .select("invoice_number", "customer_id", "issue_date",
                                      "po_number"), on="invoice_number")
    purchase_orders = sold.unique("invoice_number", keep="first", maintain_order=True).select(
        "po_number", "customer_id", order_date="issue_date", status=pl.lit("open"),
        currency=pl.lit("GBP"))
    po_lines = sold.select("po_number", "po_line_no", "sku", quantity_ordered="quantity",
                           unit_price="unit_price")
    delivery_notes = purchase_orders.select(
        delivery_note_number=pl.format("DN-{}", pl.col("po_number").str.slice(3)),
        po_number="po_number", delivery_date="order_date")
    delivery_note_lines = sold.select("delivery_note_number", "po_line_no", "sku",
                                      quantity_delivered="quantity")

    tables = {"customers": customers, "invoices": invoices, "invoice_lines": invoice_lines,
              "purchase_orders": purchase_orders, "po_lines": po_lines,
              "delivery_notes": delivery_notes, "delivery_note_lines": delivery_note_lines}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, frame in tables.items():
        schema = polars_schema(name)
        typed = frame.select([pl.col(c) if c in frame.columns else pl.lit(None).alias(c)
                              for c in schema]).cast(dict(schema))
        typed.write_parquet(out / f"{name}.parquet")
        counts[name] = typed.height
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DATASET)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for name, rows in map_dataset(args.source, args.out).items():
        print(f"{name}: {rows} rows")


if __name__ == "__main__":
    main()
