"""THE mapping from our document model to EN 16931 business terms.

Every format (CII in Factur-X, UBL, EDIFACT, X12) is written from this one
``Invoice`` so they can never disagree; field names carry their BT/BG number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from pipeline.documents import InvoiceDocument

__all__ = ["Party", "Line", "VatBreakdown", "Invoice", "to_en16931", "TYPE_CODES"]

TYPE_CODES = {"invoice": "380", "credit_note": "381"}
PAYMENT_MEANS_SEPA_TRANSFER = "58"


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


@dataclass(frozen=True)
class Invoice:
    """An invoice or credit note in EN 16931 terms."""

    number: str  # BT-1
    issue_date: date  # BT-2
    type_code: str  # BT-3
    currency: str  # BT-5
    due_date: date  # BT-9
    buyer_reference: str  # BT-10 (the customer id: Peppol wants BT-10 or BT-13)
    order_reference: str | None  # BT-13
    despatch_reference: str | None  # BT-16 (the first delivery note)
    preceding_invoice: str | None  # BT-25
    payment_terms: str  # BT-20
    seller: Party
    buyer: Party
    delivery_date: date | None  # BT-72
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


def _peppol_endpoint(peppol_id: str | None, siren: str | None) -> tuple[str, str] | None:
    if peppol_id and ":" in peppol_id:
        scheme, identifier = peppol_id.split(":", 1)
        return scheme, identifier
    return ("0002", siren) if siren else None


def to_en16931(doc: InvoiceDocument) -> Invoice:
    """Map a document (amounts computed by ``money``) to EN 16931 business terms."""
    seller = doc.seller_legal
    buyer_endpoint = (("0088", doc.gln) if doc.gln
                      else _peppol_endpoint(doc.peppol_id, doc.buyer.siren))
    reason = {"E": "Exempt", "Z": "Zero rated", "AE": "Reverse charge", "K": "Intra-community",
              "G": "Export outside the EU", "O": "Not subject to VAT"}
    return Invoice(
        number=doc.number, issue_date=doc.issue_date,
        type_code=TYPE_CODES[doc.invoice_type], currency=doc.currency,
        due_date=doc.due_date, buyer_reference=doc.customer_id,
        order_reference=doc.po_number,
        despatch_reference=doc.delivery_notes[0] if doc.delivery_notes else None,
        preceding_invoice=doc.credited_invoice_number,
        payment_terms=f"{doc.payment_terms_days} days net; late payment penalties: "
                      f"{seller.late_penalty_rate['en']}; recovery indemnity "
                      f"{seller.recovery_indemnity} EUR",
        seller=Party(seller.legal_name, seller.siren, seller.vat_id, seller.address_line1, None,
                     seller.city, seller.postcode, seller.country, ("0002", seller.siren)),
        buyer=Party(doc.buyer.name, doc.buyer.siren, doc.buyer.vat_id, doc.buyer.address_line1,
                    doc.buyer.address_line2, doc.buyer.city, doc.buyer.postcode,
                    doc.buyer.country, buyer_endpoint),
        delivery_date=doc.delivery_date,
        payment_means_code=PAYMENT_MEANS_SEPA_TRANSFER,
        iban=seller.iban.replace(" ", ""), bic=seller.bic,
        lines=tuple(Line(str(ln.line_no), ln.quantity, ln.unit,
                         ln.net, ln.description, ln.sku, ln.unit_price, ln.vat_category,
                         ln.vat_rate) for ln in doc.lines),
        vat=tuple(VatBreakdown(r.base, r.vat, r.category, r.rate,
                               None if r.category == "S" else reason.get(r.category, "Exempt"))
                  for r in doc.vat_breakdown),
        line_total=doc.total_net, tax_exclusive=doc.total_net, tax_total=doc.total_vat,
        tax_inclusive=doc.total_gross, payable=doc.total_gross,
    )
