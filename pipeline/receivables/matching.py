"""Payments matched to open items, in passes of decreasing certainty, vectorised.

1. ``reference`` (confidence 1.0): the payment names invoices, by a creditor reference
   (``RF`` + check digits + the invoice number) or in its remittance text; spaces, dashes
   and case do not matter. The amount goes to the named invoices, earliest due first. A
   mistyped number can name another customer's invoice: a payer known for a customer is
   held to that customer's invoices, and an unknown payer must pay their exact total.
2. ``iban_amount`` (0.9, 0.7 when several items qualify): the payer's IBAN is known for a
   customer, and the amount is exactly one of its open items (the earliest due, if several).
3. ``iban_sum`` (0.8): the IBAN is known and the amount is exactly the sum of the
   customer's open items, earliest due first, up to some item.
4. ``oldest_first`` (0.5, only when allowed): what a known payer sends goes to its
   earliest due items.

A payment is never forced: what no pass places stays unallocated, listed for a person
(an unknown payer, an overpayment's remainder). An item is never allocated more than is
open on it, even when several payments name it: the earliest value date takes it first.
A partial payment leaves the rest of the item open for the next payment.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

__all__ = ["Matching", "match", "normalize", "PASSES"]

PASSES = ("reference", "iban_amount", "iban_sum", "oldest_first")


def normalize(text: pl.Expr) -> pl.Expr:
    """Upper case, letters and digits only: ``fa 2026-000123`` -> ``FA2026000123``."""
    return text.fill_null("").str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "")


@dataclass(frozen=True)
class Matching:
    """What matching placed, and what it could not."""

    allocations: pl.DataFrame
    """payment_key, invoice_number, cents, pass, confidence: one row per payment and item."""
    unallocated: pl.DataFrame
    """payment_key, cents, why: money no pass placed (whole payments or remainders)."""

    def counts(self) -> dict[str, int]:
        """Payments placed (wholly or partly) by each pass."""
        placed = self.allocations.group_by("pass").agg(pl.col("payment_key").n_unique())
        found = dict(placed.iter_rows())
        return {p: int(found.get(p, 0)) for p in PASSES}


def _allocate(requests: pl.DataFrame, remaining: pl.DataFrame, open_: pl.DataFrame,
              name: str, confidence: pl.Expr) -> pl.DataFrame:
    """Grant requests (payment_key, invoice_number, order) within what each payment still
    has and each item still owes, the earliest value date first on each item."""
    granted = (requests
               .join(remaining.select("payment_key", "left", "value_date"), on="payment_key")
               .join(open_.select("invoice_number", "owed", "due_date"), on="invoice_number")
               .sort("value_date", "payment_key", "due_date", "invoice_number")
               # the payment's money, in its order of items
               .with_columns(before=pl.col("owed").cum_sum().over("payment_key") - pl.col("owed"))
               .with_columns(want=pl.min_horizontal(pl.col("owed"),
                                                    (pl.col("left") - pl.col("before")).clip(0)))
               # the item's debt, in the order of payments
               .with_columns(taken=pl.col("want").cum_sum().over("invoice_number")
                             - pl.col("want"))
               .with_columns(cents=pl.min_horizontal(pl.col("want"),
                                                     (pl.col("owed") - pl.col("taken")).clip(0)))
               .filter(pl.col("cents") > 0))
    return granted.select("payment_key", "invoice_number", "cents", pl.lit(name).alias("pass"),
                          confidence.alias("confidence"))


def _learn(customers: pl.DataFrame, named: pl.DataFrame, pays: pl.DataFrame,
           open_: pl.DataFrame) -> pl.DataFrame:
    """The known payers, with the IBANs that paid invoices they named: a payer is known for
    a customer once it has paid that customer's invoice by name. An IBAN seen paying two
    customers names neither."""
    seen = (named.join(pays.select("payment_key", "debtor_iban"), on="payment_key")
            .join(open_.select("invoice_number", "customer_id"), on="invoice_number")
            .filter(pl.col("debtor_iban").is_not_null())
            .select("debtor_iban", "customer_id"))
    both = pl.concat([customers.select("debtor_iban", "customer_id"), seen]).unique()
    single = both.group_by("debtor_iban").agg(pl.len()).filter(pl.col("len") == 1)
    return both.join(single.select("debtor_iban"), on="debtor_iban")


def _without_returned(payments: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The credits to match, and what no pass is for (``key``, ``cents``, ``why``): a return
    (negative) cancels the credit of the same end-to-end id and amount, so neither pays
    anything; a return of no credit we hold is for a person."""
    credits = payments.filter(pl.col("cents") > 0)
    returns = payments.filter(pl.col("cents") < 0)
    if "end_to_end_id" not in payments.columns:
        return credits, returns.select("key", "cents", why=pl.lit("a return of no credit "
                                                                  "we hold"))
    back = returns.select("key", "end_to_end_id", amount=-pl.col("cents"))
    taken = credits.join(back, left_on=["end_to_end_id", "cents"],
                         right_on=["end_to_end_id", "amount"], how="semi")
    paired = returns.join(credits.select("end_to_end_id", amount=-pl.col("cents")),
                          left_on=["end_to_end_id", "cents"],
                          right_on=["end_to_end_id", "amount"], how="semi")
    aside = pl.concat([
        pl.concat([taken, paired]).select("key", "cents",
                                          why=pl.lit("returned by the payer's bank")),
        returns.join(paired.select("key"), on="key", how="anti").select(
            "key", "cents", why=pl.lit("a return of no credit we hold"))])
    return credits.join(taken.select("key"), on="key", how="anti"), aside


def _named(pays: pl.DataFrame, open_: pl.DataFrame, customers: pl.DataFrame
           ) -> pl.DataFrame:
    """Allocations to the invoices each payment names (pass ``reference``)."""
    numbers = open_["number"].unique().to_list() or [""]  # extract_many needs a pattern
    named = (pays.with_columns(found=pl.col("text").str.extract_many(numbers,
                                                                     overlapping=False))
             .explode("found").filter(pl.col("found").is_not_null() & (pl.col("found") != ""))
             .join(open_.select("number", "invoice_number", "customer_id", "owed"),
                   left_on="found", right_on="number")
             .join(customers.rename({"customer_id": "payer"}), on="debtor_iban", how="left")
             # a number mistyped into another customer's invoice is not taken at its word:
             # a known payer must be that invoice's customer, an unknown one must pay the
             # named invoices' exact total
             .filter(pl.col("payer").is_null() | (pl.col("payer") == pl.col("customer_id")))
             .with_columns(named=pl.col("owed").sum().over("payment_key"))
             .filter(pl.col("payer").is_not_null() | (pl.col("named") == pl.col("left")))
             .select("payment_key", "invoice_number").unique())
    return _allocate(named, pays, open_, "reference", pl.lit(1.0))


def match(payments: pl.DataFrame, items: pl.DataFrame, known_ibans: pl.DataFrame,
          oldest_first: bool = False) -> Matching:
    """Match payments to open items.

    Args:
        payments: ``key``, ``cents`` (money as integer cents, exact), ``value_date``,
            ``debtor_iban``, ``creditor_reference``, ``remittance``, and optionally
            ``end_to_end_id``: a return (negative) then voids the credit it took back.
        items: ``invoice_number``, ``customer_id``, ``cents`` (open, > 0), ``due_date``.
        known_ibans: ``iban``, ``customer_id``: payers already seen paying a customer (the
            payers of invoices named in these payments are learnt on the way).
        oldest_first: allow the last pass.
    """
    payments, returned = _without_returned(payments)
    pays = payments.rename({"key": "payment_key"}).with_columns(
        left=pl.col("cents"),
        text=normalize(pl.concat_str(pl.col("creditor_reference").fill_null(""),
                                     pl.col("remittance").fill_null(""), separator=" ")),
        ref=normalize(pl.col("creditor_reference")).str.replace(r"^RF\d\d", ""))
    open_ = items.with_columns(owed=pl.col("cents"),
                                               number=normalize(pl.col("invoice_number")))
    customers = known_ibans.unique("iban").rename({"iban": "debtor_iban"})
    done: list[pl.DataFrame] = []

    def settle(granted: pl.DataFrame) -> None:
        nonlocal pays, open_
        done.append(granted)
        paid = granted.group_by("payment_key").agg(pl.col("cents").sum().alias("paid"))
        owed = granted.group_by("invoice_number").agg(pl.col("cents").sum().alias("paid"))
        pays = pays.join(paid, on="payment_key", how="left").with_columns(
            left=pl.col("left") - pl.col("paid").fill_null(0)).drop("paid")
        open_ = open_.join(owed, on="invoice_number", how="left").with_columns(
            owed=pl.col("owed") - pl.col("paid").fill_null(0)).drop("paid").filter(
            pl.col("owed") > 0)

    # 1. the invoices the payment names; the payers this teaches are known for the second
    #    round, where a known payer's partial payment of its own invoice is taken too
    for _ in range(2):
        granted = _named(pays.filter(pl.col("left") > 0), open_, customers)
        customers = _learn(customers, granted, pays, open_)
        settle(granted)

    # 2. a known payer, the exact amount of one open item
    payers = pays.filter(pl.col("left") > 0).join(customers, on="debtor_iban")
    exact = (payers.join(open_, left_on=["customer_id", "left"], right_on=["customer_id", "owed"])
             .sort("due_date", "invoice_number")
             .group_by("payment_key", maintain_order=True)
             .agg(pl.col("invoice_number").first(), candidates=pl.len()))
    settle(_allocate(exact.select("payment_key", "invoice_number"), pays, open_,
                     "iban_amount", pl.lit(0.9)).join(
        exact.select("payment_key", "candidates"), on="payment_key").with_columns(
        confidence=pl.when(pl.col("candidates") > 1).then(0.7).otherwise(0.9)).drop(
        "candidates"))

    # 3. a known payer, the exact sum of its earliest due items
    payers = pays.filter(pl.col("left") > 0).join(customers, on="debtor_iban")
    running = open_.sort("due_date", "invoice_number").with_columns(
        upto=pl.col("owed").cum_sum().over("customer_id"),
        rank=pl.int_range(pl.len()).over("customer_id"))
    reach = payers.join(running.select("customer_id", "upto", "rank"),
                        left_on=["customer_id", "left"], right_on=["customer_id", "upto"])
    summed = (reach.join(running.select("customer_id", "invoice_number",
                                        pl.col("rank").alias("item_rank")), on="customer_id")
              .filter(pl.col("item_rank") <= pl.col("rank"))
              .select("payment_key", "invoice_number").unique())
    settle(_allocate(summed, pays, open_, "iban_sum", pl.lit(0.8)))

    # 4. what a known payer sends, to its earliest due items
    if oldest_first:
        payers = pays.filter(pl.col("left") > 0).join(customers, on="debtor_iban")
        settle(_allocate(payers.join(open_.select("customer_id", "invoice_number"),
                                     on="customer_id").select("payment_key", "invoice_number"),
                         pays, open_, "oldest_first", pl.lit(0.5)))

    allocations = pl.concat(done) if done else pl.DataFrame()
    returned = returned.rename({"key": "payment_key"})
    unallocated = pl.concat([returned, pays.filter(pl.col("left") > 0).join(
        customers, on="debtor_iban", how="left").select(
        "payment_key", pl.col("left").alias("cents"),
        why=pl.when(pl.col("left") < pl.col("cents")).then(pl.lit("overpaid: the rest"))
        .when(pl.col("customer_id").is_null()).then(
            pl.lit("unknown payer, naming no invoices for exactly this amount"))
        .otherwise(pl.lit("known payer, no item matches the amount")))])
    return Matching(allocations, unallocated)
