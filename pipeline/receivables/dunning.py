"""Dunning: which customers get which reminder on a run date, and what it says.

Pure functions over frames and records; the ledger, delivery and archive are elsewhere.

The rule, for a run date and a policy of levels (1-based, in order of ``days``):

- An invoice is *past due* when its due date is before the run date; its days late are
  ``run_date - due_date``. Only what is still owed counts (``cents`` > 0); paid and fully
  credited invoices are not open items, and disputed invoices are left out entirely
  (neither triggered nor listed).
- Levels are never skipped, and follow one another at the policy's pace: an invoice's
  *next level* is one above the highest already sent for it; it is *triggered* when the
  invoice is at least that level's ``days`` late and, after an earlier level, at least
  the gap between the two levels' ``days`` has passed since that letter. An invoice first
  seen 107 days late gets the reminder, the second reminder 13 days later (20 - 7), the
  formal notice 25 days after that (45 - 20): nobody gets a formal notice "despite our
  reminders" that were never sent.
- Per customer and currency: when at least one invoice is triggered, the customer is not
  excluded, and the customer's past-due amount (undisputed, interest and indemnity left
  out), less what it has in its favour (an over-credited invoice, a credit note correcting
  none), is above zero and at least ``minimum_amount``, the customer gets ONE letter. Its
  level is the highest next level of its triggered invoices, or the highest level already
  sent for an invoice it lists if that is higher (a customer who had a formal notice about one
  invoice does not get a friendly reminder about it). The letter lists every past-due
  undisputed open item of the customer (days late, open amount, late interest to the run
  date, recovery indemnity) and records ``(invoice, next level)`` for each triggered
  invoice only.

Feeding the records back as ``sent`` (with the day of their letter) on the next run means
no ``(invoice, level)`` is ever recorded twice and an invoice's levels go up one at a time.
Late interest is French pro rata temporis interest
(art. L441-10 Code de commerce): amount x rate / 100 x days / 365, half-up to the cent.
The recovery indemnity (art. D441-5) is a fixed amount in euros per late invoice; in a
letter of another currency it is listed, but kept out of ``total_due``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import polars as pl

from pipeline.keys import short_component
from pipeline.money import CENT, from_cents
from pipeline.settings import DunningSettings

__all__ = ["INDEMNITY_CURRENCY", "late_interest", "DunningLine", "DunningLetter",
           "plan_dunning", "letter_id"]

INDEMNITY_CURRENCY = "EUR"
"""The recovery indemnity is fixed in euros (art. D441-5 Code de commerce)."""

_DAYS_A_YEAR = Decimal(365)


def late_interest(amount: Decimal, rate_percent: Decimal, days_late: int) -> Decimal:
    """Late-payment interest pro rata temporis, half-up to the cent; 0 when not late.

    Args:
        amount: the amount owed.
        rate_percent: the yearly rate in percent (``Decimal("12.15")``).
        days_late: days after the due date.
    """
    if days_late <= 0:
        return Decimal("0.00")
    return (amount * rate_percent / 100 * days_late / _DAYS_A_YEAR).quantize(
        CENT, rounding=ROUND_HALF_UP)


def letter_id(level: int, customer_id: str, run_date: date, currency: str) -> str:
    """The deterministic id of a letter: ``R{level}-{customer}-{YYYYMMDD}-{currency}``,
    the customer id escaped to file-name-safe characters."""
    return (f"R{level}-{short_component(customer_id)}-{run_date:%Y%m%d}-"
            f"{short_component(currency)}")


@dataclass(frozen=True)
class DunningLine:
    """One overdue invoice in a letter."""

    invoice_number: str
    issue_date: date
    due_date: date
    days_late: int
    open_amount: Decimal
    """What is still owed on the invoice, in the letter's currency."""
    interest: Decimal
    """Late interest from the due date to the run date, in the letter's currency."""
    indemnity: Decimal
    """The fixed recovery indemnity, in euros (``INDEMNITY_CURRENCY``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: dates in ISO format, amounts as strings."""
        return {"invoice_number": self.invoice_number,
                "issue_date": self.issue_date.isoformat(),
                "due_date": self.due_date.isoformat(), "days_late": self.days_late,
                "open_amount": str(self.open_amount), "interest": str(self.interest),
                "indemnity": str(self.indemnity)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DunningLine:
        """The line ``to_dict`` gave."""
        return cls(invoice_number=data["invoice_number"],
                   issue_date=date.fromisoformat(data["issue_date"]),
                   due_date=date.fromisoformat(data["due_date"]),
                   days_late=int(data["days_late"]), open_amount=Decimal(data["open_amount"]),
                   interest=Decimal(data["interest"]), indemnity=Decimal(data["indemnity"]))


@dataclass(frozen=True)
class DunningLetter:
    """One reminder to one customer, in one currency, on one run date."""

    letter_id: str
    customer_id: str
    level: int
    """1-based index into the policy's levels."""
    level_name: Literal["reminder", "firm_reminder", "formal_notice"]
    channel: Literal["email", "print"]
    run_date: date
    currency: str
    interest_rate: Decimal
    """The yearly late-interest rate (percent) the interest was counted at."""
    lines: tuple[DunningLine, ...]
    records: tuple[tuple[str, int], ...]
    """``(invoice_number, level)`` of each invoice this letter is the level's letter for."""

    @property
    def total_open(self) -> Decimal:
        """The overdue principal."""
        return sum((line.open_amount for line in self.lines), Decimal("0.00"))

    @property
    def total_interest(self) -> Decimal:
        """Late interest of every line."""
        return sum((line.interest for line in self.lines), Decimal("0.00"))

    @property
    def total_indemnity(self) -> Decimal:
        """Recovery indemnities of every line, in euros."""
        return sum((line.indemnity for line in self.lines), Decimal("0.00"))

    @property
    def indemnity_in_total(self) -> bool:
        """Whether the indemnities are in ``total_due`` (the letter is in euros)."""
        return self.currency == INDEMNITY_CURRENCY

    @property
    def total_due(self) -> Decimal:
        """Principal, interest and (in a letter in euros) the indemnities."""
        indemnity = self.total_indemnity if self.indemnity_in_total else Decimal("0.00")
        return self.total_open + self.total_interest + indemnity

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``from_dict`` gives the same letter back."""
        return {"letter_id": self.letter_id, "customer_id": self.customer_id,
                "level": self.level, "level_name": self.level_name, "channel": self.channel,
                "run_date": self.run_date.isoformat(), "currency": self.currency,
                "interest_rate": str(self.interest_rate),
                "lines": [line.to_dict() for line in self.lines],
                "records": [[number, level] for number, level in self.records]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DunningLetter:
        """The letter ``to_dict`` gave."""
        return cls(letter_id=data["letter_id"], customer_id=data["customer_id"],
                   level=int(data["level"]), level_name=data["level_name"],
                   channel=data["channel"], run_date=date.fromisoformat(data["run_date"]),
                   currency=data["currency"], interest_rate=Decimal(data["interest_rate"]),
                   lines=tuple(DunningLine.from_dict(line) for line in data["lines"]),
                   records=tuple((str(number), int(level)) for number, level in data["records"]))


def _highest_sent(sent: pl.DataFrame) -> dict[str, tuple[int, date | None]]:
    """Per invoice, the highest level sent and the day of that letter (None if unknown)."""
    if sent.is_empty() or not {"invoice_number", "level"} <= set(sent.columns):
        return {}
    days = sent["day"] if "day" in sent.columns else pl.Series([None] * sent.height)
    top: dict[str, tuple[int, date | None]] = {}
    for number, level, day in zip(sent["invoice_number"].to_list(), sent["level"].to_list(),
                                  days.to_list(), strict=True):
        if level > top.get(number, (0, None))[0]:
            top[number] = (level, day)
    return top


def _triggered(days_late: int, last: tuple[int, date | None], run_date: date,
               thresholds: list[int]) -> int:
    """The level this run sends for an invoice, 0 if none (rule in the module docstring)."""
    level, day = last
    if level >= len(thresholds) or days_late < thresholds[level]:
        return 0
    if level and day is not None and (run_date - day).days < (thresholds[level]
                                                              - thresholds[level - 1]):
        return 0
    return level + 1


def plan_dunning(open_items: pl.DataFrame, policy: DunningSettings, run_date: date,
                 sent: pl.DataFrame, disputed: set[str] | frozenset[str],
                 indemnity: Decimal, credits: Mapping[tuple[str, str], int] | None = None
                 ) -> list[DunningLetter]:
    """The letters of a run date, by customer id and currency (rule in the module docstring).

    Args:
        open_items: ``invoice_number``, ``customer_id``, ``issue_date``, ``due_date``,
            ``cents`` (still owed), ``currency``.
        policy: ``Settings().receivables.dunning``.
        run_date: the day the letters are dated; days late and interest run to it.
        sent: ``invoice_number``, ``level`` and ``day`` (of their letter) of the reminders
            already sent (may be empty; without ``day`` the pace is not checked).
        disputed: invoice numbers in dispute on the run date.
        indemnity: the recovery indemnity per late invoice, in euros
            (``Settings().seller.recovery_indemnity``).
        credits: cents each customer has in its favour per currency, by (customer id,
            currency) (``aging.credit_balances``): they count against what it owes past due
            in that currency before the minimum is compared.
    """
    thresholds = [level.days for level in policy.levels]
    excluded = set(policy.excluded_customers)
    highest = _highest_sent(sent)
    late = (open_items
            .filter((pl.col("cents") > 0) & (pl.col("due_date") < run_date)
                    & ~pl.col("invoice_number").is_in(sorted(disputed))
                    & ~pl.col("customer_id").is_in(sorted(excluded)))
            .sort("customer_id", "currency", "due_date", "invoice_number"))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in late.iter_rows(named=True):
        groups.setdefault((row["customer_id"], row["currency"]), []).append(row)

    letters = []
    for (customer_id, currency), rows in groups.items():
        lines, records = [], []
        for row in rows:
            days_late = (run_date - row["due_date"]).days
            amount = from_cents(row["cents"])
            lines.append(DunningLine(
                invoice_number=row["invoice_number"], issue_date=row["issue_date"],
                due_date=row["due_date"], days_late=days_late, open_amount=amount,
                interest=late_interest(amount, policy.late_interest_rate, days_late),
                indemnity=indemnity))
            last = highest.get(row["invoice_number"], (0, None))
            if next_level := _triggered(days_late, last, run_date, thresholds):
                records.append((row["invoice_number"], next_level))
        owed = sum(line.open_amount for line in lines) - from_cents(
            (credits or {}).get((customer_id, currency), 0))
        if not records or owed <= 0 or owed < policy.minimum_amount:
            continue
        level = max(max(due for _, due in records),
                    *(highest.get(row["invoice_number"], (0, None))[0] for row in rows))
        step = policy.levels[level - 1]
        letters.append(DunningLetter(
            letter_id=letter_id(level, customer_id, run_date, currency),
            customer_id=customer_id, level=level, level_name=step.name, channel=step.channel,
            run_date=run_date, currency=currency, interest_rate=policy.late_interest_rate,
            lines=tuple(lines), records=tuple(records)))
    return letters
