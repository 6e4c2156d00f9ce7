"""UBL 2.1 invoice and credit note from ``en16931``, in one of two profiles.

A domestic French invoice follows the French 2026 rules (XP Z12-012, BR-FR): plain
EN 16931 customization, the billing mode (BT-23, B1/S1/M1) as ``ProfileID``, the legal
notes as ``#PMD#...``. Any other follows Peppol BIS Billing 3.0, whose ``ProfileID`` is
Peppol's business process and which allows one note only: the two profiles cannot be
one document, since each requires its own ``ProfileID``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from pipeline.codes import amount, number
from pipeline.einvoice.en16931 import Invoice, Party
from pipeline.einvoice.registry import BuildContext, EInvoiceFormat, one, register
from pipeline.einvoice.xml_totals import ubl_totals

__all__ = ["to_ubl", "CUSTOMIZATION", "PROFILE", "is_french", "VAT_ON_DEBITS"]

CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
FRENCH_CUSTOMIZATION = "urn:cen.eu:en16931:2017"
VAT_ON_DEBITS = "3"  # BT-8 in UBL: VAT due at the invoice date (XP Z12-012 BR-FR-MAP-03)
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
ROOTS = {"380": ("Invoice", "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"),
         "381": ("CreditNote", "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2")}


class _Builder:
    def __init__(self, currency: str) -> None:
        self.currency = currency

    def cbc(self, parent: etree._Element, name: str, text: str, **attrs: str) -> etree._Element:
        element = etree.SubElement(parent, f"{{{CBC}}}{name}", attrs)
        element.text = text
        return element

    def cac(self, parent: etree._Element, name: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{CAC}}}{name}")

    def money(self, parent: etree._Element, name: str, value: object) -> None:
        self.cbc(parent, name, amount(value), currencyID=self.currency)  # type: ignore[arg-type]

    def tax_category(self, parent: etree._Element, name: str, category: str, rate: object,
                     reason: str | None = None, code: str | None = None) -> None:
        node = self.cac(parent, name)
        self.cbc(node, "ID", category)
        self.cbc(node, "Percent", number(rate))  # type: ignore[arg-type]
        if code:
            self.cbc(node, "TaxExemptionReasonCode", code)
        if reason:
            self.cbc(node, "TaxExemptionReason", reason)
        self.cbc(self.cac(node, "TaxScheme"), "ID", "VAT")

    def party(self, parent: etree._Element, role: str, party: Party) -> None:
        node = self.cac(self.cac(parent, role), "Party")
        if party.endpoint:
            self.cbc(node, "EndpointID", party.endpoint[1], schemeID=party.endpoint[0])
        self.cbc(self.cac(node, "PartyName"), "Name", party.name)
        address = self.cac(node, "PostalAddress")
        self.cbc(address, "StreetName", party.line1)
        if party.line2:
            self.cbc(address, "AdditionalStreetName", party.line2)
        self.cbc(address, "CityName", party.city)
        self.cbc(address, "PostalZone", party.postcode)
        self.cbc(self.cac(address, "Country"), "IdentificationCode", party.country)
        if party.vat_id:
            scheme = self.cac(node, "PartyTaxScheme")
            self.cbc(scheme, "CompanyID", party.vat_id)
            self.cbc(self.cac(scheme, "TaxScheme"), "ID", "VAT")
        legal = self.cac(node, "PartyLegalEntity")
        self.cbc(legal, "RegistrationName", party.name)
        if party.legal_id:
            self.cbc(legal, "CompanyID", party.legal_id, schemeID="0002")


def is_french(inv: Invoice) -> bool:
    """A domestic French invoice: the French rules apply, in the French profile."""
    return inv.seller.country == "FR" and inv.buyer.country == "FR"


def to_ubl(inv: Invoice) -> bytes:
    """The UBL XML (UTF-8 bytes) of an invoice (380) or credit note (381): the French
    profile for a domestic French invoice, else Peppol BIS 3."""
    root_name, namespace = ROOTS[inv.type_code]
    credit = inv.is_credit_note
    french = is_french(inv)
    b = _Builder(inv.currency)
    root = etree.Element(f"{{{namespace}}}{root_name}",
                         nsmap={None: namespace, "cac": CAC, "cbc": CBC})
    b.cbc(root, "CustomizationID", FRENCH_CUSTOMIZATION if french else CUSTOMIZATION)
    b.cbc(root, "ProfileID", inv.billing_mode if french else PROFILE)
    b.cbc(root, "ID", inv.number)
    b.cbc(root, "IssueDate", inv.issue_date.isoformat())
    if not credit:
        b.cbc(root, "DueDate", inv.due_date.isoformat())
    b.cbc(root, "CreditNoteTypeCode" if credit else "InvoiceTypeCode", inv.type_code)
    if french:
        for subject, text in inv.notes:
            b.cbc(root, "Note", f"#{subject}#{text}")
    b.cbc(root, "DocumentCurrencyCode", inv.currency)
    b.cbc(root, "BuyerReference", inv.buyer_reference)
    if inv.vat_on_debits:
        b.cbc(b.cac(root, "InvoicePeriod"), "DescriptionCode", VAT_ON_DEBITS)
    if inv.order_reference:
        b.cbc(b.cac(root, "OrderReference"), "ID", inv.order_reference)
    if inv.preceding_invoice:
        reference = b.cac(b.cac(root, "BillingReference"), "InvoiceDocumentReference")
        b.cbc(reference, "ID", inv.preceding_invoice)
        if inv.preceding_invoice_date:
            b.cbc(reference, "IssueDate", inv.preceding_invoice_date.isoformat())
    if inv.despatch_reference:
        b.cbc(b.cac(root, "DespatchDocumentReference"), "ID", inv.despatch_reference)
    b.party(root, "AccountingSupplierParty", inv.seller)
    b.party(root, "AccountingCustomerParty", inv.buyer)
    if inv.delivery_date or inv.deliver_to:
        delivery = b.cac(root, "Delivery")
        if inv.delivery_date:
            b.cbc(delivery, "ActualDeliveryDate", inv.delivery_date.isoformat())
        if inv.deliver_to:
            address = b.cac(b.cac(delivery, "DeliveryLocation"), "Address")
            b.cbc(address, "StreetName", inv.deliver_to.line1)
            b.cbc(address, "CityName", inv.deliver_to.city)
            b.cbc(address, "PostalZone", inv.deliver_to.postcode)
            b.cbc(b.cac(address, "Country"), "IdentificationCode", inv.deliver_to.country)
    means = b.cac(root, "PaymentMeans")
    b.cbc(means, "PaymentMeansCode", inv.payment_means_code)
    if credit:
        b.cbc(means, "PaymentDueDate", inv.due_date.isoformat())
    b.cbc(means, "PaymentID", inv.number)
    account = b.cac(means, "PayeeFinancialAccount")
    b.cbc(account, "ID", inv.iban)
    b.cbc(b.cac(account, "FinancialInstitutionBranch"), "ID", inv.bic)
    b.cbc(b.cac(root, "PaymentTerms"), "Note", inv.payment_terms)

    tax_total = b.cac(root, "TaxTotal")
    b.money(tax_total, "TaxAmount", inv.tax_total)
    for vat in inv.vat:
        subtotal = b.cac(tax_total, "TaxSubtotal")
        b.money(subtotal, "TaxableAmount", vat.taxable_amount)
        b.money(subtotal, "TaxAmount", vat.tax_amount)
        b.tax_category(subtotal, "TaxCategory", vat.category, vat.rate, vat.exemption_reason,
                       vat.exemption_code)
    totals = b.cac(root, "LegalMonetaryTotal")
    b.money(totals, "LineExtensionAmount", inv.line_total)
    b.money(totals, "TaxExclusiveAmount", inv.tax_exclusive)
    b.money(totals, "TaxInclusiveAmount", inv.tax_inclusive)
    b.money(totals, "PayableAmount", inv.payable)

    for line in inv.lines:
        node = b.cac(root, "CreditNoteLine" if credit else "InvoiceLine")
        b.cbc(node, "ID", line.line_id)
        b.cbc(node, "CreditedQuantity" if credit else "InvoicedQuantity", number(line.quantity),
              unitCode=line.unit_code)
        b.money(node, "LineExtensionAmount", line.net_amount)
        item = b.cac(node, "Item")
        b.cbc(item, "Name", line.item_name)
        b.cbc(b.cac(item, "SellersItemIdentification"), "ID", line.seller_item_id)
        b.tax_category(item, "ClassifiedTaxCategory", line.vat_category, line.vat_rate)
        b.cbc(b.cac(node, "Price"), "PriceAmount", number(line.net_price),
              currencyID=inv.currency)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build(invoices: Sequence[Invoice], context: BuildContext) -> bytes:
    """The UBL XML of one invoice or credit note."""
    return to_ubl(one(invoices))


FORMAT = register(EInvoiceFormat(
    name="ubl", title="UBL", grouping="invoice", media_type="application/xml",
    suffix=".ubl.xml", build=build, read_totals=ubl_totals))
