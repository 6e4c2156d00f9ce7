"""UN/CEFACT Cross Industry Invoice (D16B), Factur-X profile EN 16931, from ``en16931``."""

from __future__ import annotations

from datetime import date

from lxml import etree

from pipeline.codes import amount, number
from pipeline.einvoice.en16931 import Invoice, Party

__all__ = ["to_cii", "NS", "GUIDELINE", "VAT_ON_DEBITS"]

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
}
GUIDELINE = "urn:cen.eu:en16931:2017"
VAT_ON_DEBITS = "5"  # BT-8 in CII: VAT due at the invoice date (XP Z12-012 BR-FR-MAP-03)


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str
        ) -> etree._Element:
    prefix, name = tag.split(":")
    element = etree.SubElement(parent, f"{{{NS[prefix]}}}{name}", attrs)
    if text is not None:
        element.text = text
    return element


def _date(parent: etree._Element, tag: str, value: date) -> None:
    _el(_el(parent, tag), "udt:DateTimeString", value.strftime("%Y%m%d"), format="102")


def _party(parent: etree._Element, tag: str, party: Party) -> None:
    node = _el(parent, tag)
    _el(node, "ram:Name", party.name)
    if party.legal_id:
        _el(_el(node, "ram:SpecifiedLegalOrganization"), "ram:ID", party.legal_id,
            schemeID="0002")
    address = _el(node, "ram:PostalTradeAddress")
    _el(address, "ram:PostcodeCode", party.postcode)
    _el(address, "ram:LineOne", party.line1)
    if party.line2:
        _el(address, "ram:LineTwo", party.line2)
    _el(address, "ram:CityName", party.city)
    _el(address, "ram:CountryID", party.country)
    if party.endpoint:
        _el(_el(node, "ram:URIUniversalCommunication"), "ram:URIID", party.endpoint[1],
            schemeID=party.endpoint[0])
    if party.vat_id:
        _el(_el(node, "ram:SpecifiedTaxRegistration"), "ram:ID", party.vat_id, schemeID="VA")


def to_cii(inv: Invoice) -> bytes:
    """The CII XML (UTF-8 bytes) of one invoice or credit note."""
    root = etree.Element(f"{{{NS['rsm']}}}CrossIndustryInvoice", nsmap=NS)
    context = _el(root, "rsm:ExchangedDocumentContext")
    _el(_el(context, "ram:BusinessProcessSpecifiedDocumentContextParameter"), "ram:ID",
        inv.billing_mode)
    _el(_el(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID", GUIDELINE)
    header = _el(root, "rsm:ExchangedDocument")
    _el(header, "ram:ID", inv.number)
    _el(header, "ram:TypeCode", inv.type_code)
    _date(header, "ram:IssueDateTime", inv.issue_date)
    for subject, text in inv.notes:
        note = _el(header, "ram:IncludedNote")
        _el(note, "ram:Content", text)
        _el(note, "ram:SubjectCode", subject)

    transaction = _el(root, "rsm:SupplyChainTradeTransaction")
    for line in inv.lines:
        item = _el(transaction, "ram:IncludedSupplyChainTradeLineItem")
        _el(_el(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", line.line_id)
        product = _el(item, "ram:SpecifiedTradeProduct")
        _el(product, "ram:SellerAssignedID", line.seller_item_id)
        _el(product, "ram:Name", line.item_name)
        agreement = _el(item, "ram:SpecifiedLineTradeAgreement")
        _el(_el(agreement, "ram:NetPriceProductTradePrice"), "ram:ChargeAmount",
            number(line.net_price))
        _el(_el(item, "ram:SpecifiedLineTradeDelivery"), "ram:BilledQuantity",
            number(line.quantity), unitCode=line.unit_code)
        settlement = _el(item, "ram:SpecifiedLineTradeSettlement")
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _el(tax, "ram:TypeCode", "VAT")
        _el(tax, "ram:CategoryCode", line.vat_category)
        _el(tax, "ram:RateApplicablePercent", number(line.vat_rate))
        _el(_el(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation"),
            "ram:LineTotalAmount", amount(line.net_amount))

    agreement = _el(transaction, "ram:ApplicableHeaderTradeAgreement")
    _el(agreement, "ram:BuyerReference", inv.buyer_reference)
    _party(agreement, "ram:SellerTradeParty", inv.seller)
    _party(agreement, "ram:BuyerTradeParty", inv.buyer)
    if inv.order_reference:
        _el(_el(agreement, "ram:BuyerOrderReferencedDocument"), "ram:IssuerAssignedID",
            inv.order_reference)

    delivery = _el(transaction, "ram:ApplicableHeaderTradeDelivery")
    if inv.deliver_to:
        place = _el(_el(delivery, "ram:ShipToTradeParty"), "ram:PostalTradeAddress")
        _el(place, "ram:PostcodeCode", inv.deliver_to.postcode)
        _el(place, "ram:LineOne", inv.deliver_to.line1)
        _el(place, "ram:CityName", inv.deliver_to.city)
        _el(place, "ram:CountryID", inv.deliver_to.country)
    if inv.delivery_date:
        _date(_el(delivery, "ram:ActualDeliverySupplyChainEvent"), "ram:OccurrenceDateTime",
              inv.delivery_date)
    if inv.despatch_reference:
        _el(_el(delivery, "ram:DespatchAdviceReferencedDocument"), "ram:IssuerAssignedID",
            inv.despatch_reference)

    settlement = _el(transaction, "ram:ApplicableHeaderTradeSettlement")
    _el(settlement, "ram:InvoiceCurrencyCode", inv.currency)
    means = _el(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
    _el(means, "ram:TypeCode", inv.payment_means_code)
    _el(_el(means, "ram:PayeePartyCreditorFinancialAccount"), "ram:IBANID", inv.iban)
    for vat in inv.vat:
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _el(tax, "ram:CalculatedAmount", amount(vat.tax_amount))
        _el(tax, "ram:TypeCode", "VAT")
        if vat.exemption_reason:
            _el(tax, "ram:ExemptionReason", vat.exemption_reason)
        _el(tax, "ram:BasisAmount", amount(vat.taxable_amount))
        _el(tax, "ram:CategoryCode", vat.category)
        if vat.exemption_code:
            _el(tax, "ram:ExemptionReasonCode", vat.exemption_code)
        if inv.vat_on_debits:
            _el(tax, "ram:DueDateTypeCode", VAT_ON_DEBITS)
        _el(tax, "ram:RateApplicablePercent", number(vat.rate))
    terms = _el(settlement, "ram:SpecifiedTradePaymentTerms")
    _el(terms, "ram:Description", inv.payment_terms)
    _date(terms, "ram:DueDateDateTime", inv.due_date)
    totals = _el(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    _el(totals, "ram:LineTotalAmount", amount(inv.line_total))
    _el(totals, "ram:TaxBasisTotalAmount", amount(inv.tax_exclusive))
    _el(totals, "ram:TaxTotalAmount", amount(inv.tax_total), currencyID=inv.currency)
    _el(totals, "ram:GrandTotalAmount", amount(inv.tax_inclusive))
    _el(totals, "ram:DuePayableAmount", amount(inv.payable))
    if inv.preceding_invoice:
        reference = _el(settlement, "ram:InvoiceReferencedDocument")
        _el(reference, "ram:IssuerAssignedID", inv.preceding_invoice)
        if inv.preceding_invoice_date:
            _el(_el(reference, "ram:FormattedIssueDateTime"), "qdt:DateTimeString",
                inv.preceding_invoice_date.strftime("%Y%m%d"), format="102")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
