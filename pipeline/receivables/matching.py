"""Payments matched to open items, in passes of decreasing certainty, vectorised.

Who pays. A payer is *known* for a customer by its IBAN: given (``known_ibans``) or learnt
in this run from a payment that named that customer's invoice; an IBAN seen paying two
customers names neither. When the statement carries no IBAN, or one not known, the payer
can be known by its name (``customer_names``): the debtor name, without case, accents,
punctuation and legal form (``SARL``, ``GmbH``, ``Inc.``...), is the name of one customer
only, or is near the name of one customer only (rapidfuzz ``token_sort_ratio`` of at
least 95). Two legal forms that differ are two companies; a name several customers share
names none of them. A payer known by name is held to its customer's invoices like one
known by IBAN, but the last pass never gives it money on its name alone.

1. ``reference`` (confidence 1.0): the payment names invoices, by a creditor reference
   (``RF`` + check digits + the invoice number) or in its remittance text; spaces, dashes
   and case do not matter. The amount goes to the named invoices, earliest due first. A
   mistyped number can name another customer's invoice: a known payer is held to its
   customer's invoices, and an unknown payer must pay the named invoices' exact total
   (or their total before their credit notes, when ``issued`` tells them).
2. ``fuzzy_reference`` (0.9): a number one character off an open item's (one wrong,
   missing or extra character, or two swapped: rapidfuzz ``OSA`` distance 1 to some part
   of the text), taken when one item alone is that near (or the items that are add up to
   the amount exactly), and the payer is known for that item's customer, or pays exactly
   what the item owes (or its gross before its credit notes). A number of the payer's own
   customer named exactly is no mistype of its neighbour (the rest of an overpayment
   names a paid invoice); another customer's named exactly by a known payer is one only
   when the amount is the near item's and not that invoice's (else the payer may be
   paying for that customer). Numbers shorter than 8 characters are never read fuzzily.
3. ``iban_amount`` (0.9, 0.7 when several items qualify): a known payer, and the amount
   is exactly one of its customer's open items (the earliest due, if several).
4. ``iban_sum`` (0.8): a known payer, and the amount is exactly the sum of its customer's
   open items, earliest due first, up to some item.
5. ``subset_sum`` (0.7): a known payer, and the amount is exactly the sum of a set of its
   customer's open items that is not the earliest due (invoices grouped by period): among
   the items due from 62 days before the value date to 31 days after (the 24 due nearest
   to it), exactly one set adds up to the amount, and no other payment claims one of its
   items.
6. ``oldest_first`` (0.5, only when allowed): what a payer known by IBAN sends goes to its
   customer's earliest due items.

Never forced: a doubt (two items one character off, two sets with the sum, a name shared
by customers) leaves the payment to a person, and what no pass places stays unallocated,
with why (an unknown payer, an overpayment's rest). A payment of an invoice's gross when a
credit note had corrected it pays the invoice; the credit note's amount is its rest,
unallocated ("overpaid: a credit note it did not deduct"): refunding it or keeping it
on account is a person's decision. An item is never allocated more than is open on it,
even when several payments name it: the earliest value date takes it first. A partial
payment leaves the rest of the item open for the next payment.

Invoice numbers are found in the texts by their shapes (``FA2026000123``: two letters,
ten digits; one regex per shape) and looked up, or, when the shapes are many or one could
be found across two numbers, by seeking every number in every text (Aho-Corasick).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

__all__ = ["Matching", "match", "pair_returns", "normalize", "name_key", "PASSES"]

PASSES = ("reference", "fuzzy_reference", "iban_amount", "iban_sum", "subset_sum",
          "oldest_first")

# Legal forms: noise in a payer's name as a bank prints it.
_FORMS = ("SA", "SAS", "SASU", "SARL", "EURL", "SNC", "SCI", "SCA", "SCOP", "SELARL", "SCP",
          "EI", "EIRL", "GIE", "GMBH", "AG", "KG", "OHG", "UG", "NV", "BV", "BVBA", "SPRL",
          "SRL", "SPA", "SL", "INC", "LTD", "LLC", "PLC", "CORP", "LIMITED")
_NAME_CUTOFF = 95.0  # token_sort_ratio, in percent, of a name near one customer's
_NAME_FUZZY_MIN = 10  # characters: shorter names are only taken when equal
_NUMBER_FUZZY_MIN = 8  # characters of a normalised invoice number read fuzzily
_SUBSET_BEFORE, _SUBSET_AFTER = timedelta(days=62), timedelta(days=31)
_SUBSET_ITEMS = 24  # meet in the middle: 2 x 2**12 sums per payment
_SHAPES = 16  # invoice number shapes sought by regex; more: every number sought


def normalize(text: pl.Expr) -> pl.Expr:
    """Upper case, letters and digits only: ``fa 2026-000123`` -> ``FA2026000123``."""
    return text.fill_null("").str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "")


def _name_words(name: pl.Expr) -> pl.Expr:
    return (name.fill_null("").str.normalize("NFKD").str.replace_all(r"\p{Mn}", "")
            .str.to_uppercase().str.replace_all(r"\.", "").str.replace_all("&", " ET ")
            .str.replace_all(r"[^A-Z0-9]+", " ").str.strip_chars().str.split(" "))


def name_key(name: pl.Expr) -> pl.Expr:
    """A company name without case, accents, punctuation or legal form:
    ``Hôtel Garcia S.A.R.L.`` -> ``HOTEL GARCIA``; ``&`` reads ``ET``."""
    return _name_words(name).list.eval(
        pl.element().filter(~pl.element().is_in(_FORMS))).list.join(" ")


def _name_form(name: pl.Expr) -> pl.Expr:
    return _name_words(name).list.eval(
        pl.element().filter(pl.element().is_in(_FORMS))).list.sort().list.join(" ")


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
    """Grant requests (payment_key, invoice_number order) within what each payment still
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
    return _one_customer(pl.concat([customers.select("debtor_iban", "customer_id"), seen]))


def _one_customer(ibans: pl.DataFrame) -> pl.DataFrame:
    """``debtor_iban``, ``customer_id`` of the IBANs that name exactly one customer."""
    both = ibans.unique()
    single = both.group_by("debtor_iban").agg(pl.len()).filter(pl.col("len") == 1)
    return both.join(single.select("debtor_iban"), on="debtor_iban")


def pair_returns(credits: pl.DataFrame, returns: pl.DataFrame) -> pl.DataFrame:
    """Which credit each return takes back: ``return_key``, ``credit_key``.

    A return names the credit by its end-to-end id and amount, in the same currency; when
    several credits qualify (monthly direct debits under one mandate reference), it takes
    one from its own account if there is one, and of those the latest before it that no
    earlier return took.

    Args:
        credits: ``key``, ``cents`` (> 0), ``value_date``, ``end_to_end_id``, and
            optionally ``currency`` and ``debtor_iban``.
        returns: the same columns, ``cents`` < 0.
    """
    pairs: list[tuple[str, str]] = []
    extra = [c for c in ("currency", "debtor_iban") if c in credits.columns
             and c in returns.columns]
    same_account = (pl.col("debtor_iban") == pl.col("debtor_iban_back")).fill_null(False) \
        if "debtor_iban" in extra else pl.lit(False)
    if returns.height and credits.height:
        candidates = (returns.filter(pl.col("end_to_end_id").is_not_null())
                      .select(pl.col("key").alias("return_key"), "end_to_end_id",
                              pl.col("value_date").alias("returned_on"),
                              *(pl.col(c).alias(f"{c}_back") for c in extra),
                              amount=-pl.col("cents"))
                      .join(credits.select(pl.col("key").alias("credit_key"),
                                           "end_to_end_id", "value_date", *extra,
                                           amount=pl.col("cents")),
                            on=["end_to_end_id", "amount"])
                      .filter(pl.col("value_date") <= pl.col("returned_on"))
                      .filter(*(pl.col(f"{c}_back").is_null() | pl.col(c).is_null()
                                | (pl.col(c) == pl.col(f"{c}_back"))
                                for c in extra if c == "currency"))
                      .with_columns(same_account=same_account)
                      .sort(["returned_on", "return_key", "same_account", "value_date",
                             "credit_key"], descending=[False, False, True, True, True]))
        taken: set[str] = set()
        done: set[str] = set()
        for ret, credit in candidates.select("return_key", "credit_key").iter_rows():
            if ret not in done and credit not in taken:
                pairs.append((ret, credit))
                done.add(ret)
                taken.add(credit)
    return pl.DataFrame(pairs, schema={"return_key": pl.String(), "credit_key": pl.String()},
                        orient="row")


def _without_returned(payments: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The credits to match, and what no pass is for (``key``, ``cents``, ``why``): a return
    (negative) cancels the one credit it takes back (``pair_returns``), so neither pays
    anything; a return of no credit we hold is for a person."""
    credits = payments.filter(pl.col("cents") > 0)
    returns = payments.filter(pl.col("cents") < 0)
    if "end_to_end_id" not in payments.columns:
        return credits, returns.select("key", "cents", why=pl.lit("a return of no credit "
                                                                  "we hold"))
    pairs = pair_returns(credits, returns)
    paired = set(pairs["return_key"]) | set(pairs["credit_key"])
    aside = pl.concat([
        payments.filter(pl.col("key").is_in(sorted(paired))).select(
            "key", "cents", why=pl.lit("returned by the payer's bank")),
        returns.filter(~pl.col("key").is_in(sorted(paired))).select(
            "key", "cents", why=pl.lit("a return of no credit we hold"))])
    return credits.filter(~pl.col("key").is_in(sorted(paired))), aside


def _by_name(pays: pl.DataFrame, customer_names: pl.DataFrame | None) -> pl.DataFrame:
    """``payment_key``, ``by_name``: the one customer each payer's name names, if any."""
    empty = pl.DataFrame(schema={"payment_key": pl.String(), "by_name": pl.String()})
    if customer_names is None or customer_names.is_empty():
        return empty
    known = (customer_names.select("customer_id", key=name_key(pl.col("name")),
                                   form=_name_form(pl.col("name")))
             .filter(pl.col("key") != "").unique())
    payers = (pays.select("debtor_name").unique().drop_nulls()
              .with_columns(key=name_key(pl.col("debtor_name")),
                            form=_name_form(pl.col("debtor_name")))
              .filter(pl.col("key") != ""))
    # the same name: one customer, of no other legal form
    equal = payers.join(known.rename({"form": "its_form"}), on="key")
    # else a near name, of one customer only
    near = payers.join(known.select("key"), on="key", how="anti").filter(
        pl.col("key").str.len_chars() >= _NAME_FUZZY_MIN)
    if near.height and known.height:
        keys = known["key"].unique().to_list()
        queries = near["key"].to_list()
        rows: list[tuple[str, str]] = []
        for start in range(0, len(queries), 512):  # bounded memory: 512 x customers
            scores = process.cdist(queries[start:start + 512], keys, scorer=fuzz.token_sort_ratio,
                                   score_cutoff=_NAME_CUTOFF, dtype=np.uint8, workers=-1)
            for i, j in zip(*np.nonzero(scores), strict=True):
                rows.append((queries[start + int(i)], keys[int(j)]))
        close = pl.DataFrame(rows, schema={"key": pl.String(), "near": pl.String()},
                             orient="row")
        equal = pl.concat([equal, near.join(close, on="key").join(
            known.rename({"form": "its_form", "key": "near"}), on="near").drop("near")])
    found = (equal.filter((pl.col("form") == "") | (pl.col("its_form") == "")
                          | (pl.col("form") == pl.col("its_form")))
             .group_by("debtor_name").agg(pl.col("customer_id").unique())
             .filter(pl.col("customer_id").list.len() == 1)
             .select("debtor_name", by_name=pl.col("customer_id").list.first()))
    if found.is_empty():
        return empty
    return pays.join(found, on="debtor_name").select("payment_key", "by_name")


def _with_payer(pays: pl.DataFrame, customers: pl.DataFrame, by_name: pl.DataFrame
                ) -> pl.DataFrame:
    """``payer`` (the customer a known IBAN, else a name, names) and ``by_iban``."""
    return (pays.drop("payer", "by_iban", strict=False)
            .join(customers.rename({"customer_id": "by_iban"}), on="debtor_iban", how="left")
            .join(by_name, on="payment_key", how="left")
            .with_columns(payer=pl.coalesce("by_iban", "by_name")).drop("by_name"))


def _runs(frame: pl.DataFrame, key: str) -> list[tuple[int, int]]:
    """(offset, length) of each run of equal ``key`` in ``frame`` (sorted by it)."""
    bounds = frame.select(pl.col(key).rle().struct.field("len"))
    lengths = bounds.to_series().to_list()
    offsets = np.cumsum([0, *lengths[:-1]]).tolist() if lengths else []
    return list(zip(offsets, lengths, strict=True))


def _border(classes: str) -> bool:
    """Whether a proper prefix of ``classes`` is also its suffix."""
    return any(classes[:k] == classes[-k:] for k in range(1, len(classes)))


def _shapes(numbers: pl.Series) -> list[str] | None:
    """One regex per shape of the numbers (``FA2026000123``: ``[A-Z]{2}[0-9]{10}``), when
    they are few and each can only be found where it is: a shape whose runs of letters
    and digits begin as they end could be found across two numbers, and is not taken."""
    classes = (numbers.str.replace_all(r"[A-Z]", "A").str.replace_all(r"[0-9]", "9")
               .unique().to_list())
    if not classes or len(classes) > _SHAPES or any(_border(c) for c in classes):
        return None
    return ["".join(("[A-Z]" if run[0] == "A" else "[0-9]") + f"{{{len(run)}}}"
                    for run in re.findall(r"A+|9+", c)) for c in classes]


def _found(text: pl.Expr, numbers: pl.Series) -> pl.Expr:
    """The numbers of the catalogue a normalised text may name: the tokens of their shapes
    (one quick regex per shape), else every number sought in every text (Aho-Corasick)."""
    shapes = _shapes(numbers)
    if shapes is None:
        return text.str.extract_many(numbers.to_list() or [""], overlapping=False)
    return pl.concat_list([text.str.extract_all(shape) for shape in shapes])


def _named(pays: pl.DataFrame, open_: pl.DataFrame) -> pl.DataFrame:
    """Requests (payment_key, invoice_number) of the open invoices each payment names."""
    return (pays.select("payment_key", "payer", "left", "found").explode("found")
            .join(open_.select("number", "invoice_number", "customer_id", "owed",
                               "credited"), left_on="found", right_on="number")
            # a number mistyped into another customer's invoice is not taken at its word:
            # a known payer must be that invoice's customer, an unknown one must pay the
            # named invoices' exact total (or their gross, before credit notes)
            .filter(pl.col("payer").is_null() | (pl.col("payer") == pl.col("customer_id")))
            .with_columns(named=pl.col("owed").sum().over("payment_key"),
                          gross=(pl.col("owed") + pl.col("credited")).sum().over("payment_key"))
            .filter(pl.col("payer").is_not_null() | (pl.col("named") == pl.col("left"))
                    | (pl.col("gross") == pl.col("left")))
            .select("payment_key", "invoice_number").unique())


def _windows(text: str, lengths: set[int]) -> list[str]:
    """Every substring of ``text`` one character shorter, as long or one longer than a
    number: what a number one edit off can be."""
    sizes = {w for n in lengths for w in (n - 1, n, n + 1) if w > 0}
    return list({text[i:i + w] for w in sizes for i in range(max(1, len(text) - w + 1))})


def _fuzzy(pays: pl.DataFrame, open_: pl.DataFrame, catalogue: pl.DataFrame
           ) -> pl.DataFrame:
    """Requests (payment_key, invoice_number) of the open items a payment names one
    character off (pass ``fuzzy_reference``)."""
    todo = pays.filter((pl.col("left") > 0) & pl.col("text").str.contains(r"\d"))
    items = open_.filter(pl.col("number").str.len_chars() >= _NUMBER_FUZZY_MIN).select(
        "invoice_number", "customer_id", "number", "owed", "credited")
    # the candidates: a known payer's own items; for anyone, an item owing exactly the rest
    # (or its gross, before its credit notes)
    amounts = pl.concat([items.with_columns(amount=pl.col("owed")),
                         items.filter(pl.col("credited") > 0).with_columns(
                             amount=pl.col("owed") + pl.col("credited"))])
    columns = ("payment_key", "text", "found", "payer", "left", "invoice_number", "number",
               "owed", "credited")
    pairs = pl.concat([
        todo.filter(pl.col("payer").is_not_null()).join(
            items, left_on="payer", right_on="customer_id", coalesce=False).select(columns),
        todo.filter(pl.col("payer").is_null()).join(
            amounts, left_on="left", right_on="amount").select(columns),
    ]).unique(["payment_key", "invoice_number"], maintain_order=True)
    none = pl.DataFrame(schema={"payment_key": pl.String(), "invoice_number": pl.String()})
    if pairs.is_empty():
        return none
    # the numbers the text names exactly: the payer's own are taken out of the text (the
    # rest of an overpayment names a paid invoice, which is no mistype of its neighbour);
    # another customer's, from a known payer, may be a mistype, or a payment for that
    # customer: a mistype then only when the amount is the near item's and not theirs
    named = (pairs.select("payment_key", "payer", "left", "found").unique("payment_key")
             .explode("found").join(catalogue, left_on="found", right_on="number")
             .join(open_.select("number", "owed", "credited"), left_on="found",
                   right_on="number", how="left")
             .with_columns(own=pl.col("customer_id") == pl.col("payer"),
                           fits=(pl.col("owed") == pl.col("left"))
                           | (pl.col("owed") + pl.col("credited") == pl.col("left"))))
    strip = dict(named.filter(pl.col("own")).group_by("payment_key").agg("found").iter_rows())
    others = (named.filter(pl.col("payer").is_not_null() & ~pl.col("own"))
              .group_by("payment_key").agg(theirs=pl.col("fits").any()))
    pairs = (pairs.join(others, on="payment_key", how="left")
             .filter(pl.col("theirs").is_null()
                     | (~pl.col("theirs") & ((pl.col("owed") == pl.col("left"))
                                             | (pl.col("owed") + pl.col("credited")
                                                == pl.col("left"))))))
    pairs = pairs.sort("payment_key")
    keys, texts = pairs["payment_key"].to_list(), pairs["text"].to_list()
    numbers, invoices = pairs["number"].to_list(), pairs["invoice_number"].to_list()
    near: list[tuple[str, str]] = []
    for at, n in _runs(pairs, "payment_key"):
        text = texts[at]
        for number in strip.get(keys[at], ()):
            text = text.replace(number, "|")
        candidates = numbers[at:at + n]
        windows = _windows(text, {len(c) for c in candidates})
        distance = process.cdist(windows, candidates, scorer=OSA.distance, score_cutoff=1,
                                 dtype=np.int32).min(axis=0)
        near += [(keys[at], invoices[at + i]) for i in np.flatnonzero(distance <= 1).tolist()]
    if not near:
        return none
    found = pairs.join(pl.DataFrame(near, schema=["payment_key", "invoice_number"],
                                    orient="row"), on=["payment_key", "invoice_number"])
    # one item alone is that near; or the ones that are add up to the amount
    return (found.with_columns(n=pl.len().over("payment_key"),
                               total=pl.col("owed").sum().over("payment_key"))
            .filter((pl.col("n") == 1) | (pl.col("total") == pl.col("left")))
            .select("payment_key", "invoice_number"))


def _sums(owed: np.ndarray, gross: np.ndarray) -> np.ndarray:
    """Every sum of a choice per item: out, what it owes, or (when a credit note corrected
    it) its gross. Item i's choice is digit i of the index, in the mixed radix of the items'
    number of choices (2 or 3), the last item the most significant."""
    out = np.zeros(1, dtype=np.int64)
    for o, g in zip(owed.tolist(), gross.tolist(), strict=True):
        out = np.concatenate([out, out + o] + ([out + g] if g != o else []))
    return out


def _digits(index: int, owed: np.ndarray, gross: np.ndarray) -> list[int]:
    """The choice of each item (0 out, 1 owed, 2 gross) that ``_sums`` put at ``index``."""
    found = []
    for o, g in zip(owed.tolist(), gross.tolist(), strict=True):
        radix = 3 if g != o else 2
        found.append(index % radix)
        index //= radix
    return found


def _subset(owed: np.ndarray, gross: np.ndarray, target: int) -> list[int] | None:
    """The positions of the one set of items adding up to ``target`` (each item by what
    it owes, or by its gross before credit notes); None when none or several do. Meet in
    the middle: the sums of each half, sorted, searched."""
    half = len(owed) // 2
    low = _sums(owed[:half], gross[:half])
    high = _sums(owed[half:], gross[half:])
    order = np.argsort(high, kind="stable")
    ordered = high[order]
    want = target - low
    ways = (np.searchsorted(ordered, want, side="right")
            - np.searchsorted(ordered, want, side="left"))
    if int(ways.sum()) != 1:
        return None
    a = int(np.argmax(ways > 0))
    b = int(order[np.searchsorted(ordered, want[a], side="left")])
    digits = _digits(a, owed[:half], gross[:half]) + _digits(b, owed[half:], gross[half:])
    return [i for i, d in enumerate(digits) if d]


def _subset_sums(pays: pl.DataFrame, open_: pl.DataFrame) -> pl.DataFrame:
    """Requests (payment_key, invoice_number) of the one set of a known payer's items, due
    around its value date, adding up to the payment (pass ``subset_sum``)."""
    candidates = (pays.filter((pl.col("left") > 0) & pl.col("payer").is_not_null())
                  .select("payment_key", "payer", "left", "value_date")
                  .join(open_.select("customer_id", "invoice_number", "owed", "credited",
                                     "due_date"),
                        left_on="payer", right_on="customer_id")
                  .filter(pl.col("due_date").is_between(pl.col("value_date") - _SUBSET_BEFORE,
                                                        pl.col("value_date") + _SUBSET_AFTER))
                  .with_columns(away=(pl.col("due_date") - pl.col("value_date")).abs(),
                                gross=pl.col("owed") + pl.col("credited"))
                  .sort("payment_key", "away", "due_date", "invoice_number")
                  .group_by("payment_key", maintain_order=True).head(_SUBSET_ITEMS))
    # two or more items, together at least the payment: else no set can be
    candidates = candidates.filter((pl.len().over("payment_key") >= 2)
                                   & (pl.col("gross").sum().over("payment_key")
                                      >= pl.col("left")))
    keys, invoices = candidates["payment_key"].to_list(), candidates["invoice_number"].to_list()
    owed, gross = candidates["owed"].to_numpy(), candidates["gross"].to_numpy()
    left = candidates["left"].to_numpy()
    chosen: list[tuple[str, str]] = []
    for at, n in _runs(candidates, "payment_key"):
        picked = _subset(owed[at:at + n], gross[at:at + n], int(left[at]))
        if picked is not None and len(picked) >= 2:
            chosen += [(keys[at], invoices[at + i]) for i in picked]
    requests = pl.DataFrame(chosen, schema={"payment_key": pl.String(),
                                            "invoice_number": pl.String()}, orient="row")
    # two payments claiming one item: a person decides between them
    claimed = requests.filter(pl.col("payment_key").n_unique().over("invoice_number") > 1)
    return requests.join(claimed.select("payment_key").unique(), on="payment_key",
                         how="anti")


def match(payments: pl.DataFrame, items: pl.DataFrame, known_ibans: pl.DataFrame,
          oldest_first: bool = False, customer_names: pl.DataFrame | None = None,
          issued: pl.DataFrame | None = None) -> Matching:
    """Match payments to open items.

    Args:
        payments: ``key``, ``cents`` (money as integer cents, exact), ``value_date``,
            ``debtor_iban``, ``creditor_reference``, ``remittance``, and optionally
            ``debtor_name`` (to know a payer by name) and ``end_to_end_id``: a return
            (negative) then voids the credit it took back.
        items: ``invoice_number``, ``customer_id``, ``cents`` (open, > 0), ``due_date``.
        known_ibans: ``iban``, ``customer_id``: payers already seen paying a customer (the
            payers of invoices named in these payments are learnt on the way).
        oldest_first: allow the last pass.
        customer_names: ``customer_id``, ``name``: who a payer without a known IBAN is.
        issued: every item issued, open or not (``invoice_number``, ``invoice_type``,
            ``cents``, ``credited_invoice_number``, as ``open_items.item_rows`` makes
            them): a text naming one of them exactly is no mistype of another, and an open
            invoice's credit notes tell its gross before them.
    """
    payments, returned = _without_returned(payments)
    payments = payments.with_columns(
        (pl.col("debtor_name") if "debtor_name" in payments.columns else pl.lit(None))
        .cast(pl.String).alias("debtor_name"))
    pays = payments.rename({"key": "payment_key"}).with_columns(
        left=pl.col("cents"),
        text=normalize(pl.concat_str(pl.col("creditor_reference").fill_null(""),
                                     pl.col("remittance").fill_null(""), separator=" ")))
    credited = pl.DataFrame(schema={"invoice_number": pl.String(), "credited": pl.Int64()})
    every = items.select("invoice_number", "customer_id")
    if issued is not None:
        credited = (issued.filter(pl.col("invoice_type") == "credit_note")
                    .group_by("credited_invoice_number")
                    .agg(credited=-pl.col("cents").sum())
                    .rename({"credited_invoice_number": "invoice_number"}))
        every = pl.concat([every, issued.select("invoice_number", "customer_id")])
    open_ = items.join(credited, on="invoice_number", how="left").with_columns(
        owed=pl.col("cents"), number=normalize(pl.col("invoice_number")),
        credited=pl.col("credited").fill_null(0).clip(0))
    original = open_.select("invoice_number", "credited")
    # every number a text can name exactly, and whose it is; the texts are searched once
    catalogue = (every.select(number=normalize(pl.col("invoice_number")), customer_id="customer_id")
                 .filter(pl.col("number") != "").unique())
    pays = pays.with_columns(found=_found(pl.col("text"), catalogue["number"].unique()))
    customers = _one_customer(known_ibans.rename({"iban": "debtor_iban"}))
    by_name = _by_name(pays, customer_names)
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

    def payers() -> pl.DataFrame:
        return pays.filter((pl.col("left") > 0) & pl.col("payer").is_not_null())

    # 1. the invoices the payment names; the payers this teaches are known for the second
    #    round, where a known payer's partial payment of its own invoice is taken too
    for _ in range(2):
        pays = _with_payer(pays, customers, by_name)
        requests = _named(pays.filter(pl.col("left") > 0), open_)
        granted = _allocate(requests, pays, open_, "reference", pl.lit(1.0))
        customers = _learn(customers, granted, pays, open_)
        settle(granted)
    pays = _with_payer(pays, customers, by_name)

    # 2. a number one character off
    settle(_allocate(_fuzzy(pays, open_, catalogue), pays, open_, "fuzzy_reference",
                     pl.lit(0.9)))

    # 3. a known payer, the exact amount of one open item (or of its gross, before the
    #    credit notes that corrected it)
    amounts = pl.concat([open_.with_columns(amount=pl.col("owed")),
                         open_.filter(pl.col("credited") > 0).with_columns(
                             amount=pl.col("owed") + pl.col("credited"))])
    exact = (payers().join(amounts, left_on=["payer", "left"],
                           right_on=["customer_id", "amount"])
             .sort("due_date", "invoice_number")
             .group_by("payment_key", maintain_order=True)
             .agg(pl.col("invoice_number").first(), candidates=pl.len()))
    settle(_allocate(exact.select("payment_key", "invoice_number"), pays, open_,
                     "iban_amount", pl.lit(0.9)).join(
        exact.select("payment_key", "candidates"), on="payment_key").with_columns(
        confidence=pl.when(pl.col("candidates") > 1).then(0.7).otherwise(0.9)).drop(
        "candidates"))

    # 4. a known payer, the exact sum of its earliest due items
    running = open_.sort("due_date", "invoice_number").with_columns(
        upto=pl.col("owed").cum_sum().over("customer_id"),
        rank=pl.int_range(pl.len()).over("customer_id"))
    reach = payers().join(running.select("customer_id", "upto", "rank"),
                          left_on=["payer", "left"], right_on=["customer_id", "upto"])
    summed = (reach.join(running.select("customer_id", "invoice_number",
                                        pl.col("rank").alias("item_rank")),
                         left_on="payer", right_on="customer_id")
              .filter(pl.col("item_rank") <= pl.col("rank"))
              .select("payment_key", "invoice_number").unique())
    settle(_allocate(summed, pays, open_, "iban_sum", pl.lit(0.8)))

    # 5. a known payer, the exact sum of one set of its items due around the payment
    settle(_allocate(_subset_sums(pays, open_), pays, open_, "subset_sum", pl.lit(0.7)))

    # 6. what a payer known by IBAN sends, to its earliest due items
    if oldest_first:
        by_iban = pays.filter((pl.col("left") > 0) & pl.col("by_iban").is_not_null())
        settle(_allocate(by_iban.join(open_.select("customer_id", "invoice_number"),
                                      left_on="by_iban", right_on="customer_id")
                         .select("payment_key", "invoice_number"),
                         pays, open_, "oldest_first", pl.lit(0.5)))

    allocations = (pl.concat(done) if done else pl.DataFrame(schema={
        "payment_key": pl.String(), "invoice_number": pl.String(), "cents": pl.Int64(),
        "pass": pl.String(), "confidence": pl.Float64()}))
    # the rest of a payment of an invoice's gross is the credit note it did not deduct
    not_deducted = (allocations.join(original, on="invoice_number")
                    .group_by("payment_key").agg(pl.col("credited").sum()))
    returned = returned.rename({"key": "payment_key"})
    left = pays.filter(pl.col("left") > 0).join(not_deducted, on="payment_key", how="left")
    unallocated = pl.concat([returned, left.select(
        "payment_key", pl.col("left").alias("cents"),
        why=pl.when((pl.col("left") < pl.col("cents"))
                    & (pl.col("left") == pl.col("credited")))
        .then(pl.lit("overpaid: a credit note it did not deduct"))
        .when(pl.col("left") < pl.col("cents")).then(pl.lit("overpaid: the rest"))
        .when(pl.col("payer").is_null()).then(
            pl.lit("unknown payer, naming no invoices for exactly this amount"))
        .otherwise(pl.lit("known payer, no item matches the amount")))])
    return Matching(allocations, unallocated)
