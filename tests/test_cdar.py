"""CDAR lifecycle statuses: official examples read back; the seller's statuses pass the rules."""

import re
import unicodedata
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.einvoice import cdar
from pipeline.einvoice.cdar import Characteristic, Party, StatusDetail
from tests.standards import SCHEMATRON, STANDARDS, schematron_failures, xsd_errors

EXAMPLES = STANDARDS / "fr-reform/examples/lifecycle"
NAME = re.compile(r"UC\w+?_(?P<invoice>F\d+)_\d+-CDV-(?P<code>\d{3})_(?P<name>\w+?)(_POUR_PPF)?")
SELLER = Party("100000009", "0002", "VENDEUR")
BUYER = Party("200000008", "0002", "ACHETEUR", address="200000008", address_scheme="0225")
AT = datetime(2025, 8, 2, 10, 0)


def _ascii(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace(" ", "_")


def _example(stem: str) -> bytes:
    return (EXAMPLES / f"{stem}.xml").read_bytes()


def _passes(xml: bytes) -> None:
    assert xsd_errors("cdar", xml) == []
    assert schematron_failures("br-fr-cdv", xml) == []


def _collected(*by_rate: tuple[str, str]) -> cdar.LifecycleStatus:
    return cdar.seller_status(
        212, invoice_number="F202500003", invoice_date=date(2025, 7, 1), seller=SELLER,
        buyer=BUYER, at=AT, collected=[(Decimal(r), Decimal(a)) for r, a in by_rate])


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.xml")), ids=lambda p: p.stem)
def test_every_official_example_reads_as_its_file_name_says(path) -> None:
    expected = NAME.fullmatch(path.stem)
    assert expected, path.name
    [status] = cdar.parse(path.read_bytes())
    assert status.status_code == int(expected["code"])
    assert _ascii(status.status_name) == expected["name"]
    assert status.invoice_number == expected["invoice"]
    assert status.seller_id == "100000009"
    assert status.invoice_date in (date(2025, 7, 1), date(2025, 7, 2))
    assert status.phase == cdar.STATUSES[status.status_code].phase
    assert (status.profile == cdar.PROFILE_PPF) == path.stem.endswith("_POUR_PPF")


def test_the_examples_values() -> None:
    [paid] = cdar.parse(_example("UC1_F202500003_06-CDV-211_Paiement_transmis"))
    assert (paid.amount, paid.currency) == (Decimal("12000"), "EUR")
    assert paid.amounts[0].kind == "MPA" and paid.amounts[0].value_date == date(2025, 7, 30)
    assert (paid.issuer.global_id, paid.issuer.role) == ("200000008", "BY")

    [collected] = cdar.parse(_example("UC1_F202500003_07-CDV-212_Encaissee"))
    assert collected.amount == Decimal("12000") and collected.amounts[0].percent == Decimal(20)
    assert collected.issued_at == datetime(2025, 8, 2, 10, 5)
    assert collected.status_at == datetime(2025, 8, 2, 10, 0)
    assert collected.invoice_received_at == datetime(2025, 7, 1, 15, 10)
    assert collected.message_id == "F202500003_212_20250701151000#380_20250701"
    assert [(r.global_id, r.scheme, r.role) for r in collected.recipients] == [
        ("200000008", "0002", "BY"), ("9998", "0238", "DFH")]
    assert collected.recipients[0].address == "200000008"

    [rejected] = cdar.parse(_example("UC2_F202500004_02-CDV-213_Rejetee"))
    assert rejected.reason_codes == ("DOUBLON",)
    assert rejected.reasons == ("Facture en doublon (déjà émise / réçue)",)
    assert rejected.details[0].note == "Facture identique reçue sur une autre adresse"
    assert rejected.phase == "transmission" and rejected.unece_status == "8"

    [disputed] = cdar.parse(_example("UC4_F202500006_04-CDV-207_En_litige"))
    assert disputed.details[0].action_code == "NIN"
    assert [(c.kind, c.data_id, c.percent, c.changed) for c in disputed.characteristics] == [
        ("DIV", "BT-152", Decimal("10.00"), True), ("DVA", "BT-152", Decimal("20.00"), True)]
    assert disputed.amount is None and cdar.read_totals(
        _example("UC4_F202500006_04-CDV-207_En_litige")) == {}


def test_the_status_table() -> None:
    names = {c: s.fr for c, s in cdar.STATUSES.items()}
    assert {200: "Déposée", 205: "Approuvée", 207: "En litige", 210: "Refusée",
            211: "Paiement transmis", 212: "Encaissée", 213: "Rejetée", 220: "Annulée"}.items() \
        <= names.items()
    assert set(range(200, 214)) | {220} <= set(cdar.STATUSES)
    # Every code is one the BR-FR-CDV-CL-06 list of the schematron accepts.
    xslt = SCHEMATRON["br-fr-cdv"].read_text(encoding="utf-8")
    listed = re.search(r"invoice-status-codes\"\s+as=\"xs:string\"\s+select=\"'([^']+)'", xslt)
    assert listed and set(cdar.STATUSES) <= {int(c) for c in listed[1].split()}
    assert {209, 212, 220} <= cdar.SELLER_STATUSES and cdar.BUILDABLE <= cdar.SELLER_STATUSES
    assert not {200, 205, 210, 211, 213} & cdar.SELLER_STATUSES
    assert {c for c, s in cdar.STATUSES.items() if s.to_ppf} == {200, 210, 212, 213}


def test_generated_212_passes_and_reads_back() -> None:
    status = _collected(("20", "720"), ("10", "440.00"))
    xml = cdar.build(status)
    _passes(xml)
    assert cdar.parse(xml) == [status]
    assert status.amount == Decimal("1160.00")
    assert cdar.read_totals(xml) == {"collected": Decimal("1160.00"),
                                     "collected 20%": Decimal("720"),
                                     "collected 10%": Decimal("440")}
    assert [r.role for r in status.recipients] == ["BY", "DFH"]
    assert status.recipients[1] == cdar.PPF
    assert status.issuer == replace(SELLER, role="SE") and status.unece_status == "47"


def test_the_registry_builds_and_reads_the_seller_s_messages() -> None:
    """Lifecycle messages are a format of the registry like the invoices: one message per
    file, read back by the independent reader."""
    from pipeline.einvoice import registry

    fmt = registry.get("cdar")
    status = _collected(("20", "720"), ("10", "440.00"))
    xml = fmt.build([status], registry.BuildContext())
    _passes(xml)
    assert fmt.read_totals(xml) == {status.invoice_number: cdar.read_totals(xml)}
    assert fmt.read_totals(xml)[status.invoice_number]["collected"] == Decimal("1160.00")
    assert (fmt.grouping, fmt.selectable) == ("message", False)


def test_212_without_vat_on_receipts_goes_to_the_buyer_only() -> None:
    status = cdar.seller_status(212, invoice_number="F1", invoice_date=date(2025, 7, 1),
                                seller=SELLER, buyer=BUYER, at=AT, vat_on_receipts=False,
                                collected=[(Decimal("5.5"), Decimal("105.50"))])
    assert [r.role for r in status.recipients] == ["BY"]
    _passes(cdar.build(status))


def test_generated_220_and_209_pass_and_read_back() -> None:
    cancelled = cdar.seller_status(
        220, invoice_number="F202500006", invoice_date=date(2025, 7, 1), seller=SELLER,
        buyer=BUYER, at=AT, invoice_received_at=datetime(2025, 7, 1, 15, 10),
        details=[StatusDetail(reason="Remplacée par la facture rectificative F202500008")])
    completed = cdar.seller_status(
        209, invoice_number="F202500007", invoice_date=date(2025, 7, 2), seller=SELLER,
        buyer=BUYER, at=AT, details=[StatusDetail(characteristics=(Characteristic(
            kind="MAJ", data_id="BT-13", name="Référence de commande", value="PO-42 & <b>",
            changed=True),))])
    for status in (cancelled, completed):
        xml = cdar.build(status)
        _passes(xml)
        assert cdar.parse(xml) == [status]
    assert [r.role for r in cancelled.recipients] == ["BY"]


@pytest.mark.parametrize("stem", ["UC1_F202500003_07-CDV-212_Encaissee",
                                  "UC4b_F202500006_05-CDV-220_Annulee"])
def test_the_examples_rebuilt_follow_the_1_4_rules(stem) -> None:
    """The v1.2 212 misses MDT-124-2 (BR-FR-CDV-16); the same status rebuilt does not."""
    original = _example(stem)
    if "212" in stem:
        assert {r for r, _ in schematron_failures("br-fr-cdv", original)} == {
            "BR-FR-CDV-16_MDT-124-2"}
    [status] = cdar.parse(original)
    xml = cdar.build(status)
    _passes(xml)
    assert cdar.parse(xml) == [status]


def test_build_refuses_what_the_seller_may_not_send() -> None:
    good = _collected(("20", "120.00"))
    with pytest.raises(ValueError, match=r"status 210 Refusée is not one build\(\) writes"):
        cdar.build(replace(good, status_code=210, status_name="Refusée"))
    with pytest.raises(ValueError, match="BR-FR-CDV-14"):
        cdar.build(replace(good, details=()))
    with pytest.raises(ValueError, match="amount 120.005 is not to the cent"):
        cdar.build(_collected(("20", "120.005")))
    with pytest.raises(ValueError, match=r"BR-FR-CDV-08"):
        cdar.build(replace(good, recipients=(replace(BUYER, role="BY", address=None),)))
    with pytest.raises(ValueError, match="issuer .* must be the seller"):
        cdar.build(replace(good, issuer=replace(BUYER, role="BY")))
    with pytest.raises(ValueError, match="whitespace"):
        cdar.build(replace(good, invoice_number=" F1"))
    with pytest.raises(ValueError, match="to the second"):
        cdar.build(replace(good, status_at=datetime(2025, 8, 2, 10, 0, 0, 5)))
    with pytest.raises(ValueError, match="XML compatible"):
        cdar.build(replace(good, issuer=replace(good.issuer, name="VENDEUR\x00")))


@pytest.mark.parametrize(("change", "message"), [
    (lambda x: x[:200], r"not well-formed XML"),
    (lambda x: b"<Invoice/>", r"not a CDAR message: the root element is Invoice"),
    (lambda x: re.sub(rb"<ram:ProcessConditionCode>212</ram:ProcessConditionCode>", b"", x),
     r"status code ProcessConditionCode \(MDT-105\) is missing in AcknowledgementDocument 1, "
     r"ReferenceReferencedDocument 1"),
    (lambda x: re.sub(rb"<ram:FormattedIssueDateTime>.*?</ram:FormattedIssueDateTime>", b"", x,
                      flags=re.S), r"invoice date FormattedIssueDateTime \(MDG-35, MDT-100\)"),
    (lambda x: x.replace(b">F202500003</ram:IssuerAssignedID>", b"> </ram:IssuerAssignedID>"),
     r"invoice number IssuerAssignedID \(MDT-87\) is missing"),
    (lambda x: x.replace(b">12000</ram:ValueAmount>", b">12 000</ram:ValueAmount>"),
     r"ValueAmount \(MDT-215\) .* is not a decimal number: '12 000'"),
    (lambda x: x.replace(b"20250802100500", b"20250802250500"),
     r"IssueDateTime \(MDT-8\) is not a valid date-time: '20250802250500'"),
    (lambda x: re.sub(rb"<ram:TypeCode>23</ram:TypeCode>", b"<ram:TypeCode>99</ram:TypeCode>", x),
     r"TypeCode \(MDT-77\) in AcknowledgementDocument 1 is '99'"),
    (lambda x: re.sub(rb"<rsm:ExchangedDocument>.*</rsm:ExchangedDocument>", b"", x,
                      flags=re.S), r"ExchangedDocument \(MDB-2, the header\) is missing"),
])
def test_a_malformed_message_names_what_is_wrong(change, message) -> None:
    xml = change(_example("UC1_F202500003_07-CDV-212_Encaissee"))
    with pytest.raises(ValueError, match=message):
        cdar.parse(xml)


def test_no_entity_is_expanded() -> None:
    xml = _example("UC4b_F202500006_05-CDV-220_Annulee").decode("utf-8-sig").replace(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>').replace(
        "<ram:Name>VENDEUR</ram:Name>", "<ram:Name>&x;</ram:Name>")
    [status] = cdar.parse(xml.encode())
    assert "root:" not in (status.issuer.name or "")


def test_read_totals_wants_one_invoice() -> None:
    xml = cdar.build(_collected(("20", "120.00")))
    twice = xml.replace(b"</rsm:AcknowledgementDocument>", b"</rsm:AcknowledgementDocument>"
                        + re.search(rb"<rsm:AcknowledgementDocument>.*</rsm:Acknowledgement"
                                    rb"Document>", xml, re.S)[0].replace(b"F202500003", b"F9"))
    assert len(cdar.parse(twice)) == 2
    with pytest.raises(ValueError, match=r"about 2 invoices \(F202500003, F9\)"):
        cdar.read_totals(twice)


# Invoice numbers and names with what XML must escape; IDs are XML tokens (no edge whitespace).
_ids = st.text(st.sampled_from(list("AZaz09-_/#.&<>\"' é€")), min_size=1, max_size=35).map(
    lambda t: " ".join(t.split())).filter(bool)
_texts = st.text(st.sampled_from(list("Az9 &<>\"'é€\n\t]]>")), min_size=1, max_size=40)
_amounts = st.decimals(min_value=Decimal("-999999999.99"), max_value=Decimal("999999999.99"),
                       places=2, allow_nan=False, allow_infinity=False)
_rates = st.sampled_from([Decimal(r) for r in ("20", "10", "5.5", "2.1", "8.5", "13", "0",
                                               "0.9", "1.05", "19.6")])
_moments = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=_ids, name=_texts, day=st.dates(date(2000, 1, 1), date(2099, 12, 31)),
       at=_moments, collected=st.lists(st.tuples(_rates, _amounts), min_size=1, max_size=4))
def test_any_212_reads_back_to_the_cent_and_passes(number, name, day, at, collected) -> None:
    status = cdar.seller_status(212, invoice_number=number, invoice_date=day, at=at,
                                seller=replace(SELLER, name=name), buyer=BUYER,
                                collected=collected)
    xml = cdar.build(status)
    _passes(xml)
    [back] = cdar.parse(xml)
    assert back == status
    assert back.invoice_number == number and back.issuer.name == name
    assert back.amount == sum(a for _, a in collected)
    assert cdar.read_totals(xml)["collected"] == sum(a for _, a in collected)
