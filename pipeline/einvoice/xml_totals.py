"""Totals as a receiver reads them from CII and UBL XML.

Plain XPath on the bytes, sharing no code with the writers (``cii``, ``ubl``): a
mapping mistake in a writer cannot be repeated by its reader. Amounts in another
currency (BT-111, the VAT in accounting currency) are left out; a total given
twice, or a VAT breakdown given twice for one category and rate, is an error.
"""

from __future__ import annotations

from decimal import Decimal

from lxml import etree

from pipeline.einvoice.registry import Totals, total_key

__all__ = ["cii_totals", "ubl_totals"]

# The standards' namespaces, written out here too: the writers' modules import this one.
NS = {"rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
      "ram": "urn:un:unece:uncefact:data:standard:"
             "ReusableAggregateBusinessInformationEntity:100"}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
_CII_TOTALS = {"lines": "LineTotalAmount", "net": "TaxBasisTotalAmount",
               "vat": "TaxTotalAmount", "gross": "GrandTotalAmount", "due": "DuePayableAmount"}
_UBL = {"cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
        "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
_UBL_TOTALS = {"lines": "cac:LegalMonetaryTotal/cbc:LineExtensionAmount",
               "net": "cac:LegalMonetaryTotal/cbc:TaxExclusiveAmount",
               "vat": "cac:TaxTotal/cbc:TaxAmount",
               "gross": "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount",
               "due": "cac:LegalMonetaryTotal/cbc:PayableAmount"}


def _put(found: Totals, key: str, text: str | None) -> None:
    if key in found:
        raise ValueError(f"{key} is given twice")
    found[key] = Decimal(text) if text else Decimal("NaN")


def _root(xml: bytes, number_path: str, ns: dict[str, str]) -> tuple[etree._Element, str]:
    root = etree.fromstring(xml, _PARSER)
    number = root.findtext(number_path, namespaces=ns)
    if not number:
        raise ValueError(f"no invoice number ({number_path}) in {etree.QName(root).localname}")
    return root, number


def cii_totals(xml: bytes) -> dict[str, Totals]:
    """Per invoice number (BT-1), the totals a receiver reads from CII XML."""
    root, number = _root(xml, "rsm:ExchangedDocument/ram:ID", NS)
    found: Totals = {}
    settlement = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
    currency = root.findtext(f"{settlement}/ram:InvoiceCurrencyCode", namespaces=NS)
    for name, tag in _CII_TOTALS.items():
        path = f"{settlement}/ram:SpecifiedTradeSettlementHeaderMonetarySummation/ram:{tag}"
        for node in root.iterfind(path, NS):
            if node.get("currencyID", currency) == currency:
                _put(found, name, node.text)
    for tax in root.iterfind(f"{settlement}/ram:ApplicableTradeTax", NS):
        rate = Decimal(tax.findtext("ram:RateApplicablePercent", "NaN", NS))
        category = tax.findtext("ram:CategoryCode", namespaces=NS)
        _put(found, total_key("vat", rate, category),
             tax.findtext("ram:CalculatedAmount", namespaces=NS))
        _put(found, total_key("base", rate, category),
             tax.findtext("ram:BasisAmount", namespaces=NS))
    return {number: found}


def ubl_totals(xml: bytes) -> dict[str, Totals]:
    """Per invoice number (BT-1), the totals a receiver reads from UBL XML (an invoice or a
    credit note)."""
    root, number = _root(xml, "cbc:ID", _UBL)
    found: Totals = {}
    currency = root.findtext("cbc:DocumentCurrencyCode", namespaces=_UBL)
    for name, path in _UBL_TOTALS.items():
        for node in root.iterfind(path, _UBL):
            if node.get("currencyID", currency) == currency:
                _put(found, name, node.text)
    for sub in root.iterfind("cac:TaxTotal/cac:TaxSubtotal", _UBL):
        rate = Decimal(sub.findtext("cac:TaxCategory/cbc:Percent", "NaN", _UBL))
        category = sub.findtext("cac:TaxCategory/cbc:ID", namespaces=_UBL)
        _put(found, total_key("vat", rate, category), sub.findtext("cbc:TaxAmount",
                                                                    namespaces=_UBL))
        _put(found, total_key("base", rate, category), sub.findtext("cbc:TaxableAmount",
                                                                     namespaces=_UBL))
    return {number: found}
