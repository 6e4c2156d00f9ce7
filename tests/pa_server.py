"""A real accredited platform ("PA") on loopback: the AFNOR XP Z12-013 Flow and Directory APIs.

``PaServer`` is a WSGI application served by werkzeug on 127.0.0.1 in a thread of the test
process, so a test sets its knobs directly. It serves three things:

- ``POST /oauth/token``: OAuth2 client credentials (RFC 6749 4.4; client authentication by
  HTTP Basic or by form fields). The standard only says "a token URL" (XP Z12-013 4.2), so
  this endpoint is checked by hand against RFC 6749, not against an OpenAPI document.
- ``/flow-service/v1/...``: the Flow API of annex A (``AFNOR-Flow_Service-1.1.0.json``).
- ``/directory-service/v1/...``: the Directory API of annex B
  (``AFNOR-Directory_Service-1.1.0.json``); the lookups a sender needs are implemented, the
  directory-maintenance routes answer 501 (a status the document lists).

Every Flow and Directory request and every response goes through openapi-core
(``OpenAPI.unmarshal_request`` / ``unmarshal_response``) with the published documents; the
only changes made to them are one more ``servers`` entry for this host and the two
corrections of ``ERRATA`` (the 1.1.0 documents contradict themselves in two schemas). A
request that does not conform is answered 400 with the validator's message; a response that
does not conform is sent anyway; both land in ``violations``. The ``pa_server`` fixture
fails the test at teardown if any did, so a client that drifts from the documents, or a
server handler that does, cannot pass. Authentication comes first: a missing or unknown
bearer is a 401, not a violation, because a token expiring in the middle of a run is
ordinary.

What the standard says, and this server does:

- ``trackingId`` is stored but its uniqueness is NOT checked ("Le Fournisseur API ne doit pas
  contrôler l'unicité de cet identifiant", XP Z12-013 5.2.2): a second deposit with the same
  trackingId creates a second flow. The server notes it in ``duplicates`` so tests can prove
  a client never deposits twice. The same file (same sha256) deposited again is also a new
  flow, acknowledged ``Error`` with reason ``AlreadyExistingFlow`` (table 4).
- ``sha256`` in flowInfo is checked against the file (5.2.3); a mismatch is a 422
  ``ChecksumMismatch``. The response carries the computed sha256 (5.2.5).
- ``POST /v1/flows/search`` needs at least one criterion, ANDs them, ORs list values, and
  sorts by a strictly increasing ``updatedAt``; paging is by ``updatedAfter`` (5.3).
- ``GET /v1/flows/{flowId}``: ``docType=Metadata`` (default) is the Flow JSON, ``Original``
  the file as ``application/octet-stream`` with ``Content-Disposition: attachment;filename=``.
- Directory: only active lines are returned (6.2 note 1: effective date before today); a
  SIREN absent from the directory is a 404. A line whose recipient chose no PA (XP Z12-014
  4.1.4.4) is returned with ``platform.platformStatus = "Disabled"``.

Knobs (all reset by ``reset()``, which the fixture calls before each test): ``add_company``,
``reject``, ``throttle``, ``revoke_tokens``, ``publish_status``, ``answer_delay_s``,
``token_lifetime_s``; records: ``deposits``,
``duplicates``, ``exchanges``, ``token_requests``, ``violations`` (``pop_violations()`` for
a test that sends a bad request on purpose).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urljoin

import pytest
from lxml import etree
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.validation.request.exceptions import ParameterValidationError
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from pipeline.settings import SHARED_DIR

__all__ = ["PaServer", "Deposit", "Violation", "Exchange", "DirectoryLine", "Company",
           "lifecycle_message", "LIFECYCLE_EXAMPLES", "pa_platform", "pa_server",
           "CLIENT_ID", "CLIENT_SECRET", "basic_auth", "ERRATA"]

FR_REFORM = SHARED_DIR / "standards" / "fr-reform"
API_DOCS = {"flow": FR_REFORM / "api" / "AFNOR-Flow_Service-1.1.0.json",
            "directory": FR_REFORM / "api" / "AFNOR-Directory_Service-1.1.0.json"}
BASES = {"flow": "/flow-service", "directory": "/directory-service"}
TOKEN_PATH = "/oauth/token"
CLIENT_ID, CLIENT_SECRET = "pipeline-tests", "s3cret-for-tests"

RSM = "urn:un:unece:uncefact:data:standard:CrossDomainAcknowledgementAndResponse:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
NS = {"rsm": RSM, "ram": RAM, "udt": UDT, "qdt": QDT}

LIFECYCLE_EXAMPLES = {
    200: "UC1_F202500003_01-CDV-200_Deposee.xml",
    202: "UC1_F202500003_02-CDV-202_Recue.xml",
    203: "UC1_F202500003_03-CDV-203_Mise_a_disposition.xml",
    204: "UC1_F202500003_04-CDV-204_Prise_en_charge.xml",
    205: "UC1_F202500003_05-CDV-205_Approuvee.xml",
    207: "UC4_F202500006_04-CDV-207_En_litige.xml",
    210: "UC3_F202500005_04-CDV-210_Refusee.xml",
    211: "UC1_F202500003_06-CDV-211_Paiement_transmis.xml",
    212: "UC1_F202500003_07-CDV-212_Encaissee.xml",
    213: "UC2_F202500004_02-CDV-213_Rejetee.xml",
    220: "UC4b_F202500006_05-CDV-220_Annulee.xml",
}
"""The official example (XP Z12-014 annex B) each published status is built from."""

_EXAMPLE_SELLER, _EXAMPLE_BUYER = ("100000009", "VENDEUR"), ("200000008", "ACHETEUR")
_TIMESTAMP = re.compile(r"^\d{14}$")


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deposit:
    """One flow created by ``POST /v1/flows`` (answered 202)."""

    flow_id: str
    tracking_id: str | None
    name: str | None
    syntax: str
    profile: str | None
    processing_rule: str | None
    sha256: str
    data: bytes
    invoice_number: str | None
    """BT-1 read from the file (CII, UBL, Factur-X or CDAR), when it could be read."""
    duplicate_of: str | None = None
    """The flowId of an earlier deposit with the same trackingId or the same bytes."""


@dataclass(frozen=True)
class Violation:
    """A request or a response that does not conform to the OpenAPI document (or RFC 6749)."""

    api: str
    direction: str  # "request" or "response"
    method: str
    path: str
    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.direction} {self.method} {self.path} ({self.status}): {self.message}"


@dataclass(frozen=True)
class Exchange:
    """One request the server answered, in arrival order."""

    method: str
    path: str
    status: int


@dataclass(frozen=True)
class DirectoryLine:
    """An addressing line: ``SIREN``, ``SIREN_SUFFIX``, ``SIREN_SIRET`` or
    ``SIREN_SIRET_ROUTINGCODE`` (XP Z12-014 4.1.4.2)."""

    addressing_identifier: str
    platform_enabled: bool = True
    """False: the recipient chose no PA (the line points at the PPF default, 9998)."""
    effective_from: date | None = None
    """A line takes effect the day after; a line not yet in effect is never returned."""

    def split(self) -> tuple[str, str | None, str | None, str | None]:
        """(siren, siret, routing identifier, suffix) of the identifier."""
        siren, _, rest = self.addressing_identifier.partition("_")
        if not rest:
            return siren, None, None, None
        head, _, tail = rest.partition("_")
        if re.fullmatch(r"\d{14}", head):
            return siren, head, tail or None, None
        return siren, None, None, rest


@dataclass
class Company:
    """A legal unit in the directory and its addressing lines."""

    siren: str
    name: str
    lines: list[DirectoryLine]
    entity_type: str = "PrivateVatRegistered"


@dataclass
class _Flow:
    flow_id: str
    flow_type: str
    direction: str
    syntax: str
    data: bytes
    submitted_at: datetime
    updated_at: datetime
    tracking_id: str | None = None
    name: str | None = None
    profile: str | None = None
    processing_rule: str | None = None
    processing_rule_source: str | None = None
    ack_status: str = "Ok"
    ack_details: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "submittedAt": _iso(self.submitted_at), "updatedAt": _iso(self.updated_at),
            "flowId": self.flow_id, "trackingId": self.tracking_id, "flowType": self.flow_type,
            "processingRule": self.processing_rule,
            "processingRuleSource": self.processing_rule_source,
            "flowDirection": self.direction, "flowSyntax": self.syntax,
            "flowProfile": self.profile,
            "acknowledgement": {"status": self.ack_status,
                                **({"details": self.ack_details} if self.ack_details else {})},
        }
        return {k: v for k, v in body.items() if v is not None}


@dataclass
class _Rejection:
    status: int
    reason_code: str
    message: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- the OpenAPI documents -------------------------------------------------------------------


@dataclass(frozen=True)
class _Erratum:
    api: str
    path: tuple[str, ...]
    key: str
    published: Any
    corrected: Any
    why: str


ERRATA = (
    _Erratum("flow", ("components", "schemas", "ReasonCode"), "oneOf", "oneOf", "anyOf",
             "ReasonCode is oneOf [ReasonCodeEnum, string]: every standard code (table 4, "
             "e.g. AlreadyExistingFlow) matches both, so no standard code could validate"),
    _Erratum("directory", ("components", "schemas", "platformStatus"), "maxLength", 7, 8,
             "platformStatus is enum [Enabled, Disabled] with maxLength 7: 'Disabled' has 8"),
)
"""Self-contradictions of the published documents (version 1.1.0), corrected when loading.
Each correction checks the published text first, so a new version of a document shows."""


def _apply(doc: dict[str, Any], erratum: _Erratum) -> None:
    node = doc
    for key in erratum.path:
        node = node[key]
    if erratum.key == erratum.published:  # a renamed key (oneOf -> anyOf)
        if erratum.key not in node:
            raise RuntimeError(f"erratum no longer applies, remove it: {erratum.why}")
        node[erratum.corrected] = node.pop(erratum.key)
    elif node.get(erratum.key) == erratum.published:
        node[erratum.key] = erratum.corrected
    else:
        raise RuntimeError(f"erratum no longer applies, remove it: {erratum.why}")


@cache
def _document(api: str) -> tuple[OpenAPI, dict[str, Any]]:
    """The published document with the ``ERRATA`` corrected and one more ``servers`` entry for
    this host (a relative URL, so only the path prefix is compared). ``OpenAPI.from_dict``
    validates the document itself."""
    doc = json.loads(API_DOCS[api].read_text(encoding="utf-8"))
    for erratum in ERRATA:
        if erratum.api == api:
            _apply(doc, erratum)
    doc["servers"] = [*doc.get("servers", []),
                      {"url": BASES[api], "description": "the test PA on loopback"}]
    return OpenAPI.from_dict(doc), doc


def _describe(error: Exception) -> str:
    """The validator's message, with each JSON-schema error and where it is."""
    cause = error.__cause__
    schema_errors = getattr(cause, "schema_errors", None) or getattr(error, "schema_errors", None)
    if schema_errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                            for e in schema_errors)
        label = str(error) if isinstance(error, ParameterValidationError) else type(error).__name__
        return f"{label}: {details}"
    text = str(error) or type(error).__name__
    return f"{text} ({cause})" if cause is not None and str(cause) not in text else text


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def _multipart(request: Request) -> list[_Part]:
    """The parts of a multipart body with their own headers (werkzeug's form parser keeps
    no Content-Type for fields, and the document gives one for ``flowInfo``)."""
    boundary = request.mimetype_params.get("boundary", "")
    decoder = MultipartDecoder(boundary.encode())
    decoder.receive_data(request.get_data())
    decoder.receive_data(None)
    parts: list[_Part] = []
    current: tuple[str, str | None, str | None] | None = None
    chunks: list[bytes] = []
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData | Epilogue):
            return parts
        if isinstance(event, Field | File):
            filename = event.filename if isinstance(event, File) else None
            current, chunks = (event.name, filename, event.headers.get("Content-Type")), []
        elif isinstance(event, Data) and current is not None:
            chunks.append(event.data)
            if not event.more_data:
                parts.append(_Part(*current, b"".join(chunks)))
                current = None


def _encoding_problems(doc: dict[str, Any], parts: list[_Part]) -> list[str]:
    """Parts whose Content-Type is not the one the document's ``encoding`` gives.

    openapi-core decodes each part with the documented type whatever the part says, so
    this check reads the part headers against the same document."""
    encoding = (doc["components"]["requestBodies"]["FlowPostRequest"]["content"]
                ["multipart/form-data"].get("encoding", {}))
    problems = []
    for part in parts:
        if part.name not in encoding or "contentType" not in encoding[part.name]:
            continue
        allowed = [t.strip() for t in encoding[part.name]["contentType"].split(",")]
        given = (part.content_type or "").split(";")[0].strip().lower()
        if given not in allowed:
            problems.append(f"part '{part.name}' has Content-Type '{part.content_type}', "
                            f"the document's encoding says {' or '.join(allowed)}")
    return problems


# -- lifecycle messages ----------------------------------------------------------------------

_STATUS_ORDER = ["ReferenceDateTime", "ConditionCode", "ReasonCode", "Reason", "Condition",
                 "ProcessConditionCode", "ProcessCondition", "ReasonInformationCode",
                 "ReasonInformation", "ReasonClassificationCode", "ReasonClassification",
                 "RequestedActionCode", "RequestedAction", "InvalidInformation",
                 "ValidInformation", "SequenceNumeric", "IncludedNote",
                 "SpecifiedDocumentCharacteristic"]
"""Children of ram:DocumentStatusType in the CDAR D22B XSD, in sequence order."""


def _put(parent: etree._Element, local: str, text: str) -> None:
    """Set a ram child's text, creating it at its place in the XSD sequence."""
    existing = parent.find(f"ram:{local}", NS)
    if existing is not None:
        existing.text = text
        return
    rank = _STATUS_ORDER.index(local)
    position = 0
    for index, child in enumerate(parent):
        name = etree.QName(child).localname
        if name in _STATUS_ORDER and _STATUS_ORDER.index(name) < rank:
            position = index + 1
    element = etree.Element(f"{{{RAM}}}{local}")
    element.text = text
    parent.insert(position, element)


def lifecycle_message(code: int, invoice_number: str, issue_date: date, *,
                      at: datetime | None = None, reason_code: str | None = None,
                      reason: str | None = None, amount: Decimal | None = None,
                      seller: tuple[str, str] = ("100000009", "VENDEUR"),
                      buyer: tuple[str, str] = ("200000008", "ACHETEUR")) -> bytes:
    """A CDAR lifecycle message for one invoice, made from the official example of ``code``.

    The invoice number (MDT-87), its date (MDT-100), the parties' SIRENs, names and
    electronic addresses, the message ids and times are substituted; ``reason_code`` /
    ``reason`` set MDT-113/114 (created if the example has none); ``amount`` replaces the
    example's amounts (211 MPA, 212 MEN). Every status detail gets a sequence number
    (MDT-124-2): the examples predate BR-FR-CDV-16 of the 1.4.0.03 rules.

    Args:
        code: lifecycle status (200, 202-205, 207, 210-213, 220).
        invoice_number: BT-1 of the invoice the status is about.
        issue_date: BT-2 of that invoice.
        at: when the status was set (default: now, UTC).
        reason_code: a reason code (e.g. ``DOUBLON``, ``TX_TVA_ERR``, ``NON_TRANSMISE``).
        reason: its text.
        amount: the amount of a 211/212 status.
        seller: (SIREN, name) of the seller.
        buyer: (SIREN, name) of the buyer.
    """
    if code not in LIFECYCLE_EXAMPLES:
        raise ValueError(f"no official example for status {code}; known: "
                         f"{sorted(LIFECYCLE_EXAMPLES)}")
    parser = etree.XMLParser(remove_comments=True, resolve_entities=False, no_network=True)
    root = etree.parse(str(FR_REFORM / "examples" / "lifecycle" / LIFECYCLE_EXAMPLES[code]),
                       parser).getroot()
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    day = issue_date.strftime("%Y%m%d")
    sirens = {_EXAMPLE_SELLER[0]: seller[0], _EXAMPLE_BUYER[0]: buyer[0]}
    names = {_EXAMPLE_SELLER[1]: seller[1], _EXAMPLE_BUYER[1]: buyer[1]}
    for element in root.iter(f"{{{RAM}}}GlobalID"):
        element.text = sirens.get(element.text or "", element.text)
    for element in root.iter(f"{{{RAM}}}Name"):
        element.text = names.get(element.text or "", element.text)
    for element in root.iter(f"{{{RAM}}}URIID"):
        head, sep, tail = (element.text or "").partition("_")
        element.text = sirens.get(head, head) + sep + tail
    document = root.find("rsm:ExchangedDocument", NS)
    _set(document, "ram:ID", f"{invoice_number}_{code}_{stamp}#380_{day}")
    _set(document, "ram:Name", f"{invoice_number}-CDV-{code}")
    acknowledgement = root.find("rsm:AcknowledgementDocument", NS)
    for element in root.iter(f"{{{UDT}}}DateTimeString"):
        if _TIMESTAMP.match(element.text or ""):
            element.text = stamp
    reference = acknowledgement.find("ram:ReferenceReferencedDocument", NS)
    _set(reference, "ram:IssuerAssignedID", invoice_number)
    _set(reference, "ram:FormattedIssueDateTime/qdt:DateTimeString", day)
    statuses = reference.findall("ram:SpecifiedDocumentStatus", NS)
    if reason_code is not None:
        if not statuses:
            statuses = [etree.SubElement(reference, f"{{{RAM}}}SpecifiedDocumentStatus")]
        _put(statuses[0], "ReasonCode", reason_code)
        if reason is not None:
            _put(statuses[0], "Reason", reason)
    if amount is not None:
        for element in reference.iter(f"{{{RAM}}}ValueAmount"):
            element.text = str(amount)
    for sequence, status in enumerate(statuses, start=1):
        if status.find("ram:SequenceNumeric", NS) is None:
            _put(status, "SequenceNumeric", str(sequence))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _set(parent: etree._Element | None, path: str, text: str) -> None:
    element = parent.find(path, NS) if parent is not None else None
    if element is None:
        raise ValueError(f"the lifecycle example has no {path}")
    element.text = text


def _invoice_number(data: bytes) -> str | None:
    """BT-1 of a CII, UBL or CDAR file, or of the CII inside a Factur-X PDF."""
    if data.startswith(b"%PDF"):
        from pypdf import PdfReader
        try:
            attachments = PdfReader(io.BytesIO(data)).attachments
        except Exception:  # noqa: BLE001 - an unreadable PDF has no number, that is all
            return None
        xml = next((content[0] for name, content in attachments.items()
                    if name.lower().endswith(".xml") and content), None)
        return _invoice_number(xml) if xml else None
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    for path in ("*[local-name()='ExchangedDocument']/*[local-name()='ID']",  # CII
                 "*[local-name()='ID']",  # UBL
                 "*[local-name()='AcknowledgementDocument']/*[local-name()="
                 "'ReferenceReferencedDocument']/*[local-name()='IssuerAssignedID']"):  # CDAR
        found = root.xpath(path)
        if found and (found[0].text or "").strip():
            return str(found[0].text).strip()
    return None


# -- the server ------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


Handler = Callable[[Request, dict[str, str]], Response]


class PaServer:
    """The platform: OAuth token endpoint, Flow API and Directory API on one loopback port."""

    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET,
                 token_lifetime_s: int = 300) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self._default_lifetime_s = token_lifetime_s
        self._lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._last_moment = datetime.now(UTC)
        self.url = ""
        self.reset()

    # -- life ------------------------------------------------------------------------------

    def start(self) -> PaServer:
        """Listen on a free loopback port (bound here, so no other process takes it)."""
        for api in API_DOCS:
            _document(api)  # load and validate the documents before the first request
        self._server = make_server("127.0.0.1", 0, self, threaded=True,
                                   request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="pa-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def flow_url(self) -> str:
        """Base URL of the Flow API (paths ``/v1/...`` follow)."""
        return self.url + BASES["flow"]

    @property
    def directory_url(self) -> str:
        """Base URL of the Directory API."""
        return self.url + BASES["directory"]

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    # -- knobs -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget flows, directory, knobs, tokens and records (the fixture does it per test)."""
        with self._lock:
            self._flows: dict[str, _Flow] = {}
            self._tokens: dict[str, float] = {}
            self._rejections: dict[str, _Rejection] = {}
            self._throttle: list[tuple[int, str | None]] = []
            self.companies: dict[str, Company] = {}
            self.deposits: list[Deposit] = []
            self.exchanges: list[Exchange] = []
            self.violations: list[Violation] = []
            self.token_requests = 0
            self.answer_delay_s = 0.0
            """How long an API answer waits once the request was handled (a flow stored, its
            202 late: a client that times out does not know whether it was deposited)."""
            self.token_lifetime_s = self._default_lifetime_s
            """Seconds a new token lives (``expires_in``)."""

    def add_company(self, siren: str, name: str, addresses: Sequence[str] | None = None, *,
                    platform_enabled: bool = True, effective_from: date | None = None,
                    entity_type: str = "PrivateVatRegistered") -> Company:
        """Put a legal unit in the directory with its addressing lines.

        Args:
            siren: the 9-digit SIREN.
            name: business name.
            addresses: addressing identifiers (``SIREN``, ``SIREN_SUFFIX``, ``SIREN_SIRET``,
                ``SIREN_SIRET_CODE``); None means one line, the SIREN itself; ``()`` none.
            platform_enabled: False when the recipient chose no PA for these lines.
            effective_from: lines take effect the day after (a future date hides them).
            entity_type: ``PrivateVatRegistered`` or ``Public``.
        """
        identifiers = [siren] if addresses is None else list(addresses)
        company = Company(siren, name, [DirectoryLine(a, platform_enabled, effective_from)
                                        for a in identifiers], entity_type)
        with self._lock:
            self.companies[siren] = company
        return company

    def reject(self, key: str, reason_code: str = "InvalidSchema", message: str | None = None,
               status: int = 422) -> None:
        """Refuse every deposit whose invoice number (BT-1 read from the file), trackingId or
        name is ``key``: ``status`` with the Flow API's Error body, ``errorCode`` being the
        reason code (table 4 of XP Z12-013: InvalidSchema, FlowTypeError, ...)."""
        with self._lock:
            self._rejections[key] = _Rejection(
                status, reason_code, message or f"flow refused by the test platform ({key})")

    def throttle(self, times: int = 1, status: int = 429, retry_after: str | None = "1") -> None:
        """Answer the next ``times`` Flow/Directory requests ``status`` (429 or 503) with
        ``Retry-After: retry_after`` (None: no header). Requests are validated first."""
        with self._lock:
            self._throttle.extend([(status, retry_after)] * times)

    def revoke_tokens(self) -> None:
        """Forget every token issued: the next API call answers 401."""
        with self._lock:
            self._tokens.clear()

    def pop_violations(self) -> list[Violation]:
        """Take the violations recorded so far (for a test that sends bad requests on purpose)."""
        with self._lock:
            taken, self.violations = self.violations, []
        return taken

    @property
    def duplicates(self) -> list[Deposit]:
        """Deposits whose trackingId or bytes had been deposited before."""
        return [d for d in self.deposits if d.duplicate_of is not None]

    def publish_status(self, invoice_number: str, issue_date: date | str, code: int,
                       reason_code: str | None = None, *, reason: str | None = None,
                       amount: Decimal | None = None,
                       seller: tuple[str, str] = ("100000009", "VENDEUR"),
                       buyer: tuple[str, str] = ("200000008", "ACHETEUR"),
                       flow_type: str = "CustomerInvoiceLC", direction: str = "In") -> str:
        """Make a lifecycle flow (CDAR) about one invoice visible to search and download.

        Returns its flowId. See ``lifecycle_message`` for the arguments of the message; a
        status about an outgoing invoice is by default a ``CustomerInvoiceLC`` coming ``In``.
        """
        day = date.fromisoformat(issue_date) if isinstance(issue_date, str) else issue_date
        with self._lock:
            moment = self._now()
            data = lifecycle_message(code, invoice_number, day, at=moment,
                                     reason_code=reason_code, reason=reason, amount=amount,
                                     seller=seller, buyer=buyer)
            flow = _Flow(str(uuid.uuid4()), flow_type, direction, "CDAR", data, moment, moment,
                         name=f"{invoice_number}-CDV-{code}.xml",
                         processing_rule="NotApplicable", processing_rule_source="Computed")
            self._flows[flow.flow_id] = flow
        return flow.flow_id

    def flow_file(self, flow_id: str) -> bytes:
        """The stored file of a flow (to look behind the API's back)."""
        return self._flows[flow_id].data

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            if request.path == TOKEN_PATH:
                response = self._token(request)
            elif request.path.startswith(BASES["flow"] + "/"):
                response = self._api("flow", request)
            elif request.path.startswith(BASES["directory"] + "/"):
                response = self._api("directory", request)
            else:
                response = Response(status=404)
        except Exception:  # noqa: BLE001 - a bug of the test server must fail the test too
            self._violation("server", "response", request, 500, traceback.format_exc())
            response = Response(status=500)
        with self._lock:
            self.exchanges.append(Exchange(request.method, request.path, response.status_code))
        return response(environ, start_response)

    def _now(self) -> datetime:
        """A strictly increasing clock: ``updatedAt`` is the paging key of search (5.3.2)."""
        with self._lock:
            moment = max(datetime.now(UTC), self._last_moment + timedelta(microseconds=1))
            self._last_moment = moment
            return moment

    def _violation(self, api: str, direction: str, request: Request, status: int,
                   message: str) -> None:
        with self._lock:
            self.violations.append(Violation(api, direction, request.method, request.path,
                                             status, message))

    # -- OAuth2 ----------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        """RFC 6749 4.4 (client credentials) with the error answers of 5.2."""
        with self._lock:
            self.token_requests += 1
        if request.method != "POST" or request.mimetype != "application/x-www-form-urlencoded":
            problem = (f"{request.method} {request.mimetype or 'without a body'}: RFC 6749 "
                       "3.2 wants POST application/x-www-form-urlencoded")
            self._violation("oauth", "request", request, 400, problem)
            return _oauth_error(400, "invalid_request", problem)
        if request.form.get("grant_type") != "client_credentials":
            problem = f"grant_type {request.form.get('grant_type')!r}"
            self._violation("oauth", "request", request, 400, problem)
            return _oauth_error(400, "unsupported_grant_type", problem)
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            client_id, secret = auth.username, auth.password
        else:
            client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
        if (client_id, secret) != (self.client_id, self.client_secret):
            response = _oauth_error(401, "invalid_client", "unknown client or wrong secret")
            response.headers["WWW-Authenticate"] = 'Basic realm="pa"'
            return response
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime_s
        return Response(json.dumps({"access_token": token, "token_type": "Bearer",
                                    "expires_in": self.token_lifetime_s}),
                        status=200, mimetype="application/json",
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return expiry is not None and expiry > time.monotonic()

    # -- the two APIs ----------------------------------------------------------------------

    def _api(self, api: str, request: Request) -> Response:
        openapi, doc = _document(api)
        oreq = WerkzeugOpenAPIRequest(request)
        try:
            found = APICallPathFinder(openapi.spec).find(oreq.method,
                                                         urljoin(oreq.host_url, oreq.path))
        except PathError as error:
            self._violation(api, "request", request, 404, _describe(error))
            return self._error(api, 404, "MISSING_RESOURCE", _describe(error))
        operation = str(found.operation["operationId"])
        if not self._authenticated(request):
            response = self._error(api, 401, "INVALID_TOKEN",
                                   "a valid bearer token is required (XP Z12-013 4.2)")
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        else:
            response = self._answer(api, doc, operation, request, oreq,
                                    dict(found.path_result.variables))
        result = openapi.unmarshal_response(oreq, WerkzeugOpenAPIResponse(response))
        for problem in result.errors:
            self._violation(api, "response", request, response.status_code, _describe(problem))
        return response

    def _answer(self, api: str, doc: dict[str, Any], operation: str, request: Request,
                oreq: WerkzeugOpenAPIRequest, variables: dict[str, str]) -> Response:
        openapi, _ = _document(api)
        problems = [_describe(e) for e in openapi.unmarshal_request(oreq).errors]
        if operation == "createFlow" and not problems:
            problems = _encoding_problems(doc, _multipart(request))
        if problems:
            message = "; ".join(problems)
            self._violation(api, "request", request, 400, message)
            return self._error(api, 400, "INVALID_REQUEST", message)
        with self._lock:
            throttled = self._throttle.pop(0) if self._throttle else None
        if throttled is not None:
            status, retry_after = throttled
            response = self._error(api, status, "TOO_MANY_REQUESTS" if status == 429
                                   else "RESOURCE_ERROR", "the test platform is throttling")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        handler: Handler | None = getattr(self, f"_op_{operation}", None)
        if handler is None:
            return self._error(api, 501, "NOT_IMPLEMENTED",
                               f"{operation} is not offered by the test platform")
        response = handler(request, variables)
        if self.answer_delay_s:
            time.sleep(self.answer_delay_s)
        return response

    def _error(self, api: str, status: int, code: str, message: str) -> Response:
        """The error body each document defines: Flow ``Error`` (errorCode, errorMessage);
        Directory ``error`` (RFC 7807 problem+json)."""
        if api == "flow":
            return _json({"errorCode": code, "errorMessage": message}, status)
        return Response(json.dumps({"type": "about:blank", "status": status, "message": code,
                                    "details": message}),
                        status=status, mimetype="application/problem+json",
                        headers={"Content-Language": "en"})

    # -- Flow API --------------------------------------------------------------------------

    def _op_getHealth(self, request: Request, variables: dict[str, str]) -> Response:
        return Response(status=200)

    def _op_createFlow(self, request: Request, variables: dict[str, str]) -> Response:
        parts = {part.name: part for part in _multipart(request)}
        info = json.loads(parts["flowInfo"].data)
        data = parts["file"].data
        digest = hashlib.sha256(data).hexdigest()
        number = _invoice_number(data)
        if not data:
            return self._error("flow", 422, "EmptyFlow", "the file is empty")
        if info.get("sha256") not in (None, digest):
            return self._error("flow", 422, "ChecksumMismatch",
                               f"sha256 of the file is {digest}, flowInfo says {info['sha256']}")
        with self._lock:
            rejection = next((self._rejections[k] for k in (number, info.get("trackingId"),
                                                              info.get("name"))
                              if k is not None and k in self._rejections), None)
        if rejection is not None:
            return self._error("flow", rejection.status, rejection.reason_code,
                               rejection.message)
        syntax = info["flowSyntax"]
        with self._lock:
            earlier = next((d for d in self.deposits
                            if d.sha256 == digest or (info.get("trackingId") is not None
                                                      and d.tracking_id == info["trackingId"])),
                           None)
            moment = self._now()
            flow = _Flow(str(uuid.uuid4()),
                         "CustomerInvoiceLC" if syntax == "CDAR" else "CustomerInvoice", "Out",
                         syntax, data, moment, moment, tracking_id=info.get("trackingId"),
                         name=info.get("name"), profile=info.get("flowProfile"),
                         processing_rule=info.get("processingRule"),
                         processing_rule_source="Input" if info.get("processingRule")
                         else None)
            if earlier is not None and earlier.sha256 == digest:
                flow.ack_status = "Error"
                flow.ack_details = [{"level": "Error", "item": "file",
                                     "reasonCode": "AlreadyExistingFlow",
                                     "reasonMessage": f"same file as flow {earlier.flow_id}"}]
            self._flows[flow.flow_id] = flow
            self.deposits.append(Deposit(
                flow.flow_id, flow.tracking_id, flow.name, syntax, flow.profile,
                flow.processing_rule, digest, data, number,
                earlier.flow_id if earlier is not None else None))
        body = {"flowId": flow.flow_id, "submittedAt": _iso(moment),
                **{k: v for k, v in info.items() if k != "sha256"}, "sha256": digest}
        return _json(body, 202)

    def _op_searchFlow(self, request: Request, variables: dict[str, str]) -> Response:
        params = request.get_json()
        where, limit = params["where"], params.get("limit", 25)
        if not where:
            return self._error("flow", 400, "MISSING_CRITERION",
                               "at least one search criterion is required")
        if limit < 1:
            return self._error("flow", 400, "INVALID_LIMIT", "limit must be at least 1")
        after = _parse_iso(where["updatedAfter"]) if "updatedAfter" in where else None
        before = _parse_iso(where["updatedBefore"]) if "updatedBefore" in where else None

        def matches(flow: _Flow) -> bool:
            return ((after is None or flow.updated_at > after)
                    and (before is None or flow.updated_at < before)
                    and flow.processing_rule in where.get("processingRule",
                                                          [flow.processing_rule])
                    and flow.flow_type in where.get("flowType", [flow.flow_type])
                    and flow.direction in where.get("flowDirection", [flow.direction])
                    and where.get("trackingId", flow.tracking_id) == flow.tracking_id
                    and where.get("ackStatus", flow.ack_status) == flow.ack_status)

        with self._lock:
            found = sorted((f for f in self._flows.values() if matches(f)),
                           key=lambda f: f.updated_at)[:limit]
        return _json({"limit": limit, "filters": where,
                      "results": [f.as_json() for f in found]}, 200)

    def _op_getFlow(self, request: Request, variables: dict[str, str]) -> Response:
        flow = self._flows.get(variables["flowId"])
        if flow is None:
            return self._error("flow", 404, "MISSING_RESOURCE", "no such flow")
        doc_type = request.args.get("docType", "Metadata")
        if doc_type == "Metadata":
            return _json(flow.as_json(), 200)
        if doc_type != "Original":
            return self._error("flow", 404, "MISSING_RESOURCE",
                               f"no {doc_type} document for this flow")
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", flow.name or f"{flow.flow_id}.xml")
        return Response(flow.data, status=200, mimetype="application/octet-stream",
                        headers={"Content-Disposition": f"attachment;filename={filename}"})

    # -- Directory API ---------------------------------------------------------------------

    def _active_lines(self, company: Company) -> list[DirectoryLine]:
        today = date.today()
        return [line for line in company.lines
                if line.effective_from is None or line.effective_from < today]

    def _legal_unit(self, company: Company) -> dict[str, Any]:
        return {"siren": company.siren, "businessName": company.name,
                "entityType": company.entity_type, "administrativeStatus": "A"}

    def _line_json(self, company: Company, line: DirectoryLine) -> dict[str, Any]:
        siren, siret, routing, suffix = line.split()
        body: dict[str, Any] = {"addressingIdentifier": line.addressing_identifier,
                                "siren": siren}
        if siret:
            body["siret"] = siret
        if suffix:
            body["addressingSuffix"] = suffix
        if routing:
            body["routingCode"] = {"routingIdentifier": routing, "administrativeStatus": "A"}
        body["platform"] = {"platformType": "WK",
                            "platformStatus": "Enabled" if line.platform_enabled
                            else "Disabled"}
        unit = self._legal_unit(company)
        del unit["siren"]
        body["legalUnit"] = unit
        return body

    def _op_getCompanyBySiren(self, request: Request, variables: dict[str, str]) -> Response:
        company = self.companies.get(variables["siren"])
        if company is None:
            return self._error("directory", 404, "NOT_FOUND",
                               f"SIREN {variables['siren']} is not in the directory")
        return _json(_pick(self._legal_unit(company), request.args.get("fields")), 200,
                     directory=True)

    def _op_searchCompanyBySiren(self, request: Request, variables: dict[str, str]) -> Response:
        search = request.get_json()
        filters = search.get("filters", {})
        unsupported = set(filters) - {"siren", "businessName"}
        if unsupported:
            return self._error("directory", 501, "NOT_IMPLEMENTED",
                               f"search on {sorted(unsupported)} is not offered")
        found = [c for c in self.companies.values()
                 if filters.get("siren", {}).get("value", "") in c.siren
                 and filters.get("businessName", {}).get("value", "").lower()
                 in c.name.lower()]
        return self._page(search, [self._legal_unit(c) for c in found])

    def _op_searchDirectoryLine(self, request: Request, variables: dict[str, str]) -> Response:
        search = request.get_json()
        filters = search.get("filters", {})
        rows = [self._line_json(c, line) for c in self.companies.values()
                for line in self._active_lines(c)]

        def keep(row: dict[str, Any]) -> bool:
            for name, condition in filters.items():
                value, have = condition.get("value", ""), row.get(name)
                if name == "routingIdentifier":
                    have = row.get("routingCode", {}).get("routingIdentifier")
                if have is None or (value not in have if condition.get("op") == "contains"
                                    else value != have):
                    return False
            return True

        return self._page(search, [row for row in rows if keep(row)])

    def _op_getDirectoryLineById(self, request: Request, variables: dict[str, str]) -> Response:
        wanted = variables["addressing-identifier"]
        for company in self.companies.values():
            for line in self._active_lines(company):
                if line.addressing_identifier == wanted:
                    return _json(_pick(self._line_json(company, line),
                                       request.args.get("fields")), 200, directory=True)
        return self._error("directory", 404, "NOT_FOUND", f"no directory line {wanted}")

    def _page(self, search: dict[str, Any], rows: list[dict[str, Any]]) -> Response:
        rows.sort(key=lambda row: str(row.get("addressingIdentifier", row.get("siren"))))
        ignore, limit = search.get("ignore", 0), search.get("limit", 50)
        fields = ",".join(search["fields"]) if search.get("fields") else None
        page = [_pick(row, fields) for row in rows[ignore:ignore + limit]]
        return _json({"search": search, "totalNumberOfResults": len(rows), "results": page},
                     200, directory=True)


def _pick(body: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """Only the requested fields (``fields=a,b``), when the request names some."""
    if not fields:
        return body
    wanted = set(fields.split(","))
    return {k: v for k, v in body.items() if k in wanted}


def _json(body: Any, status: int, *, directory: bool = False) -> Response:
    headers = {"Content-Language": "fr"} if directory else {}
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers=headers)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return Response(json.dumps({"error": error, "error_description": description}),
                    status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


def basic_auth(client_id: str, secret: str) -> str:
    """An HTTP Basic Authorization value (for tests that talk to the token URL by hand)."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pa_platform() -> Iterator[PaServer]:
    """The PA server, started once for the session (use ``pa_server`` in tests)."""
    server = PaServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def pa_server(pa_platform: PaServer) -> Iterator[PaServer]:
    """The session's PA server, reset for this test; the test fails at teardown if any request
    or response of the test did not conform to the AFNOR OpenAPI documents."""
    pa_platform.reset()
    yield pa_platform
    violations = pa_platform.pop_violations()
    if violations:
        pytest.fail("The PA server saw traffic off the AFNOR OpenAPI documents (XP Z12-013 "
                    "annexes A and B):\n" + "\n".join(f"  {v}" for v in violations),
                    pytrace=False)
