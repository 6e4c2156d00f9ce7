"""A synchronous client of an accredited platform (PA): AFNOR XP Z12-013 Flow and Directory APIs.

Since the French 2026 reform, invoices to French VAT-registered buyers go through a PA: the
seller deposits each invoice as a *flow* (``POST /v1/flows``, a multipart of ``flowInfo``
JSON and the file), finds where a buyer receives invoices in the Directory, and reads the
invoices' lifecycle statuses back as CDAR flows (``POST /v1/flows/search``, then
``GET /v1/flows/{flowId}``). Every call carries an OAuth2 bearer obtained by client
credentials from the PA's token URL (XP Z12-013 4.2).

Errors follow ``pipeline.errors``: ``PlatformRejected`` and ``PlatformAuthError`` are
terminal (the invoice, the flowInfo or the credentials must change), ``PlatformUnavailable``
is transient. Throttling (429) and unavailability (503) are retried here after the
``Retry-After`` the PA sends, within ``retries`` and ``max_wait_s``, because such answers
mean the request was not processed. A timeout, a dropped connection or a 500 during a
deposit is *not* retried: the PA may have stored the flow, and it does not check trackingId
uniqueness (XP Z12-013 5.2.2), so a blind retry could deposit the invoice twice. Those raise
``PlatformUnavailable`` with ``in_doubt=True``; look the deposit up with ``find_deposits``
before sending it again.

The client is pure: no settings, no journal; one instance per thread or process.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from pipeline.errors import PipelineError, Terminal, Transient

__all__ = ["PlatformClient", "PlatformRejected", "PlatformUnavailable", "PlatformAuthError",
           "FlowSummary", "DirectoryAddress", "TFlowSyntax",
           "TFlowProfile", "TProcessingRule"]

TFlowSyntax = Literal["CII", "UBL", "Factur-X", "CDAR", "FRR"]
TFlowProfile = Literal["Basic", "CIUS", "Extended-CTC-FR"]
TProcessingRule = Literal["B2B", "B2BInt", "B2C", "OutOfScope", "ArchiveOnly", "NotApplicable"]

_SIREN = re.compile(r"^[0-9]{9}$")
_MAX_ID = 36  # NotOnlyUuid: flowId and trackingId
_MAX_NAME = 255
_PAGE = 100  # the largest ``limit`` of SearchFlowParams


# -- errors ----------------------------------------------------------------------------------


class PlatformRejected(PipelineError, Terminal):
    """The PA refused the request (400, 404, 413, 422...): sending it again will not help.

    Attributes:
        status: the HTTP status.
        reason_codes: the PA's codes (``errorCode`` of the Flow API, e.g. ``InvalidSchema``,
            ``ChecksumMismatch``; the problem ``message`` of the Directory API).
        detail: the PA's message.
    """

    def __init__(self, status: int, reason_codes: Sequence[str], detail: str) -> None:
        self.status, self.reason_codes, self.detail = status, tuple(reason_codes), detail
        codes = ", ".join(self.reason_codes) or "no reason code"
        super().__init__(f"The platform refused the request ({status}, {codes}): {detail}\n"
                         "  Fix the invoice or its flow information; the platform will not "
                         "take it as it is.")


class PlatformAuthError(PipelineError, Terminal):
    """The PA refused the client's credentials or token (401 after a refresh, 403)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"The platform refused our credentials ({status}): {detail}\n"
                         "  Check the client id, the secret and the account's rights at the "
                         "platform; nothing was deposited.")


class PlatformUnavailable(PipelineError, Transient):
    """The PA could not be reached or asked us to come back later.

    Attributes:
        status: the last HTTP status, None when no answer came.
        retry_after_s: how long the PA asked us to wait, when it said.
        in_doubt: the request may have been processed (a deposit that timed out or got a
            500): search it by trackingId before depositing again.
    """

    def __init__(self, detail: str, *, status: int | None = None,
                 retry_after_s: float | None = None, in_doubt: bool = False) -> None:
        self.status, self.retry_after_s, self.in_doubt = status, retry_after_s, in_doubt
        self.detail = detail
        advice = ("  The platform may have stored the flow: look it up by trackingId "
                  "(find_deposits) before depositing it again." if in_doubt else
                  "  Nothing was stored; try again later"
                  + (f" (the platform asked for {retry_after_s:g} s)."
                     if retry_after_s is not None else "."))
        super().__init__(f"The platform is unavailable: {detail}\n{advice}")


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSummary:
    """The metadata of one flow (the ``Flow`` object of the Flow API)."""

    flow_id: str
    flow_type: str | None
    direction: str | None
    syntax: str | None
    tracking_id: str | None
    profile: str | None
    processing_rule: str | None
    submitted_at: datetime | None
    updated_at: datetime | None
    ack_status: str | None
    """``Pending``, ``Ok`` or ``Error`` (the flow is not receivable)."""
    ack_reasons: tuple[str, ...] = ()
    """reasonCode of each acknowledgement detail (e.g. ``AlreadyExistingFlow``)."""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FlowSummary:
        ack = body.get("acknowledgement") or {}
        return cls(flow_id=str(body["flowId"]), flow_type=body.get("flowType"),
                   direction=body.get("flowDirection"), syntax=body.get("flowSyntax"),
                   tracking_id=body.get("trackingId"), profile=body.get("flowProfile"),
                   processing_rule=body.get("processingRule"),
                   submitted_at=_datetime(body.get("submittedAt")),
                   updated_at=_datetime(body.get("updatedAt")), ack_status=ack.get("status"),
                   ack_reasons=tuple(str(d.get("reasonCode")) for d in ack.get("details", [])))


@dataclass(frozen=True)
class DirectoryAddress:
    """An addressing line of the directory: where invoices to a SIREN go (XP Z12-014 4.1.4)."""

    siren: str
    addressing_identifier: str
    """``SIREN``, ``SIREN_SUFFIX``, ``SIREN_SIRET`` or ``SIREN_SIRET_ROUTINGCODE``."""
    siret: str | None
    routing_identifier: str | None
    suffix: str | None
    platform_enabled: bool
    """False when the recipient chose no PA: the invoice is still deposited to this address,
    and the PA records it as not transmitted (XP Z12-014 4.1.4.4, 4.2.3)."""
    business_name: str | None

    @property
    def electronic_address(self) -> str:
        """The buyer's electronic address (BT-49) as ``schemeID:identifier``."""
        return f"0225:{self.addressing_identifier}"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DirectoryAddress:
        platform = body.get("platform") or {}
        return cls(siren=str(body["siren"]),
                   addressing_identifier=str(body["addressingIdentifier"]),
                   siret=body.get("siret"),
                   routing_identifier=(body.get("routingCode") or {}).get("routingIdentifier"),
                   suffix=body.get("addressingSuffix"),
                   platform_enabled=platform.get("platformStatus", "Enabled") == "Enabled",
                   business_name=(body.get("legalUnit") or {}).get("businessName"))


# -- the client ------------------------------------------------------------------------------


class PlatformClient:
    """Talks to one PA with one API account.

    Args:
        flow_url: base URL of the Flow API, before ``/v1``
            (e.g. ``https://api.flow.pa.example/flow-service``).
        directory_url: base URL of the Directory API, before ``/v1``.
        token_url: the OAuth2 token URL.
        client_id: API account id.
        client_secret: API account secret.
        timeout_s: connect/read/write timeout of each HTTP request.
        retries: how many times a 429/503 answer is retried before ``PlatformUnavailable``.
        max_wait_s: the longest ``Retry-After`` honoured here; a longer one raises
            ``PlatformUnavailable`` at once (with ``retry_after_s``) for the caller to schedule.
        sleep: how to wait (``time.sleep``; tests may record).
    """

    def __init__(self, flow_url: str, directory_url: str, token_url: str, client_id: str,
                 client_secret: str, timeout_s: float = 30.0, retries: int = 3, *,
                 max_wait_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.flow_url, self.directory_url = flow_url.rstrip("/"), directory_url.rstrip("/")
        self.token_url = token_url
        self._credentials = (client_id, client_secret)
        self.retries, self.max_wait_s, self._sleep = retries, max_wait_s, sleep
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._token: str | None = None
        self._token_expiry = 0.0

    def close(self) -> None:
        """Close the connections (the client may not be used afterwards)."""
        self._http.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- authentication --------------------------------------------------------------------

    def token(self) -> str:
        """A bearer token, from the cache until shortly before it expires (RFC 6749 4.4)."""
        if self._token is not None and time.monotonic() < self._token_expiry:
            return self._token
        response = self._send("POST", self.token_url, authenticated=False,
                              data={"grant_type": "client_credentials"},
                              auth=httpx.BasicAuth(*self._credentials))
        if response.status_code in (400, 401, 403):
            error = _json_or_empty(response)
            raise PlatformAuthError(response.status_code,
                                    f"token URL answered {error.get('error', response.text)!r}"
                                    f" {error.get('error_description', '')}".rstrip())
        self._raise_for(response)
        body = response.json()
        if str(body.get("token_type", "")).lower() != "bearer" or not body.get("access_token"):
            raise PlatformAuthError(response.status_code,
                                    f"the token URL gave no bearer token: {sorted(body)}")
        lifetime = float(body.get("expires_in", 300))
        self._token = str(body["access_token"])
        self._token_expiry = time.monotonic() + lifetime - min(60.0, lifetime / 10)
        return self._token

    # -- Flow API --------------------------------------------------------------------------

    def deposit(self, data: bytes, name: str, tracking_id: str, syntax: TFlowSyntax,
                profile: TFlowProfile | None = None,
                processing_rule: TProcessingRule | None = "B2B") -> str:
        """Deposit one invoice (or lifecycle message) and return the PA's flowId.

        The PA answers 202 once it has the file; whether it is receivable shows later in
        the flow's acknowledgement and lifecycle statuses.

        Args:
            data: the file: CII/UBL XML, Factur-X PDF, CDAR XML.
            name: the file name (at most 255 characters).
            tracking_id: our own id for the flow (at most 36 characters), to find it again.
            syntax: ``CII``, ``UBL``, ``Factur-X``, ``CDAR`` or ``FRR``.
            profile: ``Basic``, ``CIUS`` or ``Extended-CTC-FR``; None leaves it out.
            processing_rule: ``B2B`` for e-invoicing (BR-FR-20); None lets the PA compute it.

        Raises:
            PlatformRejected: 400/413/422, with the PA's reason code.
            PlatformUnavailable: still throttled after ``retries``, or no answer (``in_doubt``).
            PlatformAuthError: the credentials were refused.
        """
        if not data:
            raise ValueError("an empty file cannot be deposited")
        if not 0 < len(tracking_id) <= _MAX_ID:
            raise ValueError(f"trackingId must have 1 to {_MAX_ID} characters: {tracking_id!r}")
        if not 0 < len(name) <= _MAX_NAME:
            raise ValueError(f"the file name must have 1 to {_MAX_NAME} characters")
        info: dict[str, str] = {"trackingId": tracking_id, "name": name, "flowSyntax": syntax,
                                "sha256": hashlib.sha256(data).hexdigest()}
        if profile is not None:
            info["flowProfile"] = profile
        if processing_rule is not None:
            info["processingRule"] = processing_rule
        # The document's multipart encoding: flowInfo as application/json, the file as
        # application/pdf or application/xml.
        file_type = "application/pdf" if syntax == "Factur-X" else "application/xml"
        files = {"flowInfo": (None, json.dumps(info).encode(), "application/json"),
                 "file": (name, data, file_type)}
        response = self._send("POST", f"{self.flow_url}/v1/flows", files=files,
                              may_be_stored=True)
        self._raise_for(response, may_be_stored=True)
        flow_id = _json_or_empty(response).get("flowId")
        if not flow_id:
            raise PlatformUnavailable(f"the deposit was answered {response.status_code} "
                                      "without a flowId", status=response.status_code,
                                      in_doubt=True)
        return str(flow_id)

    def flow(self, flow_id: str) -> FlowSummary:
        """The metadata of one flow (``docType=Metadata``): type, acknowledgement..."""
        response = self._send("GET", self._flow_path(flow_id),
                              params={"docType": "Metadata"})
        self._raise_for(response)
        return FlowSummary.from_json(response.json())

    def fetch(self, flow_id: str) -> bytes:
        """The file of a flow as it was deposited (``docType=Original``): for a lifecycle
        flow, the CDAR message."""
        response = self._send("GET", self._flow_path(flow_id),
                              params={"docType": "Original"})
        self._raise_for(response)
        return response.content

    def find_deposits(self, tracking_id: str) -> list[FlowSummary]:
        """Every flow deposited with this trackingId (the PA does not refuse a second one)."""
        return self._search({"trackingId": tracking_id, "flowDirection": ["Out"]})

    def search_lifecycle(self, updated_after: datetime | None = None, *,
                         flow_types: Sequence[str] = ("CustomerInvoiceLC",)) -> list[FlowSummary]:
        """Lifecycle flows about our invoices that came in after ``updated_after``.

        Pages through the results by ``updatedAt`` (XP Z12-013 5.3.2); keep the last
        ``updated_at`` returned and pass it next time.

        Args:
            updated_after: an aware datetime; None for everything the PA keeps.
            flow_types: the FlowTypes wanted (``CustomerInvoiceLC``: statuses of invoices
                we issued).
        """
        if updated_after is not None and updated_after.tzinfo is None:
            raise ValueError("updated_after must be timezone-aware")
        where: dict[str, Any] = {"flowType": list(flow_types), "flowDirection": ["In"]}
        if updated_after is not None:
            where["updatedAfter"] = _iso(updated_after)
        return self._search(where)

    def _search(self, where: dict[str, Any]) -> list[FlowSummary]:
        found: list[FlowSummary] = []
        while True:
            response = self._send("POST", f"{self.flow_url}/v1/flows/search",
                                  json={"limit": _PAGE, "where": where})
            self._raise_for(response)
            page = [FlowSummary.from_json(r) for r in response.json().get("results", [])]
            found += page
            if len(page) < _PAGE or page[-1].updated_at is None:
                return found
            where = {**where, "updatedAfter": _iso(page[-1].updated_at)}

    def _flow_path(self, flow_id: str) -> str:
        return f"{self.flow_url}/v1/flows/{quote(flow_id, safe='')}"

    # -- Directory API ---------------------------------------------------------------------

    def directory_lines(self, siren: str) -> list[DirectoryAddress]:
        """Every active addressing line of this SIREN (``POST /v1/directory-line/search``)."""
        siren = _siren(siren)
        lines: list[DirectoryAddress] = []
        while True:
            search = {"filters": {"siren": {"op": "contains", "value": siren}},
                      "limit": _PAGE, "ignore": len(lines)}
            response = self._send("POST", f"{self.directory_url}/v1/directory-line/search",
                                  json=search)
            if response.status_code == 404:
                return []
            self._raise_for(response)
            body = response.json()
            page = body.get("results", [])
            lines += [DirectoryAddress.from_json(r) for r in page]
            if not page or len(lines) >= int(body.get("totalNumberOfResults", 0)):
                break
        # "contains" may match other SIRENs; keep this one's lines.
        return [line for line in lines if line.siren == siren]

    def directory_address(self, siren: str) -> DirectoryAddress | None:
        """Where invoices to this SIREN go, or None when it has no addressing line.

        Prefers a line whose recipient chose a PA, then the plain SIREN line, then the
        shortest identifier: the address a seller uses when the buyer gave no other.
        """
        lines = self.directory_lines(siren)
        if not lines:
            return None
        return min(lines, key=lambda line: (not line.platform_enabled,
                                            line.addressing_identifier != line.siren,
                                            len(line.addressing_identifier),
                                            line.addressing_identifier))

    # -- HTTP ------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, authenticated: bool = True,
              may_be_stored: bool = False, **kwargs: Any) -> httpx.Response:
        """One call: bearer attached, refreshed once on 401, 429/503 retried after Retry-After.

        Returns the last response, whatever its status (``_raise_for`` judges it).
        """
        refreshed, attempt = False, 0
        while True:
            headers = {"X-Request-Id": str(uuid.uuid4())}
            if authenticated:
                headers["Authorization"] = f"Bearer {self.token()}"
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                raise PlatformUnavailable(f"{method} {url}: {error!r}") from error
            except httpx.TransportError as error:  # timeouts, dropped connections
                raise PlatformUnavailable(f"{method} {url}: {error!r}",
                                          in_doubt=may_be_stored) from error
            if response.status_code == 401 and authenticated and not refreshed:
                self._token, refreshed = None, True
                continue
            if response.status_code not in (429, 503):
                return response
            wait = _retry_after(response, attempt)
            if attempt >= self.retries or wait > self.max_wait_s:
                raise PlatformUnavailable(
                    f"{method} {url} answered {response.status_code} "
                    f"{attempt + 1} time(s)", status=response.status_code, retry_after_s=wait)
            self._sleep(wait)
            attempt += 1

    def _raise_for(self, response: httpx.Response, *, may_be_stored: bool = False) -> None:
        status = response.status_code
        if status < 300:
            return
        codes, detail = _error_details(response)
        if status in (401, 403):
            raise PlatformAuthError(status, detail)
        if status >= 500:
            raise PlatformUnavailable(f"{response.request.method} {response.request.url} "
                                      f"answered {status}: {detail}", status=status,
                                      in_doubt=may_be_stored)
        raise PlatformRejected(status, codes, detail)


# -- helpers ---------------------------------------------------------------------------------


def _siren(siren: str) -> str:
    if not _SIREN.match(siren):
        raise ValueError(f"a SIREN has 9 digits: {siren!r}")
    return siren


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait: ``Retry-After`` as seconds or HTTP-date (RFC 9110 10.2.3), else
    1, 2, 4... seconds."""
    value = response.headers.get("Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                moment = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                pass
            else:
                return max(0.0, (moment - datetime.now(UTC)).total_seconds())
    return float(2 ** attempt)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_details(response: httpx.Response) -> tuple[list[str], str]:
    """(codes, message) of a Flow API ``Error`` or a Directory API problem+json body."""
    body = _json_or_empty(response)
    if "errorCode" in body:
        return [str(body["errorCode"])], str(body.get("errorMessage") or body["errorCode"])
    if "message" in body or "details" in body:
        code = str(body.get("message", ""))
        return ([code] if code else []), str(body.get("details") or code)
    return [], response.text[:500] or response.reason_phrase
