"""The PA client against a real PA server on loopback (tests/pa_server.py).

Every request and response of these tests is checked against the AFNOR OpenAPI documents
by the server; the ``pa_server`` fixture fails a test whose traffic strays from them.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest
from lxml import etree

from pipeline.errors import Terminal, Transient
from pipeline.platform import (
    PlatformAuthError,
    PlatformClient,
    PlatformRejected,
    PlatformUnavailable,
)
from tests.pa_server import CLIENT_ID, CLIENT_SECRET, FR_REFORM, NS, PaServer
from tests.pg_server import free_port
from tests.standards import schematron_failures, xsd_errors

INVOICE = (FR_REFORM / "examples" / "invoices" / "UC1_F202500003_00-INV_20250701_CII.xml")


def make_client(server: PaServer, *, secret: str = CLIENT_SECRET, **options) -> PlatformClient:
    options = {"timeout_s": 5.0, "retries": 2, **options}
    return PlatformClient(server.flow_url, server.directory_url, server.token_url, CLIENT_ID,
                          secret, **options)


@pytest.fixture()
def client(pa_server: PaServer):
    with make_client(pa_server) as platform:
        yield platform


def statuses(server: PaServer, path_end: str) -> list[int]:
    return [e.status for e in server.exchanges if e.path.endswith(path_end)]


# -- deposits --------------------------------------------------------------------------------


def test_deposit_is_accepted_with_the_exact_bytes_and_their_sha256(pa_server, client):
    data = INVOICE.read_bytes()

    flow_id = client.deposit(data, "F202500003.xml", "inv-F202500003", "CII", "Extended-CTC-FR")

    [deposit] = pa_server.deposits
    assert deposit.flow_id == flow_id
    assert deposit.data == data
    assert deposit.sha256 == hashlib.sha256(data).hexdigest()
    assert (deposit.tracking_id, deposit.name, deposit.syntax, deposit.profile,
            deposit.processing_rule) == ("inv-F202500003", "F202500003.xml", "CII",
                                         "Extended-CTC-FR", "B2B")
    assert deposit.invoice_number == "F202500003"
    assert pa_server.duplicates == []
    metadata = client.flow(flow_id)
    assert (metadata.flow_type, metadata.direction, metadata.ack_status) == (
        "CustomerInvoice", "Out", "Ok")
    assert client.fetch(flow_id) == data


def test_token_is_cached_and_refreshed_once_after_a_401(pa_server, client):
    client.deposit(b"<a/>", "a.xml", "t-a", "UBL")
    client.deposit(b"<b/>", "b.xml", "t-b", "UBL")
    assert pa_server.token_requests == 1

    pa_server.revoke_tokens()
    client.deposit(b"<c/>", "c.xml", "t-c", "UBL")

    assert pa_server.token_requests == 2
    assert statuses(pa_server, "/v1/flows") == [202, 202, 401, 202]
    assert len(pa_server.deposits) == 3


def test_a_422_rejection_carries_the_reason_code(pa_server, client):
    pa_server.reject("F202500003", "InvalidSchema", "BR-FR-05: notes PMT/PMD/AAB missing")

    with pytest.raises(PlatformRejected) as caught:
        client.deposit(INVOICE.read_bytes(), "F202500003.xml", "inv-F202500003", "CII")

    error = caught.value
    assert (error.status, error.reason_codes) == (422, ("InvalidSchema",))
    assert "BR-FR-05" in error.detail
    assert isinstance(error, Terminal) and not error.retriable
    assert pa_server.deposits == []


def test_a_429_is_retried_after_retry_after_then_accepted(pa_server, client):
    pa_server.throttle(1, 429, retry_after="1")

    started = time.monotonic()
    flow_id = client.deposit(b"<x/>", "x.xml", "t-x", "UBL")

    assert time.monotonic() - started >= 1.0
    assert statuses(pa_server, "/v1/flows") == [429, 202]
    assert [d.flow_id for d in pa_server.deposits] == [flow_id]


def test_throttling_past_the_retries_is_transient_and_stores_nothing(pa_server, client):
    pa_server.throttle(3, 503, retry_after="0")

    with pytest.raises(PlatformUnavailable) as caught:
        client.deposit(b"<x/>", "x.xml", "t-x", "UBL")

    assert (caught.value.status, caught.value.in_doubt) == (503, False)
    assert isinstance(caught.value, Transient) and caught.value.retriable
    assert statuses(pa_server, "/v1/flows") == [503, 503, 503]  # first try + 2 retries
    assert pa_server.deposits == []


def test_a_retry_after_beyond_the_bound_is_handed_back_not_slept(pa_server):
    waits: list[float] = []
    pa_server.throttle(1, 429, retry_after="120")

    with make_client(pa_server, sleep=waits.append) as platform, \
            pytest.raises(PlatformUnavailable) as caught:
        platform.deposit(b"<x/>", "x.xml", "t-x", "UBL")

    assert caught.value.retry_after_s == 120
    assert waits == []


def test_wrong_credentials_are_refused_before_any_deposit(pa_server):
    with make_client(pa_server, secret="wrong") as platform, \
            pytest.raises(PlatformAuthError) as caught:
        platform.deposit(b"<x/>", "x.xml", "t-x", "UBL")

    assert caught.value.status == 401 and "invalid_client" in str(caught.value)
    assert [(e.path, e.status) for e in pa_server.exchanges] == [("/oauth/token", 401)]


def test_a_second_deposit_with_the_same_tracking_id_is_a_second_flow(pa_server, client):
    """XP Z12-013 5.2.2: the PA must not check trackingId uniqueness, so the client cannot
    count on it to avoid a double deposit."""
    first = client.deposit(b"<x/>", "x.xml", "t-same", "UBL")
    second = client.deposit(b"<x/>", "x.xml", "t-same", "UBL")

    assert first != second
    [duplicate] = pa_server.duplicates
    assert duplicate.duplicate_of == first
    assert client.flow(second).ack_reasons == ("AlreadyExistingFlow",)
    assert {f.flow_id for f in client.find_deposits("t-same")} == {first, second}


def test_a_deposit_whose_answer_is_lost_is_in_doubt_and_can_be_found(pa_server):
    pa_server.answer_delay_s = 0.6

    with make_client(pa_server, timeout_s=0.2) as platform:
        with pytest.raises(PlatformUnavailable) as caught:
            platform.deposit(b"<x/>", "x.xml", "t-lost", "UBL")
        assert caught.value.in_doubt
        pa_server.answer_delay_s = 0.0
        [found] = platform.find_deposits("t-lost")

    assert [d.flow_id for d in pa_server.deposits] == [found.flow_id]


def test_no_server_is_transient_and_not_in_doubt():
    port = free_port()
    platform = PlatformClient(f"http://127.0.0.1:{port}/flow-service",
                              f"http://127.0.0.1:{port}/directory-service",
                              f"http://127.0.0.1:{port}/oauth/token", "id", "secret", 1.0, 1)
    with platform, pytest.raises(PlatformUnavailable) as caught:
        platform.deposit(b"<x/>", "x.xml", "t-x", "UBL")
    assert not caught.value.in_doubt


# -- the server's validation is live ---------------------------------------------------------


def _multipart(info: dict, info_type: str = "application/json") -> dict:
    return {"flowInfo": (None, json.dumps(info).encode(), info_type),
            "file": ("x.xml", b"<x/>", "application/xml")}


@pytest.mark.parametrize("method, path, kwargs, expected", [
    ("POST", "/flow-service/v1/flows", {"files": _multipart({"trackingId": "t-1"})},
     "'flowSyntax' is a required property"),
    ("POST", "/flow-service/v1/flows",
     {"files": _multipart({"flowSyntax": "CII"}, info_type="text/plain")},
     "part 'flowInfo' has Content-Type 'text/plain'"),
    ("POST", "/flow-service/v1/flows/search", {"json": {"limit": 500, "where": {}}},
     "500 is greater than the maximum of 100"),
    ("GET", "/directory-service/v1/siren/code-insee:12345", {},
     "Invalid path parameter: siren: (root): '12345' does not match"),
], ids=["flowInfo-without-flowSyntax", "flowInfo-as-text", "search-limit", "short-siren"])
def test_a_malformed_request_is_refused_by_the_openapi_validator(pa_server, client, method,
                                                                  path, kwargs, expected):
    response = httpx.request(method, pa_server.url + path, timeout=5, **kwargs,
                             headers={"Authorization": f"Bearer {client.token()}"})

    assert response.status_code == 400
    assert expected in response.text
    [violation] = pa_server.pop_violations()  # taken, so the fixture lets the test pass
    assert violation.direction == "request" and expected in violation.message
    assert pa_server.deposits == []


def test_a_call_without_a_bearer_is_401_not_a_violation(pa_server):
    response = httpx.post(pa_server.flow_url + "/v1/flows/search", timeout=5,
                          json={"where": {"flowDirection": ["In"]}})

    assert response.status_code == 401
    assert response.json()["errorCode"] == "INVALID_TOKEN"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert pa_server.violations == []


def test_a_sha256_that_does_not_match_the_file_is_refused(pa_server, client):
    info = {"flowSyntax": "UBL", "sha256": hashlib.sha256(b"other").hexdigest()}
    response = httpx.post(pa_server.flow_url + "/v1/flows", files=_multipart(info), timeout=5,
                          headers={"Authorization": f"Bearer {client.token()}"})

    assert response.status_code == 422
    assert response.json()["errorCode"] == "ChecksumMismatch"


# -- directory -------------------------------------------------------------------------------


def test_directory_address_of_a_buyer(pa_server, client):
    pa_server.add_company("702042755", "ACME", ["702042755_ACHATS", "702042755"])
    pa_server.add_company("552100554", "Sans PA", platform_enabled=False)
    pa_server.add_company("443061841", "Pas de ligne", addresses=())
    pa_server.add_company("732829320", "Plus tard", effective_from=date(2999, 1, 1))

    address = client.directory_address("702042755")
    assert address is not None
    assert (address.addressing_identifier, address.electronic_address, address.platform_enabled,
            address.business_name) == ("702042755", "0225:702042755", True, "ACME")
    assert [a.suffix for a in client.directory_lines("702042755")] == [None, "ACHATS"]
    idle = client.directory_address("552100554")
    assert idle is not None and not idle.platform_enabled
    assert client.directory_address("443061841") is None
    assert client.directory_address("732829320") is None


def test_directory_without_the_siren(pa_server, client):
    assert client.directory_address("356000000") is None
    with pytest.raises(ValueError):
        client.directory_address("35600000")


# -- lifecycle -------------------------------------------------------------------------------


def test_a_published_212_is_found_by_updated_after_and_fetched(pa_server, client):
    pa_server.publish_status("FA-2026-0042", "2026-09-14", 200)
    client.deposit(b"<x/>", "x.xml", "t-x", "UBL")  # an outgoing invoice: not a lifecycle
    cursor = datetime.now(UTC)
    flow_id = pa_server.publish_status("FA-2026-0042", date(2026, 9, 14), 212,
                                       amount=Decimal("1200.00"),
                                       seller=("123456782", "Vendeur SA"),
                                       buyer=("702042755", "ACME"))

    [found] = client.search_lifecycle(cursor)

    assert (found.flow_id, found.flow_type, found.direction, found.syntax) == (
        flow_id, "CustomerInvoiceLC", "In", "CDAR")
    assert found.updated_at is not None and found.updated_at > cursor
    assert client.search_lifecycle(found.updated_at) == []
    assert len(client.search_lifecycle()) == 2
    cdar = client.fetch(flow_id)
    assert xsd_errors("cdar", cdar) == []
    assert schematron_failures("br-fr-cdv", cdar) == []
    reference = etree.fromstring(cdar).find(
        "rsm:AcknowledgementDocument/ram:ReferenceReferencedDocument", NS)
    assert reference.findtext("ram:IssuerAssignedID", namespaces=NS) == "FA-2026-0042"
    assert reference.findtext("ram:ProcessConditionCode", namespaces=NS) == "212"
    assert reference.findtext("ram:FormattedIssueDateTime/qdt:DateTimeString",
                              namespaces=NS) == "20260914"
    assert reference.findtext(".//ram:ValueAmount", namespaces=NS) == "1200.00"
    assert b"100000009" not in cdar and b"123456782" in cdar


def test_search_lifecycle_pages_by_updated_at(pa_server, client):
    published = [pa_server.publish_status(f"FA-{n:04d}", "2026-09-14", 213, "DOUBLON")
                 for n in range(105)]

    found = client.search_lifecycle()

    assert [f.flow_id for f in found] == published
    assert len(statuses(pa_server, "/v1/flows/search")) == 2


def test_a_response_off_the_document_is_recorded(pa_server, client, monkeypatch):
    """The server's own answers are validated too: a file served as application/xml (the
    document allows application/octet-stream) with a ``Content-Disposition`` the document's
    pattern refuses is caught."""
    flow_id = pa_server.publish_status("FA-1", "2026-09-14", 205)
    served = pa_server._op_getFlow

    def sloppy(request, variables):
        response = served(request, variables)
        response.mimetype = "application/xml"
        response.headers["Content-Disposition"] = "attachment; filename=FA-1.xml"
        return response

    monkeypatch.setattr(pa_server, "_op_getFlow", sloppy)
    client.fetch(flow_id)

    messages = [v.message for v in pa_server.pop_violations() if v.direction == "response"]
    assert any("mimetype not found: application/xml" in m for m in messages)
    assert any("does not match 'attachment;filename=*'" in m for m in messages)
