"""Parties: seller and buyer identities, countries, and what each channel needs.

Python-level checks (python-stdnum) run once per distinct value, never per line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl
from babel import Locale
from stdnum import ean
from stdnum.eu import vat
from stdnum.fr import siren, tva

from pipeline.codes import LANGUAGES
from pipeline.schemas import CHANNELS
from pipeline.validate.integrity import BLANK, flagged
from pipeline.validate.registry import RuleInput, rule

# RFC 5322 dot-atom local part (what the stdlib's header builder accepts) @ a DNS name.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL = re.compile(_ATEXT + r"(?:\." + _ATEXT + r")*"
                    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
# ISO 3166-1 alpha-2 codes known to CLDR (Babel), without its numeric regions.
COUNTRIES = frozenset(code for code in Locale("en").territories
                      if isinstance(code, str) and len(code) == 2 and code.isalpha()
                      and code not in {"ZZ", "EU", "EZ", "UN", "QO"})


def valid(values: pl.Series, check: Callable[[str], bool]) -> pl.Series:
    """Apply a per-value check to distinct values only."""
    distinct = values.drop_nulls().unique()
    good = distinct.filter(distinct.map_elements(check, return_dtype=pl.Boolean))
    return values.is_in(good.implode()).fill_null(False)


def valid_email_list(value: str) -> bool:
    """Every comma-separated address is one plain, header-safe address."""
    if "\n" in value or "\r" in value:
        return False
    parts = [p.strip() for p in value.split(",")]
    return all(_EMAIL.fullmatch(p) for p in parts)


def vat_matches_siren(vat_id: str, siren_number: str) -> bool:
    """A French VAT number is FR + key + SIREN, the key derived from the SIREN."""
    return vat_id[4:] == siren_number and tva.is_valid(vat_id)


def _blank(column: str) -> pl.Expr:
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def _invoices_of(x: RuleInput, customers: pl.DataFrame, **columns: pl.Expr) -> pl.DataFrame:
    return x.invoices.join(customers, on="customer_id").select("invoice_number", **columns)


@rule("CUSTOMER_UNKNOWN", "error", "The invoice's customer_id is empty or not in customers.")
def customer_unknown(x: RuleInput) -> pl.DataFrame:
    return x.invoices.join(x.customers, on="customer_id", how="anti").select(
        "invoice_number", actual=pl.col("customer_id"),
        detail=pl.when(_blank("customer_id")).then(pl.lit("no customer id"))
        .otherwise(pl.lit("customer not found")))


@rule("SELLER_ID_INVALID", "error",
      "The seller's SIREN or VAT number (configuration) fails its check digits or they disagree.")
def seller_id_invalid(x: RuleInput) -> pl.DataFrame:
    s = x.seller
    ok = siren.is_valid(s.siren) and vat.is_valid(s.vat_id) and (
        s.country != "FR" or vat_matches_siren(s.vat_id, s.siren))
    if ok:
        return x.invoices.select("invoice_number").clear()
    return x.invoices.select("invoice_number", detail=pl.lit(
        f"seller SIREN {s.siren} / VAT {s.vat_id}: fix [seller] in the configuration"))


@rule("SIREN_INVALID", "error",
      "A French buyer has no SIREN, or its SIREN fails the Luhn check digit.")
def siren_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers
    bad = c.filter((pl.col("country") == "FR") & ~valid(c["siren"], siren.is_valid))
    return _invoices_of(x, bad, actual=pl.col("siren").fill_null("(none)"),
                        detail=pl.format("customer {}", "customer_id"))


@rule("VAT_ID_INVALID", "error", "The buyer's intra-EU VAT number fails its check digits.")
def vat_id_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers.filter(pl.col("vat_id").is_not_null())
    bad = c.filter(~valid(c["vat_id"], vat.is_valid))
    return _invoices_of(x, bad, actual=pl.col("vat_id"),
                        detail=pl.format("customer {}", "customer_id"))


@rule("VAT_ID_SIREN_MISMATCH", "error",
      "A French buyer's VAT number does not carry its SIREN (FR + key + SIREN).")
def vat_id_siren_mismatch(x: RuleInput) -> pl.DataFrame:
    c = x.customers.filter((pl.col("country") == "FR") & pl.col("vat_id").is_not_null()
                           & pl.col("siren").is_not_null())
    pairs = pl.concat_str("vat_id", "siren", separator="|")
    c = c.with_columns(pair=pairs)
    bad = c.filter(~valid(c["pair"], lambda p: vat_matches_siren(*p.split("|"))))
    return _invoices_of(x, bad, actual=pl.col("vat_id"), expected=pl.format("FR..{}", "siren"))


@rule("COUNTRY_INVALID", "error", "The buyer's country is not an ISO 3166-1 alpha-2 code.")
def country_invalid(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter(~pl.col("country").is_in(sorted(COUNTRIES)))
    return _invoices_of(x, bad, actual=pl.col("country"),
                        detail=pl.format("customer {}", "customer_id"))


@rule("CHANNEL_UNKNOWN", "error",
      "The customer's channel is not email, edi, print, peppol or pa (accredited platform).")
def channel_unknown(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter(~pl.col("channel").is_in(CHANNELS))
    return _invoices_of(x, bad, actual=pl.col("channel"))


@rule("CHANNEL_ADDRESS_MISSING", "error",
      "The customer's channel lacks what it needs: an email, a GLN (edi), a Peppol id or a "
      "SIREN (pa).")
def channel_address_missing(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter(
        ((pl.col("channel") == "email") & _blank("email"))
        | ((pl.col("channel") == "edi") & _blank("gln"))
        | ((pl.col("channel") == "peppol") & _blank("peppol_id"))
        | ((pl.col("channel") == "pa") & _blank("siren")))
    return _invoices_of(x, bad, detail=pl.format("channel {} without its address for customer {}",
                                                 "channel", "customer_id"))


@rule("EMAIL_INVALID", "error",
      "An email customer's address is not a plain address (or holds a line break).")
def email_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers.filter((pl.col("channel") == "email") & ~_blank("email"))
    bad = c.filter(~valid(c["email"], valid_email_list))
    return _invoices_of(x, bad, actual=pl.col("email").str.replace_all("\n", "\\n", literal=True)
                        .str.replace_all("\r", "\\r", literal=True))


@rule("GLN_INVALID", "error", "An EDI customer's GLN is not 13 digits with a valid check digit.")
def gln_invalid(x: RuleInput) -> pl.DataFrame:
    c = x.customers.filter((pl.col("channel") == "edi") & pl.col("gln").is_not_null())
    bad = c.filter(~valid(c["gln"], lambda v: len(v) == 13 and ean.is_valid(v)))
    return _invoices_of(x, bad, actual=pl.col("gln"))


@rule("POSTAL_ADDRESS_INCOMPLETE", "error",
      "A print customer lacks a street, postcode or city (a French postcode has 5 digits).")
def postal_address_incomplete(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter(
        (pl.col("channel") == "print")
        & (_blank("address_line1") | _blank("postcode") | _blank("city")
           | ((pl.col("country") == "FR") & ~pl.col("postcode").str.contains(r"^\d{5}$"))))
    return _invoices_of(x, bad, actual=pl.format("{} / {} / {}", pl.col("address_line1"),
                                                 pl.col("postcode"), pl.col("city")))


@rule("LANGUAGE_UNKNOWN", "error", "The customer's language is not one of fr, en, de.")
def language_unknown(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter(~pl.col("language").is_in(LANGUAGES))
    return _invoices_of(x, bad, actual=pl.col("language").str.slice(0, 60),
                        detail=pl.format("customer {}", "customer_id"))


# ISO 6523 ICD (4 digits), a colon, then the participant identifier (Peppol policy 1.1).
_PEPPOL_ID = r"^[0-9]{4}:[A-Za-z0-9][A-Za-z0-9._:-]{0,49}$"


@rule("PEPPOL_ID_INVALID", "error",
      "A Peppol customer's peppol_id is not 'scheme:identifier' with a 4-digit ICD scheme.")
def peppol_id_invalid(x: RuleInput) -> pl.DataFrame:
    bad = x.customers.filter((pl.col("channel") == "peppol") & ~_blank("peppol_id")
                             & ~pl.col("peppol_id").str.contains(_PEPPOL_ID))
    return _invoices_of(x, bad, actual=pl.col("peppol_id").str.slice(0, 60))


# La Poste's addressing norm (NF Z10-011): at most 38 characters per line of the address block.
POSTAL_LINE = 38


@rule("POSTAL_LINE_TOO_LONG", "error",
      f"A print customer's name, street, complement or postcode + city is longer than "
      f"{POSTAL_LINE} characters (NF Z10-011): it would not show in the envelope window.")
def postal_line_too_long(x: RuleInput) -> pl.DataFrame:
    lines = {"legal_name": pl.col("legal_name"), "address_line1": pl.col("address_line1"),
             "address_line2": pl.col("address_line2").fill_null(""),
             "postcode and city": pl.format("{} {}", "postcode", "city")}
    found = []
    for name, line in lines.items():
        bad = x.customers.filter((pl.col("channel") == "print")
                                 & (line.str.len_chars() > POSTAL_LINE))
        found.append(_invoices_of(
            x, bad, actual=line.str.slice(0, 60),
            detail=pl.format(f"{name}: {{}} characters, more than {POSTAL_LINE}",
                             line.str.len_chars())))
    return pl.concat(found)


# EDIFACT NAD 3251 is an..9: letters, digits, inner spaces and hyphens (UK, NL, CA formats).
_POSTCODE = r"^[A-Za-z0-9](?:[A-Za-z0-9 -]{0,7}[A-Za-z0-9])?$"


@rule("POSTCODE_INVALID", "error",
      "A postcode (buyer or delivery address) is not 1-9 letters, digits, inner spaces or "
      "hyphens (EDIFACT NAD an..9), or a French one is not 5 digits.")
def postcode_invalid(x: RuleInput) -> pl.DataFrame:
    found = []
    for table, column, country in (("customers", "postcode", "country"),
                                   ("delivery_notes", "ship_to_postcode", "ship_to_country"),
                                   ("invoices", "ship_to_postcode", "ship_to_country")):
        code = pl.col(column)
        found.append(flagged(x, table, column, ~_blank(column) & (
            ~code.str.contains(_POSTCODE)
            | ((pl.col(country) == "FR") & ~code.str.contains(r"^\d{5}$"))),
            code.str.slice(0, 60)))
    return pl.concat(found)


_SHIP_TO = ("ship_to_address_line1", "ship_to_postcode", "ship_to_city", "ship_to_country")


@rule("SHIP_TO_INCOMPLETE", "error",
      "A delivery address (ship_to_*, on an invoice or a delivery note) gives some of street, "
      "postcode, city and country but not all, or a country that is not ISO 3166-1 alpha-2: "
      "it could be neither printed nor carried (EN 16931 BG-15).")
def ship_to_incomplete(x: RuleInput) -> pl.DataFrame:
    given = pl.sum_horizontal(*(pl.col(c).is_not_null() & ~pl.col(c).str.contains(BLANK)
                                for c in _SHIP_TO))
    country = pl.col("ship_to_country")
    found = [flagged(x, table, "ship_to_country",
                     ((given > 0) & (given < len(_SHIP_TO)))
                     | ((given == len(_SHIP_TO)) & ~country.is_in(sorted(COUNTRIES))),
                     pl.concat_str(*(pl.col(c).fill_null("–") for c in _SHIP_TO),
                                   separator=", ").str.slice(0, 120))
             for table in ("invoices", "delivery_notes")]
    return pl.concat(found)

