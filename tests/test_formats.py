"""The registry of e-invoice formats: each format's totals are read back by its own parser,
and one VAT amount off by a cent in any produced format fails that invoice, which is not
delivered, while the rest of the batch goes out."""

import hashlib
import json
import re
import zlib
from dataclasses import replace
from datetime import date
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa

from pipeline.batching import plan_batches
from pipeline.channels.base import Outgoing
from pipeline.channels.edi import EdiFormatter
from pipeline.codes import amount, cents, number
from pipeline.context import open_run
from pipeline.delivery import deliver_batch
from pipeline.einvoice import crosscheck, registry
from pipeline.einvoice.registry import BuildContext, EInvoiceFormat, one
from pipeline.journal import Journal
from pipeline.journal import journal as deliveries
from pipeline.render.engine import WeasyPrintEngine
from pipeline.render.stage import render_batch
from pipeline.settings import EdiSettings, Settings
from pipeline.validate import validate

CENT = Decimal("0.01")


def test_the_registry_lists_the_formats_and_the_lifecycle_messages() -> None:
    formats = registry.formats()
    assert {name: (f.grouping, f.suffix) for name, f in formats.items()} == {
        "facturx": ("invoice", ".xml"), "ubl": ("invoice", ".ubl.xml"),
        "edifact": ("partner", ".edi"), "x12": ("partner", ".x12"),
        "cdar": ("message", ".cdar.xml")}
    # Factur-X is in every PDF; lifecycle messages go to the platform, not to customers
    assert registry.selectable() == ["edifact", "ubl", "x12"]
    with pytest.raises(KeyError, match="no e-invoice format 'xml'; registered: cdar, "):
        registry.get("xml")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(replace(registry.get("ubl"), suffix=".xml"))
    with pytest.raises(ValueError, match=r"unknown e-invoice formats \['edi'\] \(formats: "
                                         r"edifact, ubl, x12\)"):
        EdiSettings(customers={"C00001": ["edi"]})


def test_numbers_are_written_one_way() -> None:
    assert [amount(Decimal("1234.5")), number(Decimal("20.00")), number(Decimal("5.50")),
            number(Decimal("100")), cents(Decimal("1234.50"))] == [
        "1234.50", "20", "5.5", "100", "123450"]


# Each reader is a parser of bytes: fed hand-made documents, not our writers' output.

CII = b"""<?xml version="1.0" encoding="UTF-8"?>
<rsm:CrossIndustryInvoice
  xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
  xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100">
 <rsm:ExchangedDocument><ram:ID>HAND-1</ram:ID></rsm:ExchangedDocument>
 <rsm:SupplyChainTradeTransaction><ram:ApplicableHeaderTradeSettlement>
  <ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
  <ram:ApplicableTradeTax><ram:CalculatedAmount>20.00</ram:CalculatedAmount>
   <ram:BasisAmount>100.00</ram:BasisAmount><ram:CategoryCode>S</ram:CategoryCode>
   <ram:RateApplicablePercent>20.00</ram:RateApplicablePercent></ram:ApplicableTradeTax>
  <ram:ApplicableTradeTax><ram:CalculatedAmount>0.00</ram:CalculatedAmount>
   <ram:BasisAmount>7.50</ram:BasisAmount><ram:CategoryCode>E</ram:CategoryCode>
   <ram:RateApplicablePercent>0</ram:RateApplicablePercent></ram:ApplicableTradeTax>
  <ram:SpecifiedTradeSettlementHeaderMonetarySummation>
   <ram:LineTotalAmount>107.50</ram:LineTotalAmount>
   <ram:TaxBasisTotalAmount>107.50</ram:TaxBasisTotalAmount>
   <ram:TaxTotalAmount currencyID="EUR">20.00</ram:TaxTotalAmount>
   <ram:TaxTotalAmount currencyID="USD">23.10</ram:TaxTotalAmount>
   <ram:GrandTotalAmount>127.50</ram:GrandTotalAmount>
   <ram:DuePayableAmount>127.49</ram:DuePayableAmount>
  </ram:SpecifiedTradeSettlementHeaderMonetarySummation>
 </ram:ApplicableHeaderTradeSettlement></rsm:SupplyChainTradeTransaction>
</rsm:CrossIndustryInvoice>"""

UBL = b"""<?xml version="1.0" encoding="UTF-8"?>
<CreditNote xmlns="urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
  xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
  xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:ID>HAND-2</cbc:ID><cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
 <cac:TaxTotal><cbc:TaxAmount currencyID="EUR">-2.10</cbc:TaxAmount>
  <cac:TaxSubtotal><cbc:TaxableAmount currencyID="EUR">-21.00</cbc:TaxableAmount>
   <cbc:TaxAmount currencyID="EUR">-2.10</cbc:TaxAmount>
   <cac:TaxCategory><cbc:ID>S</cbc:ID><cbc:Percent>10</cbc:Percent></cac:TaxCategory>
  </cac:TaxSubtotal></cac:TaxTotal>
 <cac:TaxTotal><cbc:TaxAmount currencyID="USD">-2.31</cbc:TaxAmount></cac:TaxTotal>
 <cac:LegalMonetaryTotal>
  <cbc:LineExtensionAmount currencyID="EUR">-21.00</cbc:LineExtensionAmount>
  <cbc:TaxExclusiveAmount currencyID="EUR">-21.00</cbc:TaxExclusiveAmount>
  <cbc:TaxInclusiveAmount currencyID="EUR">-23.10</cbc:TaxInclusiveAmount>
  <cbc:PayableAmount currencyID="EUR">-23.10</cbc:PayableAmount>
 </cac:LegalMonetaryTotal>
</CreditNote>"""

EDIFACT = b"""UNA:+.? '
UNB+UNOC:3+3012345000000:14+3012345000017:14+261126:0000+5'
UNH+5-1+INVOIC:D:96A:UN:EAN008'
BGM+380+HAND-3+9'
MOA+203:100.00'
TAX+7+VAT+++:::5.5+S'
UNS+S'
MOA+9:105.50'
MOA+77:105.51'
MOA+79:100.00'
MOA+125:100.00'
MOA+176:5.50'
MOA+86:105.50'
TAX+7+VAT+++:::5.5+S'
MOA+124:5.50'
MOA+125:100.00'
UNT+15+5-1'
UNZ+1+5'
"""


def _isa(control: int) -> str:
    return (f"ISA*00*{' ' * 10}*00*{' ' * 10}*ZZ*{'732829320':<15}*ZZ*{'3012345000017':<15}"
            f"*261126*0000*U*00401*{control:09d}*0*P*>~")


X12 = (_isa(4) + """
GS*IN*732829320*3012345000017*20261126*0000*4*X*004010~
ST*810*0001~
BIG*20261126*HAND-4~
TDS*12650*10000~
TXI*VA*2.00*20*****10.00~
TXI*VA*0.50*5.5*****9.09~
TXI*VA*0.00*0*****80.91~
CTT*0~
SE*8*0001~
GE*1*4~
IEA*1*000000004~
""").encode()


def test_each_reader_parses_bytes_it_did_not_write() -> None:
    assert registry.get("facturx").read_totals(CII) == {"HAND-1": {
        "lines": Decimal("107.50"), "net": Decimal("107.50"), "vat": Decimal("20.00"),
        "gross": Decimal("127.50"), "due": Decimal("127.49"),
        "vat S 20%": Decimal("20.00"), "base S 20%": Decimal("100.00"),
        "vat E 0%": Decimal("0.00"), "base E 0%": Decimal("7.50")}}
    assert registry.get("ubl").read_totals(UBL) == {"HAND-2": {
        "lines": Decimal("-21.00"), "net": Decimal("-21.00"), "vat": Decimal("-2.10"),
        "gross": Decimal("-23.10"), "due": Decimal("-23.10"),
        "vat S 10%": Decimal("-2.10"), "base S 10%": Decimal("-21.00")}}
    # every MOA of the summary is read: 9, 77, 79, 125, 176, and one no writer of ours writes
    assert registry.get("edifact").read_totals(EDIFACT) == {"HAND-3": {
        "due": Decimal("105.50"), "gross": Decimal("105.51"), "lines": Decimal("100.00"),
        "net": Decimal("100.00"), "vat": Decimal("5.50"), "MOA 86": Decimal("105.50"),
        "vat S 5.5%": Decimal("5.50"), "base S 5.5%": Decimal("100.00")}}
    # the VAT is the TXI segments' (2.50), not TDS01 - TDS02 (26.50)
    assert registry.get("x12").read_totals(X12) == {"HAND-4": {
        "due": Decimal("126.50"), "gross": Decimal("126.50"), "net": Decimal("100.00"),
        "vat": Decimal("2.50"), "vat 20%": Decimal("2.00"), "base 20%": Decimal("10.00"),
        "vat 5.5%": Decimal("0.50"), "base 5.5%": Decimal("9.09"),
        "vat 0%": Decimal("0.00"), "base 0%": Decimal("80.91")}}


def test_a_total_given_twice_cannot_be_read(sample_docs) -> None:
    doc = sample_docs[0]
    twice = EDIFACT.replace(b"MOA+176:5.50'", b"MOA+176:5.50'\nMOA+176:5.51'").replace(
        b"HAND-3", doc.number.encode())
    assert crosscheck.check(registry.get("edifact"), [doc], twice) == {doc.number: [
        "cannot read the EDIFACT totals back: ValueError: vat is given twice (MOA 176)"]}


def test_a_format_is_one_registration(sample_docs, tmp_path, monkeypatch) -> None:
    """A format of our own, registered, is sent by the EDI channel like the others."""
    def build(invoices, context: BuildContext) -> bytes:
        inv = one(invoices)
        return json.dumps({inv.number: {"due": str(inv.payable)}}).encode()

    def read_totals(data: bytes):
        return {n: {k: Decimal(v) for k, v in t.items()} for n, t in json.loads(data).items()}

    toy = EInvoiceFormat(name="toy", title="Toy", grouping="invoice",
                         media_type="application/json", suffix=".toy.json", build=build,
                         read_totals=read_totals, totals=frozenset({"due"}))
    monkeypatch.setitem(registry.FORMATS, "toy", toy)
    doc = next(d for d in sample_docs if len(d.vat_breakdown) == 1)
    formatter = EdiFormatter(Settings().seller, EdiSettings(customers={doc.customer_id: ["toy"]}),
                             Journal(f"sqlite:///{tmp_path / 'ledger.db'}"))
    item = Outgoing(replace(doc, channel="edi"), b"%PDF-1.7 stub", "0" * 64)
    formatted = formatter.format([item], "b-1")
    # the toy carries no VAT per rate: its reader is held to it like any other
    assert formatted.failures[doc.number].startswith("Toy totals differ: base ")
    per_rate = {k: v for k, v in crosscheck.expected_totals(doc).items()
                if k.startswith(("vat ", "base "))}
    monkeypatch.setitem(registry.FORMATS, "toy", replace(toy, read_totals=lambda data: {
        n: {**t, **per_rate} for n, t in read_totals(data).items()}))
    formatted = formatter.format([item], "b-2")
    assert formatted.failures == {}
    assert [p.name for p in formatted.parcels] == [f"{doc.number}.toy.json", f"{doc.number}.pdf"]


# --- One VAT amount off by a cent in the bytes, delivered end to end ---------------------


def _bump(data: bytes, pattern: bytes, after: bytes = b"") -> tuple[bytes, str, str]:
    """``data`` with the first amount ``pattern`` captures after ``after`` changed by a cent
    (up, or down when up would change its length), and the amount before and after."""
    found = re.compile(pattern).search(data, data.index(after))
    old = Decimal(found.group(1).decode())
    new = f"{old + CENT:.2f}"
    if len(new) != len(found.group(1)):
        new = f"{old - CENT:.2f}"
    return data[:found.start(1)] + new.encode() + data[found.end(1):], f"{old:.2f}", new


_STREAM = re.compile(rb"/CheckSum <([0-9a-f]{32})>[^>]*>>/Filter /FlateDecode/Length (\d+)>>"
                     rb"\nstream\n")


def _bump_pdf(pdf: bytes, pattern: bytes, after: bytes) -> tuple[bytes, str, str]:
    """The PDF with the amount changed inside its compressed factur-x.xml stream (checksum
    and length made to match, as a forger would)."""
    found = _STREAM.search(pdf)
    length = int(found.group(2))
    xml = zlib.decompress(pdf[found.end():found.end() + length])
    changed, old, new = _bump(xml, pattern, after)
    stream = zlib.compress(changed)
    head = found.group(0).replace(found.group(1), hashlib.md5(changed).hexdigest().encode())
    head = head.replace(b"/Length %d>>" % length, b"/Length %d>>" % len(stream))
    return pdf[:found.start()] + head + stream + pdf[found.end() + length:], old, new


EUR = rb' currencyID="EUR">(-?[0-9.]+)<'
CASES = {  # format: the VAT amount changed (which total it is, a pattern, what precedes it)
    "facturx-BT110": ("facturx", "vat", rb"<ram:TaxTotalAmount" + EUR, b""),
    "facturx-BT117": ("facturx", "vat S", rb"<ram:CalculatedAmount>(-?[0-9.]+)<", b""),
    "ubl-BT110": ("ubl", "vat", rb"<cbc:TaxAmount" + EUR, b"<cac:TaxTotal>"),
    "ubl-BT117": ("ubl", "vat S", rb"<cbc:TaxAmount" + EUR, b"<cac:TaxSubtotal>"),
    "edifact-MOA176": ("edifact", "vat", rb"MOA\+176:(-?[0-9.]+)'", b"UNS+S'"),
    "edifact-MOA124": ("edifact", "vat S", rb"MOA\+124:(-?[0-9.]+)'", b"UNS+S'"),
    "x12-TXI02": ("x12", "vat ", rb"TXI\*VA\*(-?[0-9.]+)\*", b""),
}


@pytest.fixture(scope="module")
def accepted(clean_bundle):
    settings = Settings()
    return validate(clean_bundle, settings.seller, settings.validation,
                    today=date(2026, 11, 27)).accepted


@pytest.mark.parametrize("case", CASES)
def test_a_vat_amount_one_cent_off_fails_that_invoice_only(case, clean_bundle, accepted,
                                                           tmp_path, monkeypatch) -> None:
    name, total, pattern, after = CASES[case]
    customers = clean_bundle.customers
    edi = customers.filter(pl.col("channel") == "edi")["customer_id"].to_list()
    peppol = customers.filter(pl.col("channel") == "peppol")["customer_id"].to_list()
    email = customers.filter(pl.col("channel") == "email")["customer_id"].to_list()
    assert len(edi) >= 2 and peppol and email
    firsts = accepted.filter(pl.col("invoice_type") == "invoice").unique(
        "customer_id", keep="first", maintain_order=True)
    chosen = [firsts.filter(pl.col("customer_id") == c)["invoice_number"][0]
              for c in (edi[0], edi[1], peppol[0], email[0])]
    victim = chosen[0]  # one invoice per partner: its interchange carries it alone
    formats = {} if name == "facturx" else {c: [name] for c in (*edi, *peppol)}
    settings = Settings(home=tmp_path / "home", render={"workers": 1, "batch_size": 10},
                        edi={"customers": formats})
    [batch] = plan_batches(accepted.filter(pl.col("invoice_number").is_in(chosen)), 10)
    changed: dict[str, tuple[str, str]] = {}

    if name == "facturx":  # the PDF as rendered, before the render stage reads it back
        render = WeasyPrintEngine.render

        def tampered_render(self, doc, lang=None):
            pdf = render(self, doc, lang)
            if doc.number != victim:
                return pdf
            pdf, *changed[doc.number] = _bump_pdf(pdf, pattern, after)
            return pdf

        monkeypatch.setattr(WeasyPrintEngine, "render", tampered_render)
    else:  # the format's bytes, before the EDI channel reads them back
        fmt = registry.get(name)

        def tampered_build(documents, context):
            data = fmt.build(documents, context)
            if victim not in [d.number for d in documents]:
                return data
            data, *changed[victim] = _bump(data, pattern, after)
            return data

        monkeypatch.setitem(registry.FORMATS, name, replace(fmt, build=tampered_build))

    ctx = open_run(settings, "tamper")
    try:
        report = deliver_batch(render_batch(clean_bundle, batch, ctx), ctx)
        with ctx.journal.engine.connect() as conn:
            states = dict(conn.execute(sa.select(deliveries.c.invoice_number,
                                                 deliveries.c.state)).all())
    finally:
        ctx.close()

    old, new = changed[victim]
    assert set(report.failed) == {victim}, report.failed
    problem = report.failed[victim]
    assert re.search(rf"{total}[^:;]*: document {re.escape(old)} != artifact {re.escape(new)}",
                     problem), problem
    assert (f"invoice {victim}: totals read back from the PDF do not match, not delivered: "
            if name == "facturx" else f"{registry.get(name).title} totals differ: ") in problem
    assert set(report.delivered) == set(chosen) - {victim}
    assert victim not in states or states[victim] == "failed"
    assert {states[n] for n in chosen if n != victim} == {"written"}
    files = [p for p in (tmp_path / "home" / "outbox").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(victim)]
    for path in files:
        if path.suffix in (".edi", ".x12", ".xml"):
            assert victim.encode() not in path.read_bytes(), path.name
    if name != "facturx":  # the others went out in the format tampered with
        sent = [p.name for p in files if p.name.endswith(registry.get(name).suffix)]
        assert len(sent) == 2, sent
