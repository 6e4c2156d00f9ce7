"""Sample bank statements (camt.053) that pay a sample extract, with the generator's truth.

``generate_statements`` reads the invoices and customers of an extract (``pipeline.sample``)
and writes one camt.053.001.08 file per banking day that has payments, plus
``payments_truth.parquet``: which payment pays which invoice (or credit note, negative),
and how much. Every payment has one kind (``KINDS``); for each payment key the allocated
amounts add up to the amount on the statement. A payment that pays nothing known has one
row with a null invoice number (an unknown payer, or the excess of an overpayment).

Money is integer cents until it is written: a text ``Amt`` in the XML and a Decimal(18,2)
column in the truth. Same seed, same bytes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from lxml import etree
from stdnum import iban as stdnum_iban
from stdnum.iso7064 import mod_97_10

from pipeline import money
from pipeline.money import decimal_series

__all__ = ["KINDS", "TRUTH_FILE", "StatementsReport", "generate_statements", "rf_reference"]

TRUTH_FILE = "payments_truth.parquet"
KINDS = ("exact", "late", "partial", "grouped", "mistyped_reference", "no_reference",
         "overpayment", "unknown_payer", "returned")
_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
_DAY = timedelta(days=1)
# Per invoice (not credited, not a direct-debit customer's): its fate.
_FATES = ("exact", "late", "partial", "grouped", "mistyped_reference", "no_reference",
          "overpayment", "unpaid")
_FATE_SHARES = (0.70, 0.08, 0.04, 0.07, 0.03, 0.025, 0.015, 0.04)
_RETURN_REASONS = ("AM04", "MD06", "AC04", "MS02")
_UNKNOWN_PAYERS = ("SCI Les Cèdres", "M. Jean-Pierre Dupuis", "Association Sportive & "
                   "Culturelle de Rezé", "Mme Claire Lefranc", "Syndic Foncia <Lyon>",
                   "EURL Quéméner Conseil", "Trésor Public DGFIP", "Mutuelle Harmonie")
_UNKNOWN_TEXTS = ("Remboursement trop perçu", "Acompte commande", "REF 88213/B",
                  "Loyer mars", "FA2019-004512", None)
_HOLIDAYS = {(1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25)}
# BBAN layout per country (digits only): (length, national check) for the IBANs we make.
_BBAN = {"FR": 23, "DE": 18, "BE": 12, "CH": 17, "ES": 20, "IT": 23, "NL": 14, "GB": 18}


@dataclass
class StatementsReport:
    """What ``generate_statements`` wrote."""

    out: Path
    files: list[str] = field(default_factory=list)
    payments: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    open_invoices: int = 0
    first_day: date | None = None
    last_day: date | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for a run summary or a Prefect artifact."""
        return {"out": str(self.out), "files": len(self.files), "payments": self.payments,
                "by_kind": dict(self.by_kind), "open_invoices": self.open_invoices,
                "first_day": self.first_day.isoformat() if self.first_day else None,
                "last_day": self.last_day.isoformat() if self.last_day else None}

    def as_markdown(self) -> str:
        """A short table of the payments by kind."""
        rows = "\n".join(f"| {k} | {n} |" for k, n in self.by_kind.items())
        return (f"{self.payments} payments in {len(self.files)} statements "
                f"({self.first_day} to {self.last_day}); {self.open_invoices} invoices left "
                f"open\n\n| kind | payments |\n|---|---|\n{rows}")


@dataclass
class _Payment:
    """One transaction to write: a credit, or a return (a debit) when ``returned``."""

    kind: str
    day: date
    cents: int
    allocations: list[tuple[str | None, int]]
    customer: int | None
    name: str
    iban: str | None
    remittance: list[str] = field(default_factory=list)
    creditor_reference: str | None = None
    end_to_end: str = "NOTPROVIDED"
    method: str = "transfer"
    """``transfer``, ``collection`` (a direct debit) or ``return``."""
    reason: str | None = None
    order: float = 0.0
    key: str = ""


def rf_reference(invoice_number: str) -> str:
    """The ISO 11649 structured creditor reference (``RF`` + check digits) of an invoice."""
    body = "".join(ch for ch in invoice_number.upper() if ch.isalnum())
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def _iban(rng: np.random.Generator, country: str) -> str | None:
    """A valid IBAN of ``country`` (a French one with its RIB key), or None outside SEPA."""
    length = _BBAN.get(country)
    if length is None:
        return None
    digits = "".join(str(d) for d in rng.integers(0, 10, length))
    if country == "FR":
        bank, branch, account = digits[:5], digits[5:10], digits[10:21]
        key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
        digits = f"{bank}{branch}{account}{key:02d}"
    elif country == "BE":
        check = int(digits[:10]) % 97 or 97
        digits = f"{digits[:10]}{check:02d}"
    number = f"{country}00{digits}"
    number = f"{country}{stdnum_iban.calc_check_digits(number)}{digits}"
    if not stdnum_iban.is_valid(number):  # a national rule we do not model: draw again
        return _iban(rng, country)
    return number


def _banking_day(day: date) -> date:
    """The day itself or the next day a French bank books on (no weekend, no holiday)."""
    while day.weekday() >= 5 or (day.month, day.day) in _HOLIDAYS:
        day += _DAY
    return day


def _mistype(rng: np.random.Generator, number: str) -> str:
    """The invoice number as a payer mistypes it."""
    prefix, _, digits = number.partition("-")
    variant = int(rng.integers(0, 6))
    if variant == 0 and digits:  # one wrong digit
        i = int(rng.integers(0, len(digits)))
        wrong = str((int(digits[i]) + int(rng.integers(1, 10))) % 10) if digits[i].isdigit() \
            else "0"
        return f"{prefix}-{digits[:i]}{wrong}{digits[i + 1:]}"
    if variant == 1:
        return f"{prefix[:2]} {prefix[2:]} {digits}"
    if variant == 2:
        return number.lower()
    if variant == 3:
        return f"{prefix}{digits}"
    if variant == 4 and len(digits) >= 2:  # two digits swapped
        i = int(rng.integers(0, len(digits) - 1))
        return f"{prefix}-{digits[:i]}{digits[i + 1]}{digits[i]}{digits[i + 2:]}"
    return f"{prefix} {digits}"


def _remit(rng: np.random.Generator, numbers: list[str], name: str) -> list[str]:
    """An unstructured remittance naming ``numbers`` the way payers write it."""
    style = int(rng.integers(0, 4))
    joined = " ".join(numbers)
    if style == 0:
        return [joined]
    if style == 1:
        return [f"Facture {joined}" if len(numbers) == 1 else f"Factures {joined}"]
    if style == 2:
        return [f"REGLEMENT {joined.upper()}", name.upper()[:35]]
    return [f"/INV/{joined}"]


def _cents(frame: pl.DataFrame, column: str) -> np.ndarray:
    return np.asarray(frame.select(money.scaled(column)).to_series().cast(pl.Int64).to_numpy())


def _days(series: pl.Series) -> np.ndarray:
    return np.asarray(series.cast(pl.Int32).to_numpy(), dtype=np.int64)


def _date(days: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(days))


def _plan(rng: np.random.Generator, invoices: pl.DataFrame, customers: pl.DataFrame,
          until: date) -> tuple[list[_Payment], int]:
    """Every payment (unplaced in statements yet) and how many invoices stay open."""
    cust_ids = customers["customer_id"].to_list()
    cust_index = {c: i for i, c in enumerate(cust_ids)}
    names = customers["legal_name"].to_list()
    countries = customers["country"].fill_null("FR").to_list()
    n_cust = len(cust_ids)
    ibans = [_iban(rng, c) for c in countries]
    second = [_iban(rng, "FR") if rng.random() < 0.05 else None for _ in range(n_cust)]
    pays_by_debit = rng.random(n_cust) < 0.10
    pays_by_debit[int(rng.integers(0, n_cust))] = n_cust > 0  # at least one
    shouts = rng.random(n_cust) < 0.3  # banks that print the payer's name in capitals

    def payer(c: int) -> tuple[str, str | None]:
        name = names[c].upper() if shouts[c] else names[c]
        use_second = second[c] is not None and rng.random() < 0.4
        return name, second[c] if use_second else ibans[c]

    inv = invoices.filter(pl.col("invoice_type") != "credit_note",
                          pl.col("customer_id").is_in(cust_ids))
    notes = invoices.filter(pl.col("invoice_type") == "credit_note",
                            pl.col("credited_invoice_number").is_not_null())
    credit_of: dict[str, tuple[str, int]] = {}
    for number, credited, cents in zip(notes["invoice_number"].to_list(),
                                       notes["credited_invoice_number"].to_list(),
                                       _cents(notes, "total_gross").tolist(), strict=True):
        credit_of.setdefault(credited, (number, cents))
    numbers = inv["invoice_number"].to_list()
    customer = np.array([cust_index[c] for c in inv["customer_id"].to_list()], dtype=np.int64)
    gross = _cents(inv, "total_gross")
    issue = _days(inv["issue_date"])
    due = _days(inv["due_date"].fill_null(inv["issue_date"]))
    n = len(numbers)
    fate = rng.choice(len(_FATES), n, p=_FATE_SHARES)
    drift = rng.integers(-4, 6, n)  # exact payers around the due date
    lateness = rng.integers(10, 91, n)
    net_share = rng.random(n)
    horizon = (until - date(1970, 1, 1)).days

    payments: list[_Payment] = []
    open_count = 0

    def add(kind: str, day: int, allocations: list[tuple[str | None, int]], c: int | None,
            **extra: Any) -> _Payment | None:
        when = _banking_day(_date(day))
        if when > until:
            return None
        name, account = payer(c) if c is not None else (extra.pop("name"), extra.pop("iban"))
        payment = _Payment(kind=kind, day=when, cents=sum(a for _, a in allocations),
                           allocations=allocations, customer=c, name=name, iban=account,
                           order=float(rng.random()), **extra)
        payments.append(payment)
        return payment

    def due_allocations(k: int) -> list[tuple[str | None, int]]:
        """The invoice alone, or net of its credit note for three payers in four."""
        number = numbers[k]
        credit = credit_of.get(number)
        if credit is not None and net_share[k] < 0.75 and gross[k] > credit[1]:
            return [(number, int(gross[k])), (credit[0], -credit[1])]
        return [(number, int(gross[k]))]

    grouped: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k in range(n):
        c = int(customer[k])
        kind = _FATES[fate[k]]
        number = numbers[k]
        on_time = max(int(due[k] + drift[k]), int(issue[k]) + 1)
        if pays_by_debit[c] and kind != "unpaid":
            allocations = [(number, int(gross[k]))]
            returned = rng.random() < 0.12
            first = add("returned" if returned else "exact", int(due[k]), allocations, c,
                        remittance=[number], end_to_end=f"SDD-{number}", method="collection")
            if first is None:
                open_count += 1
                continue
            if returned:
                back = first.day + timedelta(days=int(rng.integers(2, 9)))
                later = (back - date(1970, 1, 1)).days
                add("returned", later, [(number, -int(gross[k]))], c,
                    end_to_end=f"SDD-{number}", method="return",
                    reason=_RETURN_REASONS[int(rng.integers(0, len(_RETURN_REASONS)))])
                if rng.random() < 0.6 and add(
                        "late", later + int(rng.integers(5, 30)), allocations, c,
                        remittance=_remit(rng, [number], names[c])) is not None:
                    continue
                open_count += 1
            continue
        if kind == "unpaid":
            open_count += 1
            continue
        if kind == "grouped":
            grouped[(c, int(due[k]) // 30)].append(k)
            continue
        done: _Payment | None = None
        if kind in ("exact", "late"):
            day = on_time if kind == "exact" else int(due[k] + lateness[k])
            if rng.random() < 0.15:
                done = add(kind, day, due_allocations(k), c, creditor_reference=rf_reference(
                    number), end_to_end=f"E2E-{rng.integers(10**8, 10**9)}")
            else:
                done = add(kind, day, due_allocations(k), c,
                           remittance=_remit(rng, [number], names[c]))
        elif kind == "mistyped_reference":
            done = add(kind, on_time, due_allocations(k), c,
                       remittance=[f"Facture {_mistype(rng, number)}"
                                   if rng.random() < 0.5 else _mistype(rng, number)])
        elif kind == "no_reference":
            vague = [["VIREMENT " + names[c].upper()[:30]], ["Paiement facture"], []]
            done = add(kind, on_time, due_allocations(k), c,
                       remittance=vague[int(rng.integers(0, 3))])
        elif kind == "overpayment":
            excess = int(rng.choice([1000 - gross[k] % 1000 or 1000,
                                     int(rng.integers(100, 5001))]))
            done = add(kind, on_time, [(number, int(gross[k])), (None, excess)], c,
                       remittance=_remit(rng, [number], names[c]))
        elif kind == "partial":
            part = max(1, int(gross[k] * rng.uniform(0.3, 0.7)))
            done = add(kind, on_time, [(number, part)], c,
                       remittance=_remit(rng, [number], names[c]) + ["Acompte"])
            if done is not None and rng.random() < 0.6:
                rest = add(kind, on_time + int(rng.integers(15, 60)),
                           [(number, int(gross[k]) - part)], c,
                           remittance=[f"Solde {number}"])
                done = rest
            elif done is not None:
                done = None  # the rest never comes
        if done is None:
            open_count += 1

    for (c, _), members in sorted(grouped.items()):
        if len(members) == 1:  # alone in its month: an ordinary payment on time
            k = members[0]
            done = add("exact", max(int(due[k] + drift[k]), int(issue[k]) + 1),
                       due_allocations(k), c, remittance=_remit(rng, [numbers[k]], names[c]))
            open_count += done is None
            continue
        allocations = [a for k in members for a in due_allocations(k)]
        listed = [numbers[k] for k in members]
        text = _remit(rng, listed, names[c]) if rng.random() < 0.6 else []
        day = max(int(due[k]) for k in members) + int(rng.integers(-2, 4))
        if add("grouped", day, allocations, c, remittance=text) is None:
            open_count += len(members)

    # Payers that are not customers: a share of the payments, spread over the period.
    start = int(issue.min()) if n else horizon - 30
    for _ in range(max(2, len(payments) // 70)):
        words = _UNKNOWN_TEXTS[int(rng.integers(0, len(_UNKNOWN_TEXTS)))]
        add("unknown_payer", int(rng.integers(start + 1, horizon + 1)),
            [(None, int(rng.integers(2000, 500_000)))], None,
            name=_UNKNOWN_PAYERS[int(rng.integers(0, len(_UNKNOWN_PAYERS)))],
            iban=_iban(rng, "FR"), remittance=[words] if words else [])
    return payments, open_count


def _amount(cents: int) -> str:
    return f"{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _sub(parent: etree._Element, tag: str, text: str | None = None,
         **attrib: str) -> etree._Element:
    node = etree.SubElement(parent, f"{{{_NS}}}{tag}", attrib)
    if text is not None:
        node.text = text
    return node


def _path(parent: etree._Element, path: str, text: str | None = None) -> etree._Element:
    node = parent
    for tag in path.split("/"):
        node = _sub(node, tag)
    node.text = text
    return node


def _tx_code(parent: etree._Element, family: str, sub: str) -> None:
    domain = _path(parent, "BkTxCd/Domn")
    _sub(domain, "Cd", "PMNT")
    fmly = _sub(domain, "Fmly")
    _sub(fmly, "Cd", family)
    _sub(fmly, "SubFmlyCd", sub)


def _tx(entry_details: etree._Element, p: _Payment, reference: str | None) -> None:
    tx = _sub(entry_details, "TxDtls")
    refs = _sub(tx, "Refs")
    if reference:
        _sub(refs, "AcctSvcrRef", reference)
    _sub(refs, "EndToEndId", p.end_to_end)
    _sub(tx, "Amt", _amount(p.cents), Ccy="EUR")
    parties = _sub(tx, "RltdPties")
    _path(parties, "Dbtr/Pty/Nm", p.name)
    if p.iban:
        _path(parties, "DbtrAcct/Id/IBAN", p.iban)
    if p.creditor_reference:
        info = _path(tx, "RmtInf/Strd/CdtrRefInf")
        _path(info, "Tp/CdOrPrtry/Cd", "SCOR")
        _sub(info, "Ref", p.creditor_reference)
    elif p.remittance:
        info = _sub(tx, "RmtInf")
        for line in p.remittance:
            _sub(info, "Ustrd", line[:140])
    if p.reason:
        _path(tx, "RtrInf/Rsn/Cd", p.reason)


def _balance(stmt: etree._Element, code: str, cents: int, day: date) -> None:
    bal = _sub(stmt, "Bal")
    _path(bal, "Tp/CdOrPrtry/Cd", code)
    _sub(bal, "Amt", _amount(cents), Ccy="EUR")
    _sub(bal, "CdtDbtInd", "CRDT" if cents >= 0 else "DBIT")
    _path(bal, "Dt/Dt", day.isoformat())


def _statement(day: date, number: int, entries: list[list[_Payment]], seller_iban: str,
               opening: int) -> tuple[bytes, int]:
    """The camt.053 file of one day and its closing balance; sets each payment's key."""
    stamp = f"{(day + _DAY).isoformat()}T06:00:00"
    root = etree.Element(f"{{{_NS}}}Document", nsmap={None: _NS})
    report = _sub(root, "BkToCstmrStmt")
    header = _sub(report, "GrpHdr")
    _sub(header, "MsgId", f"CAMT053-{day:%Y%m%d}-0001")
    _sub(header, "CreDtTm", stamp)
    stmt = _sub(report, "Stmt")
    statement_id = f"STMT-{day.isoformat()}"
    _sub(stmt, "Id", statement_id)
    _sub(stmt, "ElctrncSeqNb", str(number))
    _sub(stmt, "CreDtTm", stamp)
    acct = _sub(stmt, "Acct")
    _path(acct, "Id/IBAN", seller_iban)
    _sub(acct, "Ccy", "EUR")
    closing = opening + sum(p.cents for entry in entries for p in entry)
    _balance(stmt, "OPBD", opening, day)
    _balance(stmt, "CLBD", closing, day)
    for e, batch in enumerate(entries, start=1):
        first = batch[0]
        entry = _sub(stmt, "Ntry")
        _sub(entry, "NtryRef", str(e))
        _sub(entry, "Amt", _amount(sum(p.cents for p in batch)), Ccy="EUR")
        _sub(entry, "CdtDbtInd", "DBIT" if first.method == "return" else "CRDT")
        if first.method == "return":
            _sub(entry, "RvslInd", "true")
        _path(entry, "Sts/Cd", "BOOK")
        _path(entry, "BookgDt/Dt", day.isoformat())
        _path(entry, "ValDt/Dt", day.isoformat())
        reference = f"BNP-{day:%Y%m%d}-{e:06d}"
        _sub(entry, "AcctSvcrRef", reference)
        family, sub = {"transfer": ("RCDT", "ESCT"), "collection": ("IDDT", "ESDD"),
                       "return": ("RDDT", "UPDD")}[first.method]
        _tx_code(entry, family, sub)
        details = _sub(entry, "NtryDtls")
        if len(batch) > 1:
            _path(details, "Btch/NbOfTxs", str(len(batch)))
        for t, p in enumerate(batch, start=1):
            _tx(details, p, f"{reference}-{t}" if len(batch) > 1 else None)
            p.key = f"{statement_id}/{e}/{t}"
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data, closing


def _entries(rng: np.random.Generator, day_payments: list[_Payment]) -> list[list[_Payment]]:
    """The day's entries: collections in one batch; on some days, transfers batched too."""
    ordered = sorted(day_payments, key=lambda p: p.order)
    collections = [p for p in ordered if p.method == "collection"]
    returns = [[p] for p in ordered if p.method == "return"]
    transfers = [p for p in ordered if p.method == "transfer"]
    entries: list[list[_Payment]] = [collections] if collections else []
    if len(transfers) >= 3 and rng.random() < 0.3:
        size = int(rng.integers(2, min(6, len(transfers)) + 1))
        entries.append(transfers[:size])
        transfers = transfers[size:]
    entries += [[p] for p in transfers]
    return entries + returns


def generate_statements(extract: Path | str, out: Path | str, seed: int = 1,
                        seller_iban: str = "FR7630004000050000123456789",
                        until: date | None = None) -> StatementsReport:
    """Write camt.053 statements that pay the invoices of ``extract``, and their truth.

    Args:
        extract: a directory with ``invoices.parquet`` and ``customers.parquet``.
        out: where to write ``camt053-YYYY-MM-DD.xml`` (one per banking day with payments)
            and ``payments_truth.parquet``.
        seed: the same seed gives the same bytes.
        seller_iban: the account the statements are of.
        until: the last day statements cover; by default 120 days after the last issue
            date. A payment that would come later is not written (its invoice stays open).
    """
    extract, out = Path(extract), Path(out)
    invoices = pl.read_parquet(extract / "invoices.parquet").sort("invoice_number")
    customers = pl.read_parquet(extract / "customers.parquet").sort("customer_id")
    if until is None:
        last = invoices["issue_date"].max()
        until = (last if isinstance(last, date) else date(2026, 11, 26)) + timedelta(days=120)
    rng = np.random.default_rng([seed, 20022])
    payments, open_count = _plan(rng, invoices, customers, until)

    out.mkdir(parents=True, exist_ok=True)
    by_day: dict[date, list[_Payment]] = defaultdict(list)
    for p in payments:
        by_day[p.day].append(p)
    report = StatementsReport(out=out, open_invoices=open_count)
    balance = 2_500_000
    for number, day in enumerate(sorted(by_day), start=1):
        data, balance = _statement(day, number, _entries(rng, by_day[day]), seller_iban,
                                   balance)
        name = f"camt053-{day.isoformat()}.xml"
        tmp = out / f"{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)
        report.files.append(name)
    if by_day:
        report.first_day, report.last_day = min(by_day), max(by_day)

    customer_ids = customers["customer_id"].to_list()
    rows = [(p.key, p.kind, invoice, cents, p.day,
             None if p.customer is None else customer_ids[p.customer], p.iban)
            for p in sorted(payments, key=lambda p: p.key) for invoice, cents in p.allocations]
    truth = pl.DataFrame({
        "payment_key": [r[0] for r in rows], "kind": [r[1] for r in rows],
        "invoice_number": pl.Series([r[2] for r in rows], dtype=pl.String),
        "allocated": decimal_series("allocated", np.array([r[3] for r in rows], np.int64), 2),
        "value_date": pl.Series([r[4] for r in rows], dtype=pl.Date),
        "customer_id": pl.Series([r[5] for r in rows], dtype=pl.String),
        "payer_iban": pl.Series([r[6] for r in rows], dtype=pl.String),
    })
    tmp = out / f"{TRUTH_FILE}.tmp"
    truth.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.replace(out / TRUTH_FILE)
    report.payments = len(payments)
    counts = {k: sum(p.kind == k for p in payments) for k in KINDS}
    report.by_kind = {k: v for k, v in counts.items() if v}
    return report
