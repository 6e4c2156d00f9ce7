"""ISO 20022 camt.053 bank-to-customer statements, read into payments.

A statement (``Stmt``) lists booked entries (``Ntry``); an entry the bank batched holds
several transactions (``NtryDtls/TxDtls``), each with its own amount, payer and remittance
information, so each transaction is one payment. Credits are payments in; a debit the bank
marks as a reversal or a return (a returned direct debit) is kept as a negative payment,
so the money it takes back is matched against what it had paid. Other debits are the
seller's own payments, and a credit that reverses one of them gives back the seller's own
money: neither is a receivable, both are counted as skipped, as are pending entries.

The reader is namespace-agnostic: every camt.053 version (001.02 to 001.13) names these
elements alike. Anything a payment cannot do without (amount, currency, credit/debit
indicator, a date) missing or malformed raises ``StatementError`` naming the file, the
entry and the element: a statement is imported whole or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import polars as pl
from babel.core import get_global
from babel.numbers import get_territory_currencies
from lxml import etree

from pipeline.errors import PipelineError

__all__ = ["BankPayment", "Statement", "StatementError", "read_statement", "payment_frame"]

# Bank transaction codes (ISO 20022 external code list) of a return or a reversal.
_RETURN_CODES = {"RRTN", "RPCR", "UPDD", "PRDD", "RCDD", "ARET", "DDRJ"}
# An ISO 20022 amount as a payment carries it: digits, at most two decimals, no exponent,
# at most 16 digits before the point (the schema's 18 in all).
_AMOUNT = re.compile(r"\d{1,16}(\.\d{1,2})?")
# Currencies some territory uses (CLDR, as Babel ships it): not a historical code (FRF),
# a test code (XTS, XXX) or a metal (XAU), which no invoice can be paid in.
_CURRENCIES = frozenset(code for territory in get_global("territory_currencies")
                        for code in get_territory_currencies(territory, date(2026, 1, 1)))


class StatementError(PipelineError):
    """A statement file that cannot be imported, with where and why."""


@dataclass(frozen=True)
class BankPayment:
    """One transaction of a statement: money in (or taken back, when negative)."""

    statement_id: str
    entry: int
    """1-based position of the entry in its statement."""
    transaction: int
    """1-based position of the transaction in its entry."""
    kind: str
    """``credit`` or ``return``."""
    amount: Decimal
    currency: str
    booking_date: date | None
    value_date: date
    debtor_name: str | None
    debtor_iban: str | None
    creditor_reference: str | None
    """The structured remittance (``Strd/CdtrRefInf/Ref``), e.g. an RF creditor reference."""
    remittance: str | None
    """The unstructured remittance lines (``Ustrd``), joined."""
    bank_reference: str
    """What identifies it at the bank: the servicer's reference, else the end-to-end id."""
    end_to_end_id: str | None

    @property
    def key(self) -> str:
        """Stable identity: the same statement imported again gives the same keys."""
        return f"{self.statement_id}/{self.entry}/{self.transaction}"


@dataclass(frozen=True)
class Statement:
    """One ``Stmt`` of a camt.053 file."""

    statement_id: str
    iban: str | None
    payments: tuple[BankPayment, ...]
    skipped: int = 0
    """Entries that are not receivables: pending, the seller's own debits and their
    reversals."""


def _children(node: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in node if isinstance(c.tag, str) and etree.QName(c).localname == name]


def _find(node: etree._Element | None, path: str) -> etree._Element | None:
    for name in path.split("/"):
        if node is None:
            return None
        found = _children(node, name)
        node = found[0] if found else None
    return node


def _text(node: etree._Element | None, path: str) -> str | None:
    found = _find(node, path)
    text = " ".join((found.text or "").split()) if found is not None else ""
    return text or None


def _date(node: etree._Element | None, path: str, where: str) -> date | None:
    """``Dt``, or the date of ``DtTm``."""
    for element, text in ((f"{path}/Dt", _text(node, f"{path}/Dt")),
                          (f"{path}/DtTm", (_text(node, f"{path}/DtTm") or "")[:10])):
        if text:
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{where}: {element} {text!r} is not a date") from None
    return None


def _amount(node: etree._Element, where: str) -> tuple[Decimal, str]:
    amt = _find(node, "Amt")
    if amt is None or not (amt.text or "").strip():
        raise ValueError(f"{where}: Amt is missing")
    text = amt.text.strip()
    if not _AMOUNT.fullmatch(text):
        raise ValueError(f"{where}: Amt {text[:40]!r} is not an amount (digits, at most two "
                         "decimals)")
    currency = amt.get("Ccy")
    if not currency:
        raise ValueError(f"{where}: Amt has no Ccy")
    if currency not in _CURRENCIES:
        raise ValueError(f"{where}: Amt Ccy {currency[:10]!r} is not an ISO 4217 currency in use")
    return Decimal(text), currency


def _is_return(entry: etree._Element) -> bool:
    codes = {_text(entry, "BkTxCd/Domn/Fmly/SubFmlyCd"), _text(entry, "BkTxCd/Prtry/Cd")}
    return _text(entry, "RvslInd") == "true" or bool(codes & _RETURN_CODES)


def _bank_reference(tx: etree._Element | None, entry: etree._Element, n: int, of: int,
                    key: str) -> str:
    """The bank's own reference of a transaction: what tells a transaction sent twice from
    two transactions alike. Only the bank's (servicer's) reference counts, the entry's with
    the transaction's position in a batch; never the payer's end-to-end id (often
    ``NOTPROVIDED``, or ``1``): without one, the payment's own key."""
    own = _text(tx, "Refs/AcctSvcrRef")
    if own:
        return own
    entry_ref = _text(entry, "AcctSvcrRef")
    if entry_ref:
        return entry_ref if of <= 1 else f"{entry_ref}/{n}"
    return key


def _party_name(tx: etree._Element | None) -> str | None:
    # camt.053.001.02 names the payer Dbtr/Nm; 001.08 and later Dbtr/Pty/Nm
    return _text(tx, "RltdPties/Dbtr/Pty/Nm") or _text(tx, "RltdPties/Dbtr/Nm")


def _payments(statement_id: str, number: int, entry: etree._Element, where: str
              ) -> list[BankPayment] | None:
    """The entry's payments; None when it is not a receivable (see the module docstring)."""
    indicator = _text(entry, "CdtDbtInd")
    if indicator not in ("CRDT", "DBIT"):
        raise ValueError(f"{where}: CdtDbtInd is {indicator!r}, not CRDT or DBIT")
    returned = indicator == "DBIT" and _is_return(entry)
    if indicator == "DBIT" and not returned:
        return None  # the seller's own payment
    if indicator == "CRDT" and _text(entry, "RvslInd") == "true":
        return None  # the seller's own payment, reversed: its money back
    value_date = _date(entry, "ValDt", where) or _date(entry, "BookgDt", where)
    if value_date is None:
        raise ValueError(f"{where}: neither ValDt nor BookgDt")
    entry_amount, currency = _amount(entry, where)
    if entry_amount == 0:
        return None  # nothing moved (a zero-amount notice)
    details = [tx for d in _children(entry, "NtryDtls") for tx in _children(d, "TxDtls")]
    sign = Decimal(-1) if returned else Decimal(1)
    found = []
    for n, tx in enumerate(details or [None], start=1):
        here = f"{where} TxDtls {n}"
        if tx is not None and _find(tx, "Amt") is not None:
            amount, tx_currency = _amount(tx, here)
            if tx_currency != currency:
                raise ValueError(f"{here}: Amt in {tx_currency}, its entry in {currency}")
        elif len(details) > 1:
            raise ValueError(f"{here}: a batched entry needs each transaction's Amt")
        else:
            amount, tx_currency = entry_amount, currency
        end_to_end = _text(tx, "Refs/EndToEndId")
        found.append(BankPayment(
            statement_id=statement_id, entry=number, transaction=n,
            kind="return" if returned else "credit", amount=sign * amount,
            currency=tx_currency, booking_date=_date(entry, "BookgDt", where),
            value_date=value_date,
            debtor_name=_party_name(tx),
            debtor_iban=(_text(tx, "RltdPties/DbtrAcct/Id/IBAN") or "").replace(" ", "") or None,
            creditor_reference=_text(tx, "RmtInf/Strd/CdtrRefInf/Ref"),
            remittance=" ".join(t for u in (_children(_find(tx, "RmtInf"), "Ustrd")
                                            if _find(tx, "RmtInf") is not None else [])
                                if (t := " ".join((u.text or "").split()))) or None,
            bank_reference=_bank_reference(tx, entry, n, len(details),
                                           f"{statement_id}/{number}/{n}"),
            end_to_end_id=None if end_to_end == "NOTPROVIDED" else end_to_end))
    total = sum((abs(p.amount) for p in found), Decimal(0))
    if details and all(_find(tx, "Amt") is not None for tx in details) and total != entry_amount:
        raise ValueError(f"{where}: its transactions add up to {total}, the entry says "
                         f"{entry_amount}")
    return found


def read_statement(data: bytes, source: str) -> list[Statement]:
    """The statements of one camt.053 file.

    Raises:
        StatementError: not camt.053 XML, or an entry without what a payment needs.
    """
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise StatementError(f"{source}: not XML: {exc}") from exc
    if root.getroottree().docinfo.doctype:  # entities it declares would be dropped unread
        raise StatementError(f"{source}: a statement with a DOCTYPE is refused (camt.053 "
                             "has none)")
    report = _find(root, "BkToCstmrStmt")
    if report is None:
        raise StatementError(f"{source}: not a camt.053 statement (no BkToCstmrStmt)")
    statements = []
    for s, stmt in enumerate(_children(report, "Stmt"), start=1):
        statement_id = _text(stmt, "Id")
        if not statement_id:
            raise StatementError(f"{source}: statement {s} has no Id")
        payments: list[BankPayment] = []
        skipped = 0
        for e, entry in enumerate(_children(stmt, "Ntry"), start=1):
            status = _text(entry, "Sts/Cd") or _text(entry, "Sts")  # 001.08+, or 001.02
            try:
                found = (_payments(statement_id, e, entry, f"statement {statement_id} entry {e}")
                         if status in (None, "BOOK") else None)  # pending: not money yet
            except ValueError as exc:
                raise StatementError(f"{source}: {exc}") from exc
            if found is None:
                skipped += 1
            else:
                payments += found
        statements.append(Statement(statement_id, _text(stmt, "Acct/Id/IBAN"), tuple(payments),
                                    skipped))
    if not statements:
        raise StatementError(f"{source}: no Stmt in the file")
    return statements


def payment_frame(found: list[BankPayment]) -> pl.DataFrame:
    """Payments as matching takes them (``matching.match``), money in integer cents."""
    return pl.DataFrame({
        "key": [p.key for p in found], "cents": [int(p.amount * 100) for p in found],
        "value_date": [p.value_date for p in found],
        "debtor_name": [p.debtor_name for p in found],
        "debtor_iban": [p.debtor_iban for p in found],
        "creditor_reference": [p.creditor_reference for p in found],
        "remittance": [p.remittance for p in found],
        "end_to_end_id": [p.end_to_end_id for p in found]},
        schema={"key": pl.String(), "cents": pl.Int64(), "value_date": pl.Date(),
                "debtor_name": pl.String(), "debtor_iban": pl.String(),
                "creditor_reference": pl.String(), "remittance": pl.String(),
                "end_to_end_id": pl.String()})
