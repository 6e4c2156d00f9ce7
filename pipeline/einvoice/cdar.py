"""Invoice lifecycle statuses of the French 2026 reform as UN/CEFACT CDAR D22B messages.

XP Z12-012 §5 maps a lifecycle status ("Cycle de Vie", CDV) onto the
CrossDomainAcknowledgementAndResponse message: the header names who sends, who
poses the status and who receives it; one referenced document is the invoice
(number MDT-87, date MDT-100, seller SIREN MDT-129) with the reform status code
(MDT-105) and optional status details (MDG-37) carrying reasons and amounts
(MDG-43). ``parse`` reads any such message; ``build`` writes the statuses the
seller poses itself, following the FNFE-MPE BR-FR-CDV rules v1.4.0.03.

The 212 "Encaissée" status carries the amount collected, VAT included, one
MDG-43 block per VAT rate: MDT-207 ``MEN``, MDT-215 the amount, MDT-224 the
rate (XP Z12-014 §"cas nominal"; BR-FR-CDV-14 requires both). It is what the
tax administration needs for VAT due on receipts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from lxml import etree

from pipeline.einvoice.cii import number
from pipeline.einvoice.registry import BuildContext, EInvoiceFormat, one, register
from pipeline.money import CENT

__all__ = ["NS", "PROFILE", "PROFILE_PPF", "PPF", "TPhase", "TSender", "StatusCode",
           "STATUSES", "SELLER_STATUSES", "BUILDABLE", "REASON_CODES", "Party",
           "Characteristic", "StatusDetail", "LifecycleStatus", "parse", "build",
           "seller_status", "read_totals"]

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossDomainAcknowledgementAndResponse:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "qdt": "urn:un:unece:uncefact:data:standard:QualifiedDataType:100",
}
PROFILE = "urn.cpro.gouv.fr:1p0:CDV:invoice"
"""MDT-3 of a status exchanged between the parties (BR-FR-CDV-02)."""
PROFILE_PPF = "urn.cpro.gouv.fr:1p0:CDV:einvoicingF2"
"""MDT-3 of the copy a platform sends to the PPF alone."""

TPhase = Literal["transmission", "processing"]
TSender = Literal["platform", "buyer", "seller"]
_PHASE_CODE: dict[TPhase, str] = {"transmission": "305", "processing": "23"}  # MDT-77


@dataclass(frozen=True)
class StatusCode:
    """One reform status code (MDT-105) and what goes with it."""

    code: int
    fr: str
    """The name of XP Z12-012 / Z12-014 (MDT-106)."""
    en: str
    phase: TPhase
    """Transmission statuses are posed by platforms (MDT-77 305), processing ones by users (23)."""
    sent_by: frozenset[TSender]
    unece: str | None = None
    """UNTDID 1373 status (MDT-88) matching it, from BR-FR-CDV-CL-05."""
    to_ppf: bool = False
    """One of the four statuses always transmitted to the PPF (212: when VAT is due on receipt)."""


def _s(code: int, fr: str, en: str, phase: TPhase, *sent_by: TSender, unece: str | None = None,
       to_ppf: bool = False) -> tuple[int, StatusCode]:
    return code, StatusCode(code, fr, en, phase, frozenset(sent_by), unece, to_ppf)


# Names: XP Z12-012 §5 (figure, BR-FR-CDV-CL-05), XP Z12-014 §4 and the official examples.
# Who poses each: XP Z12-014 (transmission statuses by the platforms; 4a/4b buyer; 4c "Complétée"
# and 6b "Encaissée" seller; "Annulée" by the buyer in the text, by the seller in example UC4b).
# 214 and 221-228 appear in the BR-FR-CDV code list (CL-06); XP Z12-014 names the factoring and
# direct-payment ones only as statuses to come, so their rules are not written yet.
STATUSES: dict[int, StatusCode] = dict([
    _s(200, "Déposée", "Submitted", "transmission", "platform", unece="10", to_ppf=True),
    _s(201, "Émise par la plateforme", "Issued by platform", "transmission", "platform",
       unece="51"),
    _s(202, "Reçue", "Received by platform", "transmission", "platform", unece="43"),
    _s(203, "Mise à disposition", "Made available", "transmission", "platform", unece="48"),
    _s(204, "Prise en charge", "In process", "processing", "buyer", unece="45"),
    _s(205, "Approuvée", "Approved", "processing", "buyer", unece="1"),
    _s(206, "Approuvée partiellement", "Partially approved", "processing", "buyer", unece="49"),
    _s(207, "En litige", "Disputed", "processing", "buyer", unece="46"),
    _s(208, "Suspendue", "Suspended", "processing", "buyer", unece="39"),
    _s(209, "Complétée", "Completed", "processing", "seller", unece="37"),
    _s(210, "Refusée", "Refused", "processing", "buyer", unece="50", to_ppf=True),
    _s(211, "Paiement transmis", "Payment transmitted", "processing", "buyer", unece="47"),
    _s(212, "Encaissée", "Payment received", "processing", "seller", unece="47", to_ppf=True),
    _s(213, "Rejetée", "Rejected", "transmission", "platform", unece="8", to_ppf=True),
    _s(214, "Visée", "Endorsed", "processing", "buyer"),
    _s(220, "Annulée", "Cancelled", "processing", "buyer", "seller"),
    _s(221, "Erreur de routage", "Routing error", "transmission", "platform"),
    _s(224, "Demande de paiement direct", "Direct payment requested", "processing", "seller"),
    _s(225, "Affacturée", "Factored", "processing", "seller"),
    _s(226, "Affacturée confidentiel", "Factored (undisclosed)", "processing", "seller"),
    _s(227, "Changement de compte à payer", "Payment account changed", "processing", "seller"),
    _s(228, "Non affacturée", "Not factored", "processing", "seller"),
    _s(500, "Recevable", "Admissible (batch)", "transmission", "platform"),
    _s(501, "Irrecevable", "Inadmissible (file)", "transmission", "platform"),
])
SELLER_STATUSES = frozenset(c for c, s in STATUSES.items() if "seller" in s.sent_by)
"""Statuses the seller (issuer side) may pose itself."""
BUILDABLE = frozenset({209, 212, 220})
"""What ``build`` writes: the seller's statuses whose content XP Z12-012/014 define."""

# BR-FR-CDV-CL-09 (MDT-113) and CL-10 (MDT-121) code lists.
REASON_CODES = frozenset((
    "RETRAIT_MAN_SERV ST_CT_NON_DECLAR SUPPR_COMP_AVOIR TRANSF_PMNT_REGIE CONTACT_ACHTR "
    "NON_TRANSMISE JUSTIF_ABS ROUTAGE_ERR AUTRE COORD_BANC_ERR TX_TVA_ERR MONTANTTOTAL_ERR "
    "CALCUL_ERR NON_CONFORME DOUBLON DEST_INC DEST_ERR TRANSAC_INC EMMET_INC CONTRAT_TERM "
    "DOUBLE_FACT CMD_ERR ADR_ERR SIRET_ERR CODE_ROUTAGE_ERR REF_CT_ABSENT REF_ERR PU_ERR REM_ERR "
    "QTE_ERR ART_ERR MODPAI_ERR QUALITE_ERR LIVR_INCOMP REJ_SEMAN REJ_UNI REJ_COH REJ_ADR "
    "REJ_CONT_B2G REJ_REF_PJ REJ_ASS_PJ IRR_VIDE_F IRR_TYPE_F IRR_SYNTAX IRR_TAILLE_PJ "
    "IRR_NOM_PJ IRR_VID_PJ IRR_EXT_DOC IRR_TAILLE_F IRR_ANTIVIRUS IRR_NOM_F").split())
_ACTION_CODES = frozenset("NOA PIN NIN CNF CNP CNA OTH".split())
_CHARACTERISTIC_CODES = frozenset(  # BR-FR-CDV-CL-11 (MDT-207)
    "MEN MPA RAP ESC RAB REM MAP MAPTTC MNA MNATTC CBB DIV DVA MAJ".split())
_INVOICE_TYPES = frozenset(  # BR-FR-04 (MDT-91)
    "380 389 393 501 386 500 384 471 472 473 261 262 381 396 502 503".split())
_RECIPIENT_ROLES = frozenset("BY AB DL SE SR PE PR II IV WK DFH".split())  # BR-FR-CDV-CL-04


@dataclass(frozen=True)
class Party:
    """A party of the message header (MDG-9 sender, MDG-16 issuer, MDG-23 recipients)."""

    global_id: str | None = None
    """SIREN (scheme 0002) of a company, or platform number (scheme 0238: the PPF is 0000)."""
    scheme: str | None = None
    name: str | None = None
    role: str | None = None
    """UNCL 3035: SE seller, BY buyer, WK platform, DFH the PPF, ..."""
    address: str | None = None
    """Electronic address (MDT-73), e.g. the SIREN or ``SIREN_STATUTS``, scheme 0225."""
    address_scheme: str | None = None


PPF = Party("0000", "0238", "PPF", "DFH")
"""The PPF data concentrator as BR-FR-CDV-02 v1.4.0.03 identifies it (the v1.2 examples: 9998)."""


@dataclass(frozen=True)
class Characteristic:
    """One MDG-43 block: a datum of the status (an amount collected, a value to correct, ...)."""

    kind: str | None = None
    """MDT-207: MEN collected (VAT incl.), MPA paid, MAJ updated datum, DIV invalid, ..."""
    amount: Decimal | None = None
    """MDT-215."""
    currency: str | None = None
    percent: Decimal | None = None
    """MDT-224: for MEN, the VAT rate of the amount."""
    value_date: date | None = None
    """MDT-218, e.g. the payment date of a 211."""
    data_id: str | None = None
    """MDT-206: the business term concerned (``BT-84`` ...)."""
    name: str | None = None
    location: str | None = None
    """MDT-213: XPath of the datum in the invoice."""
    value: str | None = None
    """MDT-214: new text value."""
    changed: bool | None = None
    """MDT-208: whether a change of value is asked for or proposed."""


@dataclass(frozen=True)
class StatusDetail:
    """One MDG-37 block: a reason, a requested action, a note and data for the status."""

    reason_code: str | None = None
    """MDT-113, from the list of status reasons (``DOUBLON``, ``TX_TVA_ERR`` ...)."""
    reason: str | None = None
    action_code: str | None = None
    """MDT-121: NIN new invoice, CNF full credit note, ..."""
    action: str | None = None
    note: str | None = None
    note_subject: str | None = None
    characteristics: tuple[Characteristic, ...] = ()


@dataclass(frozen=True)
class LifecycleStatus:
    """One status of one invoice, as a CDAR message carries it."""

    invoice_number: str
    """MDT-87 (BT-1)."""
    invoice_date: date | None
    """MDT-100 (BT-2); absent only on a 501 "Irrecevable" file."""
    status_code: int
    """MDT-105."""
    status_name: str
    """The French name of ``STATUSES``, or MDT-106 as written for a code not in the table."""
    message_id: str
    """MDT-4."""
    issued_at: datetime
    """MDT-8: when the message was created."""
    status_at: datetime | None
    """MDT-78: when the status was posed."""
    phase: TPhase
    issuer: Party
    """Who posed the status (MDG-16)."""
    recipients: tuple[Party, ...]
    seller_id: str | None
    """MDT-129: the SIREN of the invoice's seller, which with number and date identifies it."""
    sender: Party | None = None
    invoice_type: str | None = None
    """MDT-91 (BT-3): 380 invoice, 381 credit note, ..."""
    invoice_received_at: datetime | None = None
    """MDT-95: when the invoice was deposited (issuer side) or received (recipient side)."""
    details: tuple[StatusDetail, ...] = ()
    unece_status: str | None = None
    """MDT-88 (UNTDID 1373)."""
    profile: str = PROFILE
    business_process: str | None = "REGULATED"
    """MDT-2; absent from the copies sent to the PPF."""
    message_name: str | None = None

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(d.reason_code for d in self.details if d.reason_code)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(d.reason for d in self.details if d.reason)

    @property
    def characteristics(self) -> tuple[Characteristic, ...]:
        return tuple(c for d in self.details for c in d.characteristics)

    @property
    def amounts(self) -> tuple[Characteristic, ...]:
        """The amounts collected (MEN) or paid (MPA), one per VAT rate when given by rate."""
        return tuple(c for c in self.characteristics
                     if c.kind in ("MEN", "MPA") and c.amount is not None)

    @property
    def amount(self) -> Decimal | None:
        """Total collected (212) or paid (211), VAT included; None when the status has none."""
        amounts = [c.amount for c in self.amounts if c.amount is not None]
        return sum(amounts, Decimal(0)) if amounts else None

    @property
    def currency(self) -> str | None:
        currencies = {c.currency for c in self.amounts}
        return currencies.pop() if len(currencies) == 1 else None


# --- reading ---------------------------------------------------------------------------------

_RSM, _RAM = NS["rsm"], NS["ram"]


def _collapse(text: str) -> str:
    """What an XSD token (IDs and codes) keeps of a text: XML whitespace runs made one space."""
    return re.sub(r"[ \t\r\n]+", " ", text).strip(" ")


def _ram(node: etree._Element, path: str) -> etree._Element | None:
    return node.find("/".join(f"{{{_RAM}}}{p}" for p in path.split("/")))


def _token(node: etree._Element, path: str) -> str | None:
    child = _ram(node, path)
    if child is None or child.text is None:
        return None
    return _collapse(child.text) or None


def _string(node: etree._Element, path: str) -> str | None:
    child = _ram(node, path)
    return None if child is None else child.text or ""


def _need(value: str | None, what: str, where: str) -> str:
    if not value:
        raise ValueError(f"CDAR message: {what} is missing in {where}")
    return value


def _decimal(text: str, what: str) -> Decimal:
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text.strip()):
        raise ValueError(f"CDAR message: {what} is not a decimal number: {text!r}")
    try:
        return Decimal(text.strip())
    except InvalidOperation as error:  # pragma: no cover - the pattern rules it out
        raise ValueError(f"CDAR message: {what} is not a decimal number: {text!r}") from error


_FORMATS = {"102": "%Y%m%d", "203": "%Y%m%d%H%M", "204": "%Y%m%d%H%M%S", "205": "%Y%m%d%H%M%z"}


def _datetime(node: etree._Element, path: str, what: str) -> datetime | None:
    holder = _ram(node, path)
    if holder is None:
        return None
    child = next(iter(holder), None)
    text = (child.text or "").strip() if child is not None else ""
    try:
        if child is not None and etree.QName(child).localname == "DateTime":
            return datetime.fromisoformat(text)
        fmt = child.get("format", "204") if child is not None else "204"
        if fmt not in _FORMATS:
            raise ValueError(f"CDAR message: {what} has an unknown date format {fmt!r}")
        return datetime.strptime(text, _FORMATS[fmt])
    except ValueError as error:
        if str(error).startswith("CDAR message"):
            raise
        raise ValueError(f"CDAR message: {what} is not a valid date-time: {text!r}") from error


def _party(node: etree._Element | None) -> Party | None:
    if node is None:
        return None
    gid = _ram(node, "GlobalID")
    uri = _ram(node, "URIUniversalCommunication/URIID")
    return Party(global_id=_token(node, "GlobalID"),
                 scheme=gid.get("schemeID") if gid is not None else None,
                 name=_string(node, "Name"), role=_token(node, "RoleCode"),
                 address=_token(node, "URIUniversalCommunication/URIID"),
                 address_scheme=uri.get("schemeID") if uri is not None else None)


def _indicator(node: etree._Element, what: str) -> bool | None:
    holder = _ram(node, "ValueChangedIndicator")
    if holder is None:
        return None
    text = "".join(holder.itertext()).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"CDAR message: {what} is not a boolean: {text!r}")
    return text in ("true", "1")


def _characteristic(node: etree._Element, where: str) -> Characteristic:
    amount = _ram(node, "ValueAmount")
    percent = _string(node, "ValuePercent")
    value_at = _datetime(node, "ValueDateTime", f"ValueDateTime (MDT-218) in {where}")
    return Characteristic(
        kind=_token(node, "TypeCode"),
        amount=(_decimal(amount.text or "", f"ValueAmount (MDT-215) in {where}")
                if amount is not None else None),
        currency=amount.get("currencyID") if amount is not None else None,
        percent=(_decimal(percent, f"ValuePercent (MDT-224) in {where}")
                 if percent is not None else None),
        value_date=value_at.date() if value_at is not None else None,
        data_id=_token(node, "ID"), name=_string(node, "Name"),
        location=_string(node, "Location"), value=_string(node, "Value"),
        changed=_indicator(node, f"ValueChangedIndicator (MDT-208) in {where}"))


def _detail(node: etree._Element, where: str) -> StatusDetail:
    return StatusDetail(
        reason_code=_token(node, "ReasonCode"), reason=_string(node, "Reason"),
        action_code=_token(node, "RequestedActionCode"), action=_string(node, "RequestedAction"),
        note=_string(node, "IncludedNote/Content"),
        note_subject=_token(node, "IncludedNote/SubjectCode"),
        characteristics=tuple(
            _characteristic(c, f"{where}, characteristic {i}") for i, c in
            enumerate(node.iterfind(f"{{{_RAM}}}SpecifiedDocumentCharacteristic"), 1)))


def parse(xml: bytes) -> list[LifecycleStatus]:
    """Every status a CDAR message carries, one per referenced invoice.

    Args:
        xml: the message, UTF-8 (a byte order mark is accepted), as a platform delivers it.

    Raises:
        ValueError: not well-formed XML, not a CDAR message, or a datum the BR-FR-CDV rules
            make mandatory is missing or unreadable; the message names which (MDT number).
    """
    try:
        # One parser per call: lxml parsers are not shared between threads.
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as error:
        raise ValueError(f"CDAR message: not well-formed XML: {error}") from error
    if root.tag != f"{{{_RSM}}}CrossDomainAcknowledgementAndResponse":
        raise ValueError(f"not a CDAR message: the root element is {root.tag}")
    context = root.find(f"{{{_RSM}}}ExchangedDocumentContext")
    header = root.find(f"{{{_RSM}}}ExchangedDocument")
    if context is None:
        raise ValueError("CDAR message: ExchangedDocumentContext (MDB-1) is missing")
    if header is None:
        raise ValueError("CDAR message: ExchangedDocument (MDB-2, the header) is missing")
    profile = _need(_token(context, "GuidelineSpecifiedDocumentContextParameter/ID"),
                    "the profile (MDT-3)", "ExchangedDocumentContext")
    message_id = _need(_token(header, "ID"), "the message ID (MDT-4)", "ExchangedDocument")
    issued_at = _datetime(header, "IssueDateTime", "IssueDateTime (MDT-8)")
    if issued_at is None:
        raise ValueError("CDAR message: IssueDateTime (MDG-4, MDT-8) is missing in "
                         "ExchangedDocument")
    issuer = _party(_ram(header, "IssuerTradeParty"))
    if issuer is None:
        raise ValueError("CDAR message: IssuerTradeParty (MDG-16, who posed the status) is "
                         "missing in ExchangedDocument")
    common: dict[str, Any] = {
        "message_id": message_id, "issued_at": issued_at, "issuer": issuer,
        "sender": _party(_ram(header, "SenderTradeParty")),
        "recipients": tuple(p for p in map(_party, header.iterfind(
            f"{{{_RAM}}}RecipientTradeParty")) if p is not None),
        "profile": profile, "message_name": _string(header, "Name"),
        "business_process": _token(context, "BusinessProcessSpecifiedDocumentContextParameter/ID"),
    }
    acknowledgements = root.findall(f"{{{_RSM}}}AcknowledgementDocument")
    if not acknowledgements:
        raise ValueError("CDAR message: AcknowledgementDocument (MDB-3) is missing")
    statuses = []
    for a, ack in enumerate(acknowledgements, 1):
        where = f"AcknowledgementDocument {a}"
        type_code = _need(_token(ack, "TypeCode"), "TypeCode (MDT-77, 23 or 305)", where)
        phase: TPhase
        if type_code == "23":
            phase = "processing"
        elif type_code == "305":
            phase = "transmission"
        else:
            raise ValueError(f"CDAR message: TypeCode (MDT-77) in {where} is {type_code!r}, "
                             "not 23 (processing) or 305 (transmission)")
        status_at = _datetime(ack, "IssueDateTime", f"IssueDateTime (MDT-78) in {where}")
        documents = ack.findall(f"{{{_RAM}}}ReferenceReferencedDocument")
        if not documents:
            raise ValueError(f"CDAR message: ReferenceReferencedDocument (MDG-32, the invoice) "
                             f"is missing in {where}")
        for d, doc in enumerate(documents, 1):
            here = f"{where}, ReferenceReferencedDocument {d}"
            statuses.append(_status(doc, here, common, phase, status_at))
    return statuses


def _status(doc: etree._Element, here: str, common: dict[str, Any], phase: TPhase,
            status_at: datetime | None) -> LifecycleStatus:
    code_text = _need(_token(doc, "ProcessConditionCode"),
                      "the status code ProcessConditionCode (MDT-105)", here)
    if not code_text.isdigit():
        raise ValueError(f"CDAR message: the status code (MDT-105) in {here} is not a number: "
                         f"{code_text!r}")
    code = int(code_text)
    invoice_number = _need(_token(doc, "IssuerAssignedID"),
                           "the invoice number IssuerAssignedID (MDT-87)", here)
    invoice_at = _datetime(doc, "FormattedIssueDateTime",
                           f"FormattedIssueDateTime (MDT-100) in {here}")
    if invoice_at is None and code != 501:
        raise ValueError(f"CDAR message: the invoice date FormattedIssueDateTime (MDG-35, "
                         f"MDT-100) is missing in {here}")
    known = STATUSES.get(code)
    return LifecycleStatus(
        invoice_number=invoice_number,
        invoice_date=invoice_at.date() if invoice_at is not None else None,
        status_code=code,
        status_name=known.fr if known else _string(doc, "ProcessCondition") or "",
        status_at=status_at, phase=phase,
        seller_id=_token(doc, "IssuerTradeParty/GlobalID"),
        invoice_type=_token(doc, "TypeCode"),
        invoice_received_at=_datetime(doc, "ReceiptDateTime",
                                      f"ReceiptDateTime (MDT-95) in {here}"),
        unece_status=_token(doc, "StatusCode"),
        details=tuple(_detail(s, f"{here}, status detail {i}") for i, s in
                      enumerate(doc.iterfind(f"{{{_RAM}}}SpecifiedDocumentStatus"), 1)),
        **common)


def read_totals(xml: bytes) -> dict[str, Decimal]:
    """The amounts of one invoice's status message, keyed like ``crosscheck`` totals.

    ``collected`` (212, MEN) and ``paid`` (211, MPA), VAT included, and the same per VAT rate
    (``collected 20%``); empty for a status without amounts.

    Args:
        xml: a CDAR message, as ``parse`` takes it.

    Raises:
        ValueError: the message is unreadable (see ``parse``) or is about several invoices.
    """
    statuses = parse(xml)
    invoices = sorted({s.invoice_number for s in statuses})
    if len(invoices) > 1:
        raise ValueError(f"CDAR message about {len(invoices)} invoices ({', '.join(invoices)}): "
                         "read each status with parse()")
    totals: dict[str, Decimal] = {}
    for status in statuses:
        for c in status.amounts:
            assert c.amount is not None
            key = "collected" if c.kind == "MEN" else "paid"
            totals[key] = totals.get(key, Decimal(0)) + c.amount
            if c.percent is not None:
                by_rate = f"{key} {number(c.percent)}%"
                totals[by_rate] = totals.get(by_rate, Decimal(0)) + c.amount
    return totals


# --- writing ---------------------------------------------------------------------------------


def _el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str
        ) -> etree._Element:
    prefix, name = tag.split(":")
    element = etree.SubElement(parent, f"{{{NS[prefix]}}}{name}", attrs)
    if text is not None:
        try:
            element.text = text
        except ValueError as error:
            raise ValueError(f"CDAR {name}: {error}: {text!r}") from error
    return element


def _when(parent: etree._Element, tag: str, value: datetime) -> None:
    _el(_el(parent, tag), "udt:DateTimeString", value.strftime("%Y%m%d%H%M%S"), format="204")


def _write_party(parent: etree._Element, tag: str, party: Party) -> None:
    node = _el(parent, tag)
    if party.global_id is not None:
        _el(node, "ram:GlobalID", party.global_id,
            **({"schemeID": party.scheme} if party.scheme else {}))
    if party.name is not None:
        _el(node, "ram:Name", party.name)
    if party.role is not None:
        _el(node, "ram:RoleCode", party.role)
    if party.address is not None:
        _el(_el(node, "ram:URIUniversalCommunication"), "ram:URIID", party.address,
            **({"schemeID": party.address_scheme} if party.address_scheme else {}))


def _write_characteristic(parent: etree._Element, c: Characteristic) -> None:
    node = _el(parent, "ram:SpecifiedDocumentCharacteristic")
    for tag, value in (("ram:ID", c.data_id), ("ram:TypeCode", c.kind)):
        if value is not None:
            _el(node, tag, value)
    if c.changed is not None:
        _el(_el(node, "ram:ValueChangedIndicator"), "udt:IndicatorString",
            "true" if c.changed else "false")
    for tag, value in (("ram:Name", c.name), ("ram:Location", c.location),
                       ("ram:Value", c.value)):
        if value is not None:
            _el(node, tag, value)
    if c.amount is not None:
        _el(node, "ram:ValueAmount", f"{c.amount:.2f}",
            **({"currencyID": c.currency} if c.currency else {}))
    if c.value_date is not None:
        _el(_el(node, "ram:ValueDateTime"), "udt:DateTimeString",
            c.value_date.strftime("%Y%m%d"), format="102")
    if c.percent is not None:
        _el(node, "ram:ValuePercent", f"{c.percent:.2f}")


def _write_detail(parent: etree._Element, detail: StatusDetail, sequence: int) -> None:
    node = _el(parent, "ram:SpecifiedDocumentStatus")
    for tag, value in (("ram:ReasonCode", detail.reason_code), ("ram:Reason", detail.reason),
                       ("ram:RequestedActionCode", detail.action_code),
                       ("ram:RequestedAction", detail.action)):
        if value is not None:
            _el(node, tag, value)
    _el(node, "ram:SequenceNumeric", str(sequence))  # MDT-124-2, BR-FR-CDV-16
    if detail.note is not None or detail.note_subject is not None:
        note = _el(node, "ram:IncludedNote")
        if detail.note is not None:
            _el(note, "ram:Content", detail.note)
        if detail.note_subject is not None:
            _el(note, "ram:SubjectCode", detail.note_subject)
    for c in detail.characteristics:
        _write_characteristic(node, c)


def _problems(s: LifecycleStatus) -> Iterable[str]:
    """What ``build`` refuses: statuses not the seller's, and breaches of BR-FR-CDV."""
    known = STATUSES.get(s.status_code)
    if s.status_code not in BUILDABLE:
        who = ", ".join(sorted(known.sent_by)) if known else "nobody known"
        label = f"{s.status_code} {known.fr}" if known else str(s.status_code)
        yield (f"status {label} is not one build() writes "
               f"(sent by {who}; the seller's: {sorted(BUILDABLE)})")
    if known and s.status_name != known.fr:
        yield f"status name {s.status_name!r} is not {known.fr!r} for {s.status_code}"
    if s.phase != "processing":
        yield "a seller's status belongs to the processing phase (MDT-77 = 23)"
    if s.issuer.role != "SE" or not s.issuer.global_id:
        yield "the issuer (MDG-16) must be the seller: role SE with its SIREN (BR-FR-CDV-07)"
    if not s.seller_id:
        yield "the seller's SIREN (MDT-129) is missing (BR-FR-CDV-13)"
    if s.invoice_date is None:
        yield "the invoice date (MDT-100) is missing (BR-FR-CDV-11)"
    if s.invoice_type is not None and s.invoice_type not in _INVOICE_TYPES:
        yield f"invoice type code {s.invoice_type!r} is not one of BR-FR-04"
    if not s.recipients:
        yield "no recipient (MDG-23)"
    for r in s.recipients:
        if r.role not in _RECIPIENT_ROLES:
            yield f"recipient role {r.role!r} is not one of BR-FR-CDV-CL-04"
        elif r.role not in ("WK", "DFH") and not r.address:
            yield (f"recipient {r.global_id or r.name} ({r.role}) has no electronic address "
                   "(MDT-73, BR-FR-CDV-08)")
    if s.business_process is None and s.profile == PROFILE:
        yield "the business process (MDT-2) is missing (BR-FR-CDV-CL-01)"
    ids = [("message ID (MDT-4)", s.message_id), ("invoice number (MDT-87)", s.invoice_number),
           ("seller SIREN (MDT-129)", s.seller_id)]
    for party in (s.issuer, *s.recipients, *((s.sender,) if s.sender else ())):
        ids += [("party ID", party.global_id), ("electronic address", party.address)]
    for what, value in ids:
        if value is not None and (not value or _collapse(value) != value):
            yield (f"{what} {value!r} is empty or has leading, trailing or repeated whitespace, "
                   "which an XML token does not keep")
    for when, what in ((s.issued_at, "issued_at"), (s.status_at, "status_at"),
                       (s.invoice_received_at, "invoice_received_at")):
        if when is not None and (when.tzinfo is not None or when.microsecond or when.year < 1000):
            yield f"{what} {when} must be a local time to the second (format 204 has no zone)"
    for d in s.details:
        if d.reason_code is not None and d.reason_code not in REASON_CODES:
            yield f"reason code {d.reason_code!r} is not one of BR-FR-CDV-CL-09"
        if d.action_code is not None and d.action_code not in _ACTION_CODES:
            yield f"action code {d.action_code!r} is not one of BR-FR-CDV-CL-10"
        for c in d.characteristics:
            if c.kind is not None and c.kind not in _CHARACTERISTIC_CODES:
                yield f"characteristic code {c.kind!r} is not one of BR-FR-CDV-CL-11"
            if c.amount is not None and (not c.amount.is_finite()
                                         or c.amount != c.amount.quantize(CENT)):
                yield f"amount {c.amount} is not to the cent"
            if c.percent is not None and (not c.percent.is_finite() or c.percent < 0
                                          or c.percent != c.percent.quantize(CENT)):
                yield f"percentage {c.percent} is not a positive number with 2 decimals at most"
    if s.status_code == 212:
        men = [c for c in s.characteristics if c.kind == "MEN"]
        if not men or any(c.amount is None or c.percent is None for c in men):
            yield ("212 Encaissée needs the amount collected per VAT rate: MEN blocks with "
                   "MDT-215 and MDT-224 (BR-FR-CDV-14)")
    if s.status_code == 209 and not s.characteristics:
        yield "209 Complétée needs the completed data (MDG-43, e.g. MAJ)"


def build(status: LifecycleStatus) -> bytes:
    """The CDAR message (UTF-8 bytes) of a status the seller poses itself.

    Passes the CDAR D22B XSD and the BR-FR-CDV rules v1.4.0.03. ``seller_status`` makes the
    ``status`` with the parties and identifiers the examples of XP Z12-012 use.

    Args:
        status: a status in ``BUILDABLE`` (209 Complétée, 212 Encaissée, 220 Annulée).

    Raises:
        ValueError: listing every datum that is missing or that the rules refuse.
    """
    problems = list(_problems(status))
    if problems:
        raise ValueError(f"CDAR {status.status_code} for invoice {status.invoice_number!r}: "
                         + "; ".join(problems))
    assert status.invoice_date is not None
    root = etree.Element(f"{{{_RSM}}}CrossDomainAcknowledgementAndResponse", nsmap=NS)
    context = _el(root, "rsm:ExchangedDocumentContext")
    if status.business_process is not None:
        _el(_el(context, "ram:BusinessProcessSpecifiedDocumentContextParameter"), "ram:ID",
            status.business_process)
    _el(_el(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID",
        status.profile)

    header = _el(root, "rsm:ExchangedDocument")
    _el(header, "ram:ID", status.message_id)
    if status.message_name is not None:
        _el(header, "ram:Name", status.message_name)
    _when(header, "ram:IssueDateTime", status.issued_at)
    _write_party(header, "ram:SenderTradeParty", status.sender or Party(role="WK"))
    _write_party(header, "ram:IssuerTradeParty", status.issuer)
    for recipient in status.recipients:
        _write_party(header, "ram:RecipientTradeParty", recipient)

    ack = _el(root, "rsm:AcknowledgementDocument")
    _el(_el(ack, "ram:MultipleReferencesIndicator"), "udt:Indicator", "false")
    _el(ack, "ram:TypeCode", _PHASE_CODE[status.phase])
    if status.status_at is not None:
        _when(ack, "ram:IssueDateTime", status.status_at)
    doc = _el(ack, "ram:ReferenceReferencedDocument")
    _el(doc, "ram:IssuerAssignedID", status.invoice_number)
    if status.unece_status is not None:
        _el(doc, "ram:StatusCode", status.unece_status)
    if status.invoice_type is not None:
        _el(doc, "ram:TypeCode", status.invoice_type)
    if status.invoice_received_at is not None:
        _when(doc, "ram:ReceiptDateTime", status.invoice_received_at)
    _el(_el(doc, "ram:FormattedIssueDateTime"), "qdt:DateTimeString",
        status.invoice_date.strftime("%Y%m%d"), format="102")
    _el(doc, "ram:ProcessConditionCode", str(status.status_code))
    _el(doc, "ram:ProcessCondition", status.status_name)
    _el(_el(doc, "ram:IssuerTradeParty"), "ram:GlobalID", status.seller_id or "",
        schemeID="0002")
    for sequence, detail in enumerate(status.details, 1):
        _write_detail(doc, detail, sequence)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def seller_status(
    code: int,
    *,
    invoice_number: str,
    invoice_date: date,
    seller: Party,
    buyer: Party,
    at: datetime,
    collected: Sequence[tuple[Decimal, Decimal]] = (),
    currency: str = "EUR",
    invoice_type: str = "380",
    details: Sequence[StatusDetail] = (),
    vat_on_receipts: bool = True,
    invoice_received_at: datetime | None = None,
    message_id: str | None = None,
    ppf: Party = PPF,
) -> LifecycleStatus:
    """A status the seller poses, with the header of the official examples.

    Sender: the seller's platform, by role only (WK; platforms stay anonymous end to end).
    Issuer: the seller (SE). Recipients: the buyer (BY), and the PPF (DFH) for a 212 when VAT
    is due on receipts (XP Z12-014: otherwise "Encaissée" goes to the buyer only).

    Args:
        code: 212 Encaissée, 220 Annulée or 209 Complétée (``BUILDABLE``).
        invoice_number: BT-1 of the invoice the status is about.
        invoice_date: BT-2 of that invoice.
        seller: the seller's SIREN (scheme 0002) and name; the role is set to SE.
        buyer: the buyer's SIREN, name and electronic address (MDT-73); the role is set to BY.
        at: when the status is posed (MDT-78, and MDT-8): local time, to the second.
        collected: for 212, ``(vat_rate, amount collected VAT included)`` per rate, to the cent.
        currency: of the amounts collected.
        invoice_type: BT-3 (380 invoice, 381 credit note, 386 down payment ...).
        details: further status details (a 209's data, a 220's reason ...), after the amounts.
        vat_on_receipts: a 212 also goes to the PPF (it feeds the VAT pre-filling).
        invoice_received_at: when the invoice was "Déposée" (MDT-95), if known.
        message_id: MDT-4; by default ``{number}_{code}_{at}#{type}_{date}`` as the examples.
        ppf: the PPF as recipient.
    """
    known = STATUSES.get(code)
    amounts = tuple(Characteristic(kind="MEN", amount=amount, currency=currency, percent=rate,
                                   changed=False) for rate, amount in collected)
    recipients = [replace(buyer, role="BY")]
    if code == 212 and vat_on_receipts:
        recipients.append(ppf)
    return LifecycleStatus(
        invoice_number=invoice_number, invoice_date=invoice_date, status_code=code,
        status_name=known.fr if known else str(code),
        message_id=message_id or (f"{invoice_number}_{code}_{at:%Y%m%d%H%M%S}"
                                  f"#{invoice_type}_{invoice_date:%Y%m%d}"),
        issued_at=at, status_at=at, phase="processing",
        issuer=replace(seller, role="SE", address=None, address_scheme=None),
        recipients=tuple(recipients), seller_id=seller.global_id, sender=Party(role="WK"),
        invoice_type=invoice_type, invoice_received_at=invoice_received_at,
        details=((StatusDetail(characteristics=amounts),) if amounts else ()) + tuple(details),
        unece_status=known.unece if known else None)



def _build_one(statuses: Sequence[LifecycleStatus], context: BuildContext) -> bytes:
    """The registry's ``build``: one status message, as ``build`` writes it."""
    return build(one(statuses))


def _totals_by_invoice(xml: bytes) -> dict[str, dict[str, Decimal]]:
    """The registry's ``read_totals``: the message's amounts, under its invoice number."""
    return {parse(xml)[0].invoice_number: read_totals(xml)}


FORMAT = register(EInvoiceFormat(
    name="cdar", title="CDAR lifecycle message", grouping="message",
    media_type="application/xml", suffix=".cdar.xml", build=_build_one,
    read_totals=_totals_by_invoice, totals=frozenset(), selectable=False))
