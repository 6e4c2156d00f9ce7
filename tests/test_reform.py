"""The French 2026 e-invoicing reform, end to end on a small generated extract.

The PDF prints the category of the operation, the VAT-on-debits option, the delivery
address, the exemption reasons and the corrected invoice's date (pdftotext, fr/en/de);
CII and UBL carry the same facts (BT-23, BT-8, BG-15, BT-25/26, BT-120/121) and the
official BR-FR, EN 16931 and Peppol schematrons accept them, or catch them removed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import polars as pl
import pytest
from lxml import etree

from pipeline.documents import InvoiceDocument, build_documents
from pipeline.einvoice.cii import NS, to_cii
from pipeline.einvoice.en16931 import BILLING_MODES, to_en16931
from pipeline.einvoice.ubl import CAC, CBC, FRENCH_CUSTOMIZATION, PROFILE, is_french, to_ubl
from pipeline.ingest import ExtractBundle, load_extract
from pipeline.render.engine import WeasyPrintEngine
from pipeline.sample import generate_extract
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.validate import validate
from tests.standards import schematron_failures, xsd_errors
from tests.test_render import pdf_text, squash

LANGS = ("fr", "en", "de")
CATEGORY = {"fr": "Catégorie de l'opération : ", "en": "Category of the operation: ",
            "de": "Art des Umsatzes: "}
OPERATION = {
    "goods": {"fr": "Livraison de biens", "en": "Supply of goods", "de": "Lieferung von Waren"},
    "services": {"fr": "Prestation de services", "en": "Supply of services",
                 "de": "Erbringung von Dienstleistungen"},
    "mixed": {"fr": "Les deux : livraison de biens et prestation de services",
              "en": "Both: supply of goods and supply of services",
              "de": "Beides: Lieferung von Waren und Erbringung von Dienstleistungen"},
}
DEBITS = {"fr": "Option pour le paiement de la taxe d'après les débits",
          "en": "Option to pay VAT on debits",
          "de": "Option zur Entrichtung der Steuer nach vereinbarten Entgelten "
                "(Soll-Versteuerung)"}
DELIVERY = {"fr": "Adresse de livraison", "en": "Delivery address", "de": "Lieferadresse"}
VATEX = {
    ("VATEX-EU-IC", "fr"):
        "Exonération de TVA, article 262 ter I du CGI (livraison intracommunautaire)",
    ("VATEX-EU-IC", "de"): "Steuerfreie innergemeinschaftliche Lieferung "
                           "(Art. 262 ter I des französischen Steuergesetzbuchs)",
    ("VATEX-EU-G", "en"):
        "Export outside the EU, exempt from VAT (art. 262 I of the French Tax Code)",
}
UBL_NS = {"cac": CAC, "cbc": CBC}
HEADER_TAX = "//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax"


# --- the extract and the documents picked from it by what they are -------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ExtractBundle:
    out = tmp_path_factory.mktemp("reform") / "extract"
    generate_extract(out, 120, seed=5)
    return load_extract(out)


@pytest.fixture(scope="module")
def docs(bundle: ExtractBundle) -> list[InvoiceDocument]:
    settings = Settings()
    accepted = validate(bundle, settings.seller, settings.validation).accepted
    return build_documents(bundle, sorted(accepted["invoice_number"]), settings.seller)


def pick(docs: list[InvoiceDocument], what: str, test) -> InvoiceDocument:  # type: ignore[no-untyped-def]
    found = next((d for d in docs if test(d)), None)
    if found is None:
        pytest.fail(f"the generated extract has no {what}: change its seed or size")
    return found


def categories(doc: InvoiceDocument) -> set[str]:
    return {row.category for row in doc.vat_breakdown}


def domestic(doc: InvoiceDocument) -> bool:
    return doc.buyer.country == "FR"


def with_debits(doc: InvoiceDocument) -> InvoiceDocument:
    """The document as if its seller had opted to pay VAT on debits."""
    return replace(doc, seller_legal=doc.seller_legal.model_copy(update={"vat_on_debits": True}))


def text_reasons(doc: InvoiceDocument) -> list[tuple[str, str]]:
    """(category, reason) of every E/AE line whose reason is a text, not a VATEX code."""
    return [(ln.vat_category, ln.vat_exemption_reason) for ln in doc.lines
            if ln.vat_category in ("E", "AE") and ln.vat_exemption_reason
            and not ln.vat_exemption_reason.upper().startswith("VATEX")]


@pytest.fixture(scope="module")
def picked(docs: list[InvoiceDocument]) -> dict[str, InvoiceDocument]:
    invoices = [d for d in docs if not d.is_credit_note]
    numbers = {d.number for d in docs}
    return {
        # a domestic services invoice with an exempt or reverse-charged line (reason in words),
        # delivered at the buyer's address, seller without the VAT-on-debits option
        "services": pick(invoices, "domestic services invoice with an E/AE reason text",
                         lambda d: d.operation == "services" and domestic(d)
                         and d.ship_to is None and text_reasons(d)),
        # a domestic mixed invoice delivered to another site, seller with the option
        "mixed": with_debits(pick(invoices, "domestic mixed invoice with a delivery site",
                                  lambda d: d.operation == "mixed" and domestic(d)
                                  and d.ship_to is not None)),
        # goods delivered to another EU member state (K), seller with the option
        "goods_k": with_debits(pick(invoices, "intra-community goods invoice",
                                    lambda d: d.operation == "goods" and "K" in categories(d)
                                    and d.ship_to is None)),
        "goods_fr": with_debits(pick(invoices, "domestic goods invoice",
                                     lambda d: d.operation == "goods" and domestic(d)
                                     and d.ship_to is None and categories(d) == {"S"})),
        "export": pick(invoices, "export invoice (G)", lambda d: "G" in categories(d)),
        "credit_note": pick(docs, "domestic credit note of an invoice in the extract",
                            lambda d: d.is_credit_note and domestic(d)
                            and d.credited_invoice_number in numbers),
    }


@pytest.fixture(scope="module")
def texts(picked, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """pdftotext of ten renders: services and mixed in fr/en/de, goods (K) in fr and de,
    export in en, a credit note in fr."""
    engine = WeasyPrintEngine(PROJECT_ROOT / "templates")
    tmp = tmp_path_factory.mktemp("reform-pdf")
    wanted = [*(("services", lang) for lang in LANGS), *(("mixed", lang) for lang in LANGS),
              ("goods_k", "fr"), ("goods_k", "de"), ("export", "en"), ("credit_note", "fr")]
    return {(name, lang): squash(pdf_text(engine.render(replace(picked[name], language=lang)),
                                          tmp))
            for name, lang in wanted}


def cii(doc: InvoiceDocument) -> etree._Element:
    return etree.fromstring(to_cii(to_en16931(doc)))


def ubl(doc: InvoiceDocument) -> etree._Element:
    return etree.fromstring(to_ubl(to_en16931(doc)))


def fatal(layers: tuple[str, ...], xml: bytes) -> list[tuple[str, str]]:
    return [failure for layer in layers for failure in schematron_failures(layer, xml)]


# --- 1. the PDF mentions --------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_services_invoice_prints_its_category_and_no_option_by_default(texts, lang) -> None:
    text = texts["services", lang]
    assert f"{CATEGORY[lang]}{OPERATION['services'][lang]}" in text
    assert DEBITS[lang] not in text  # the seller has not opted
    assert DELIVERY[lang] not in text  # delivered at the buyer's address


@pytest.mark.parametrize("lang", LANGS)
def test_mixed_invoice_with_vat_on_debits_prints_category_option_and_delivery_address(
        texts, picked, lang) -> None:
    text, site = texts["mixed", lang], picked["mixed"].ship_to
    assert f"{CATEGORY[lang]}{OPERATION['mixed'][lang]} · {DEBITS[lang]}" in text
    assert f"{DELIVERY[lang]} {site.line1}, {site.postcode} {site.city}" in text


@pytest.mark.parametrize("lang", ["fr", "de"])
def test_goods_invoice_never_prints_the_vat_on_debits_option(texts, picked, lang) -> None:
    assert picked["goods_k"].seller_legal.vat_on_debits and not picked["goods_k"].vat_on_debits
    text = texts["goods_k", lang]
    assert f"{CATEGORY[lang]}{OPERATION['goods'][lang]}" in text
    assert DEBITS[lang] not in text
    assert DELIVERY[lang] not in text  # BG-15 of a K supply is in the XML only


def test_credit_note_prints_the_corrected_invoice_and_its_date(texts, picked, docs) -> None:
    note = picked["credit_note"]
    original = next(d for d in docs if d.number == note.credited_invoice_number)
    assert note.credited_issue_date == original.issue_date
    assert (f"Facture d'origine {original.number} du {original.issue_date:%d/%m/%Y}"
            in texts["credit_note", "fr"])


# --- 2. exemption reasons: PDF, CII BT-120/121, UBL ------------------------------------------

def test_exemption_reason_text_reaches_the_pdf_and_both_xmls(texts, picked) -> None:
    doc = picked["services"]
    cii_root, ubl_root = cii(doc), ubl(doc)
    for category, reason in text_reasons(doc):
        assert squash(reason) in texts["services", "fr"]
        cii_reasons = cii_root.xpath(f"{HEADER_TAX}[ram:CategoryCode='{category}']"
                                     "/ram:ExemptionReason/text()", namespaces=NS)
        assert len(cii_reasons) == 1 and reason in cii_reasons[0].split("; ")
        ubl_reasons = ubl_root.xpath(f"//cac:TaxSubtotal/cac:TaxCategory[cbc:ID='{category}']"
                                     "/cbc:TaxExemptionReason/text()", namespaces=UBL_NS)
        assert len(ubl_reasons) == 1 and reason in ubl_reasons[0].split("; ")


@pytest.mark.parametrize(("name", "category", "code", "langs"), [
    ("goods_k", "K", "VATEX-EU-IC", ("fr", "de")), ("export", "G", "VATEX-EU-G", ("en",))])
def test_vatex_code_is_a_code_in_the_xmls_and_spelled_out_in_the_pdf(
        texts, picked, name, category, code, langs) -> None:
    doc = picked[name]
    cii_tax = cii(doc).xpath(f"{HEADER_TAX}[ram:CategoryCode='{category}']", namespaces=NS)
    assert [t.findtext("ram:ExemptionReasonCode", namespaces=NS) for t in cii_tax] == [code]
    assert cii_tax[0].find("ram:ExemptionReason", NS) is None
    ubl_codes = ubl(doc).xpath(f"//cac:TaxSubtotal/cac:TaxCategory[cbc:ID='{category}']"
                               "/cbc:TaxExemptionReasonCode/text()", namespaces=UBL_NS)
    assert ubl_codes == [code]
    for lang in langs:
        assert VATEX[code, lang] in texts[name, lang]
        assert code not in texts[name, lang]  # spelled out, never the bare code


# --- 3. XML content ---------------------------------------------------------------------------

@pytest.mark.parametrize("operation", ["goods", "services", "mixed"])
def test_billing_mode_bt23_follows_the_lines_nature(docs, operation) -> None:
    doc = pick(docs, f"domestic {operation} invoice",
               lambda d: not d.is_credit_note and domestic(d) and d.operation == operation)
    mode = {"goods": "B1", "services": "S1", "mixed": "M1"}[operation]
    assert BILLING_MODES[operation] == mode
    assert cii(doc).xpath("//ram:BusinessProcessSpecifiedDocumentContextParameter/ram:ID/text()",
                          namespaces=NS) == [mode]
    root = ubl(doc)
    assert root.findtext("cbc:CustomizationID", namespaces=UBL_NS) == FRENCH_CUSTOMIZATION
    assert root.findtext("cbc:ProfileID", namespaces=UBL_NS) == mode


def test_vat_on_debits_bt8_only_when_opted_and_not_goods(picked) -> None:
    doc = picked["mixed"]
    codes = cii(doc).xpath(f"{HEADER_TAX}/ram:DueDateTypeCode/text()", namespaces=NS)
    assert codes == ["5"] * len(doc.vat_breakdown)
    assert ubl(doc).xpath("/*/cac:InvoicePeriod/cbc:DescriptionCode/text()",
                          namespaces=UBL_NS) == ["3"]
    # goods with the option set, and services without it: no BT-8
    for other in (picked["goods_fr"], picked["goods_k"], picked["services"]):
        assert cii(other).xpath("//ram:DueDateTypeCode", namespaces=NS) == []
        assert ubl(other).xpath("//cac:InvoicePeriod", namespaces=UBL_NS) == []


def test_delivery_address_bg15(picked) -> None:
    doc = picked["mixed"]
    site = doc.ship_to
    place = cii(doc).xpath("//ram:ShipToTradeParty/ram:PostalTradeAddress", namespaces=NS)
    assert [tuple(p.findtext(f"ram:{f}", namespaces=NS)
                  for f in ("LineOne", "PostcodeCode", "CityName", "CountryID"))
            for p in place] == [(site.line1, site.postcode, site.city, site.country)]
    address = ubl(doc).xpath("//cac:Delivery/cac:DeliveryLocation/cac:Address",
                             namespaces=UBL_NS)
    assert [(a.findtext("cbc:StreetName", namespaces=UBL_NS),
             a.findtext("cbc:PostalZone", namespaces=UBL_NS),
             a.findtext("cbc:CityName", namespaces=UBL_NS),
             a.findtext("cac:Country/cbc:IdentificationCode", namespaces=UBL_NS))
            for a in address] == [(site.line1, site.postcode, site.city, site.country)]
    # delivered at the buyer's address: no BG-15 ...
    plain = picked["goods_fr"]
    assert cii(plain).xpath("//ram:ShipToTradeParty", namespaces=NS) == []
    assert ubl(plain).xpath("//cac:DeliveryLocation", namespaces=UBL_NS) == []
    # ... except for an intra-community supply, whose country BT-80 is required (BR-IC-12)
    k = picked["goods_k"]
    assert cii(k).xpath("//ram:ShipToTradeParty//ram:CountryID/text()",
                        namespaces=NS) == [k.buyer.country]
    assert ubl(k).xpath("//cac:DeliveryLocation//cbc:IdentificationCode/text()",
                        namespaces=UBL_NS) == [k.buyer.country]


def test_credit_note_bt25_bt26_name_the_credited_invoice_and_its_date(picked, docs) -> None:
    note = picked["credit_note"]
    original = next(d for d in docs if d.number == note.credited_invoice_number)
    ref = cii(note).xpath("//ram:ApplicableHeaderTradeSettlement/ram:InvoiceReferencedDocument",
                          namespaces=NS)
    assert [(r.findtext("ram:IssuerAssignedID", namespaces=NS),
             r.findtext("ram:FormattedIssueDateTime/qdt:DateTimeString", namespaces=NS))
            for r in ref] == [(original.number, f"{original.issue_date:%Y%m%d}")]
    ref = ubl(note).xpath("//cac:BillingReference/cac:InvoiceDocumentReference",
                          namespaces=UBL_NS)
    assert [(r.findtext("cbc:ID", namespaces=UBL_NS),
             r.findtext("cbc:IssueDate", namespaces=UBL_NS)) for r in ref] == [
        (original.number, original.issue_date.isoformat())]


def test_reform_documents_pass_xsd_en16931_and_french_rules(picked) -> None:
    for name in ("services", "mixed", "goods_fr", "credit_note"):
        doc = picked[name]
        cii_xml, ubl_xml = to_cii(to_en16931(doc)), to_ubl(to_en16931(doc))
        assert xsd_errors("cii", cii_xml) == [], name
        assert xsd_errors("ubl-creditnote" if doc.is_credit_note else "ubl-invoice",
                          ubl_xml) == [], name
        assert fatal(("cii", "br-fr-cii"), cii_xml) == [], name
        assert fatal(("ubl", "br-fr-ubl"), ubl_xml) == [], name


# --- 4. a credit note of an invoice billed by an earlier run ----------------------------------

def test_credit_note_of_an_earlier_run_takes_bt26_from_earlier_issue_dates(
        bundle, picked) -> None:
    note = picked["credit_note"]
    credited = note.credited_invoice_number
    without = replace(bundle, invoices=bundle.invoices.filter(
        pl.col("invoice_number") != credited))
    earlier = note.issue_date - timedelta(days=75)  # not the extract's date: it came from here
    seller = Settings().seller

    [dated] = build_documents(without, [note.number], seller,
                              earlier_issue_dates={credited: earlier})
    assert dated.credited_invoice_number == credited and dated.credited_issue_date == earlier
    xml = to_cii(to_en16931(dated))
    assert etree.fromstring(xml).xpath("//ram:InvoiceReferencedDocument/ram:FormattedIssueDateTime"
                                       "/qdt:DateTimeString/text()", namespaces=NS) == [
        f"{earlier:%Y%m%d}"]
    assert schematron_failures("br-fr-cii", xml) == []

    [undated] = build_documents(without, [note.number], seller)
    assert undated.credited_issue_date is None
    rules = {rule for rule, _ in schematron_failures("br-fr-cii", to_cii(to_en16931(undated)))}
    assert "BR-FR-CO-05_BT-3" in rules


# --- 5. the BR-FR layers are live ----------------------------------------------------------------

def test_br_fr_rules_catch_missing_notes_and_an_unknown_billing_mode(picked) -> None:
    inv = to_en16931(picked["goods_fr"])
    assert {code for code, _ in inv.notes} == {"PMD", "PMT", "AAB", "BAR"}

    def br_fr(invoice) -> tuple[set[str], set[str]]:  # type: ignore[no-untyped-def]
        return ({r for r, _ in schematron_failures("br-fr-cii", to_cii(invoice))},
                {r for r, _ in schematron_failures("br-fr-ubl", to_ubl(invoice))})

    assert br_fr(inv) == (set(), set())
    cii_rules, ubl_rules = br_fr(replace(inv, notes=()))
    assert {"BR-FR-05_BT-22_PMD", "BR-FR-05_BT-22_PMT", "BR-FR-05_BT-22_AAB"} <= cii_rules
    assert len({r for r in ubl_rules if r.startswith("BR-FR-05")}) == 3, ubl_rules
    cii_rules, ubl_rules = br_fr(replace(inv, billing_mode="X9"))
    assert "BR-FR-08_BT-23" in cii_rules and "BR-FR-08_BT-23" in ubl_rules
    # a B2B invoice (note BAR) must address the buyer by its SIREN, scheme 0225 (BR-FR-21)
    by_gln = replace(inv, buyer=replace(inv.buyer, endpoint=("0088", "3012345000017")))
    cii_rules, ubl_rules = br_fr(by_gln)
    assert any(r.startswith("BR-FR-21") for r in cii_rules), cii_rules
    assert any(r.startswith("BR-FR-21") for r in ubl_rules), ubl_rules


# --- 6. UBL profile: Peppol BIS abroad, the French profile at home --------------------------------

def test_foreign_ubl_is_peppol_bis_and_passes_peppol(docs) -> None:
    foreign = [d for d in docs if not domestic(d)]
    assert {"K", "G"} <= {c for d in foreign for c in categories(d)}
    for doc in foreign:
        inv = to_en16931(doc)
        xml = to_ubl(inv)
        root = etree.fromstring(xml)
        assert not is_french(inv)
        assert "peppol" in root.findtext("cbc:CustomizationID", namespaces=UBL_NS)
        assert root.findtext("cbc:ProfileID", namespaces=UBL_NS) == PROFILE
        assert not [n for n in root.xpath("/*/cbc:Note/text()", namespaces=UBL_NS)
                    if n.startswith("#PMD#")]
        assert fatal(("ubl", "peppol"), xml) == [], doc.number


def test_domestic_ubl_is_the_french_profile_with_its_notes(picked) -> None:
    doc = picked["services"]
    inv = to_en16931(doc)
    root = etree.fromstring(to_ubl(inv))
    assert is_french(inv)
    assert root.findtext("cbc:CustomizationID", namespaces=UBL_NS) == FRENCH_CUSTOMIZATION
    assert [n[:5] for n in root.xpath("/*/cbc:Note/text()", namespaces=UBL_NS)] == [
        "#PMD#", "#PMT#", "#AAB#", "#BAR#"]
    assert fatal(("ubl", "br-fr-ubl"), to_ubl(inv)) == []


def test_pdf_prints_the_early_payment_terms_the_aab_note_carries(picked) -> None:
    terms = {"fr": "Escompte de 2 % pour paiement sous 10 jours.",
             "en": "2% discount for payment within 10 days.",
             "de": "2 % Skonto bei Zahlung innerhalb von 10 Tagen."}
    doc = picked["goods_fr"]
    doc = replace(doc, language="fr", seller_legal=doc.seller_legal.model_copy(
        update={"early_payment_discount": terms}))
    assert ("AAB", terms["fr"]) in to_en16931(doc).notes
    html = WeasyPrintEngine(PROJECT_ROOT / "templates").html(doc)
    assert terms["fr"] in html and "Pas d" not in html
