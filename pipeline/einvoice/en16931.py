"""THE mapping from our document model to EN 16931 business terms.

Every format (CII in Factur-X, UBL, EDIFACT, X12) is written from this one
``Invoice`` so they can never disagree; field names carry their BT/BG number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from pipeline.documents import Address, InvoiceDocument

__all__ = ["Party", "Line", "VatBreakdown", "Invoice", "to_en16931", "TYPE_CODES",
           "BILLING_MODES", "notes", "domestic_b2b"]

TYPE_CODES = {"invoice": "380", "credit_note": "381"}
PAYMENT_MEANS_SEPA_TRANSFER = "58"
# BT-23 "cadre de facturation" of the 2026 reform (XP Z12-012, BR-FR-08): a plain deposit
# of an invoice of goods (B1), of services (S1) or of both (M1).
BILLING_MODES = {"goods": "B1", "services": "S1", "mixed": "M1"}
_VATEX = re.compile(r"^VATEX-[A-Z0-9-]+$", re.IGNORECASE)
# BT-120 when the extract gives none (validation requires one; this is the last resort).
_DEFAULT_REASONS = {"E": "Exempt", "Z": "Zero rated", "AE": "Reverse charge",
                    "K": "Intra-community supply", "G": "Export outside the EU",
                    "O": "Not subject to VAT"}
# The notes French law requires on every B2B invoice (art. L441-9 and L441-10 of the
# Commercial Code), with the subject codes the 2026 reform checks (BR-FR-05).
_LATE_PENALTIES = {
    "fr": "Pénalités de retard : {rate}, exigibles dès le lendemain de la date d'échéance "
          "(art. L441-10 du Code de commerce).",
    "en": "Late payment penalties: {rate}, due from the day after the due date "
          "(art. L441-10 of the French Commercial Code).",
    "de": "Verzugszinsen: {rate}, fällig ab dem Tag nach dem Fälligkeitsdatum "
          "(Art. L441-10 des französischen Handelsgesetzbuchs).",
}
_RECOVERY_INDEMNITY = {
    "fr": "Indemnité forfaitaire pour frais de recouvrement en cas de retard de paiement : "
          "{amount} EUR (art. D441-5 du Code de commerce).",
    "en": "Fixed recovery indemnity in case of late payment: {amount} EUR "
          "(art. D441-5 of the French Commercial Code).",
    "de": "Pauschale für Beitreibungskosten bei Zahlungsverzug: {amount} EUR "
          "(Art. D441-5 des französischen Handelsgesetzbuchs).",
}


@dataclass(frozen=True)
class Party:
    """BG-4 seller / BG-7 buyer."""

    name: str  # BT-27 / BT-44
    legal_id: str | None  # BT-30 / BT-47 (SIREN, scheme 0002)
    vat_id: str | None  # BT-31 / BT-48
    line1: str  # BT-35 / BT-50
    line2: str | None  # BT-36 / BT-51
    city: str  # BT-37 / BT-52
    postcode: str  # BT-38 / BT-53
    country: str  # BT-40 / BT-55
    endpoint: tuple[str, str] | None  # BT-34 / BT-49: (scheme, id)


@dataclass(frozen=True)
class Line:
    """BG-25 invoice line."""

    line_id: str  # BT-126
    quantity: Decimal  # BT-129
    unit_code: str  # BT-130
    net_amount: Decimal  # BT-131
    item_name: str  # BT-153
    seller_item_id: str  # BT-155
    net_price: Decimal  # BT-146
    vat_category: str  # BT-151
    vat_rate: Decimal  # BT-152


@dataclass(frozen=True)
class VatBreakdown:
    """BG-23 VAT breakdown."""

    taxable_amount: Decimal  # BT-116
    tax_amount: Decimal  # BT-117
    category: str  # BT-118
    rate: Decimal  # BT-119
    exemption_reason: str | None  # BT-120
    exemption_code: str | None  # BT-121 (a VATEX code)


@dataclass(frozen=True)
class DeliveryAddress:
    """BG-15 deliver-to address."""

    line1: str  # BT-75
    city: str  # BT-77
    postcode: str  # BT-78
    country: str  # BT-80


@dataclass(frozen=True)
class Invoice:
    """An invoice or credit note in EN 16931 terms."""

    number: str  # BT-1
    issue_date: date  # BT-2
    type_code: str  # BT-3
    billing_mode: str  # BT-23 (B1 goods, S1 services, M1 both)
    notes: tuple[tuple[str, str], ...]  # BG-1: (BT-21 subject code, BT-22 text)
    vat_on_debits: bool  # BT-8: VAT due at the invoice date (5 in CII, 3 in UBL)
    currency: str  # BT-5
    due_date: date  # BT-9
    buyer_reference: str  # BT-10 (the customer id: Peppol wants BT-10 or BT-13)
    order_reference: str | None  # BT-13
    despatch_reference: str | None  # BT-16 (the first delivery note)
    preceding_invoice: str | None  # BT-25
    preceding_invoice_date: date | None  # BT-26
    payment_terms: str  # BT-20
    seller: Party
    buyer: Party
    delivery_date: date | None  # BT-72
    deliver_to: DeliveryAddress | None  # BG-15
    payment_means_code: str  # BT-81
    iban: str  # BT-84
    bic: str  # BT-86
    lines: tuple[Line, ...]
    vat: tuple[VatBreakdown, ...]
    line_total: Decimal  # BT-106
    tax_exclusive: Decimal  # BT-109
    tax_total: Decimal  # BT-110
    tax_inclusive: Decimal  # BT-112
    payable: Decimal  # BT-115

    @property
    def is_credit_note(self) -> bool:
        """381."""
        return self.type_code == "381"


def domestic_b2b(doc: InvoiceDocument) -> bool:
    """An invoice between two French companies: e-invoicing of the 2026 reform (B2B)."""
    return doc.seller.country == "FR" and doc.buyer.country == "FR" and bool(doc.buyer.siren)


def notes(doc: InvoiceDocument) -> tuple[tuple[str, str], ...]:
    """The legal notes (PMD late-payment penalties, PMT recovery indemnity, AAB early-payment
    discount or its absence) in the document's language, as the PDF prints them; and for
    a domestic B2B invoice, BAR = B2B, the processing the reform expects (BR-FR-20)."""
    seller, lang = doc.seller_legal, doc.language
    return (("PMD", _LATE_PENALTIES[lang].format(rate=seller.late_penalty_rate[lang])),
            ("PMT", _RECOVERY_INDEMNITY[lang].format(amount=seller.recovery_indemnity)),
            ("AAB", seller.early_payment_discount[lang])) + (
        (("BAR", "B2B"),) if domestic_b2b(doc) else ())


def _deliver_to(doc: InvoiceDocument) -> DeliveryAddress | None:
    """BG-15: the delivery address when it is not the buyer's; for an intra-community
    supply (K) always, since its country (BT-80) is required (BR-IC-12)."""
    address: Address | None = doc.ship_to
    if address is None and any(row.category == "K" for row in doc.vat_breakdown):
        b = doc.buyer
        address = Address(b.address_line1, b.postcode, b.city, b.country)
    if address is None:
        return None
    return DeliveryAddress(address.line1, address.city, address.postcode, address.country)


def _exemption(category: str, reason: str | None) -> tuple[str | None, str | None]:
    """(BT-120 text, BT-121 code) of a breakdown row; none for standard-rated VAT."""
    if category == "S":
        return None, None
    if reason and _VATEX.match(reason):
        return None, reason.upper()
    return reason or _DEFAULT_REASONS.get(category, "Exempt"), None


def _buyer_endpoint(doc: InvoiceDocument) -> tuple[str, str] | None:
    """BT-49, required by Peppol and the French rules (BR-FR-12): for a domestic B2B invoice
    the buyer's SIREN as an address of the reform's directory (scheme 0225, BR-FR-21), else
    its Peppol id, GLN or SIREN, else (a buyer abroad) its invoice email (EAS code EM)."""
    if domestic_b2b(doc):
        return "0225", str(doc.buyer.siren)
    if doc.gln:
        return "0088", doc.gln
    if doc.peppol_id and ":" in doc.peppol_id:
        scheme, identifier = doc.peppol_id.split(":", 1)
        return scheme, identifier
    if doc.buyer.siren:
        return "0002", doc.buyer.siren
    if doc.email:
        return "EM", doc.email.split(",")[0].strip()
    return None


def to_en16931(doc: InvoiceDocument) -> Invoice:
    """Map a document (amounts computed by ``money``) to EN 16931 business terms."""
    seller = doc.seller_legal
    buyer_endpoint = _buyer_endpoint(doc)
    return Invoice(
        number=doc.number, issue_date=doc.issue_date,
        type_code=TYPE_CODES[doc.invoice_type], billing_mode=BILLING_MODES[doc.operation],
        notes=notes(doc), vat_on_debits=doc.vat_on_debits, currency=doc.currency,
        due_date=doc.due_date, buyer_reference=doc.customer_id,
        order_reference=doc.po_number,
        despatch_reference=doc.delivery_notes[0] if doc.delivery_notes else None,
        preceding_invoice=doc.credited_invoice_number,
        preceding_invoice_date=doc.credited_issue_date,
        payment_terms=f"{doc.payment_terms_days} days net; late payment penalties: "
                      f"{seller.late_penalty_rate['en']}; recovery indemnity "
                      f"{seller.recovery_indemnity} EUR",
        seller=Party(seller.legal_name, seller.siren, seller.vat_id, seller.address_line1, None,
                     seller.city, seller.postcode, seller.country, ("0002", seller.siren)),
        buyer=Party(doc.buyer.name, doc.buyer.siren, doc.buyer.vat_id, doc.buyer.address_line1,
                    doc.buyer.address_line2, doc.buyer.city, doc.buyer.postcode,
                    doc.buyer.country, buyer_endpoint),
        delivery_date=doc.delivery_date, deliver_to=_deliver_to(doc),
        payment_means_code=PAYMENT_MEANS_SEPA_TRANSFER,
        iban=seller.iban.replace(" ", ""), bic=seller.bic,
        lines=tuple(Line(str(ln.line_no), ln.quantity, ln.unit,
                         ln.net, ln.description, ln.sku, ln.unit_price, ln.vat_category,
                         ln.vat_rate) for ln in doc.lines),
        vat=tuple(VatBreakdown(r.base, r.vat, r.category, r.rate,
                               *_exemption(r.category, r.exemption_reason))
                  for r in doc.vat_breakdown),
        line_total=doc.total_net, tax_exclusive=doc.total_net, tax_total=doc.total_vat,
        tax_inclusive=doc.total_gross, payable=doc.total_gross,
    )
