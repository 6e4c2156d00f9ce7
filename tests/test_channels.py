"""Channels write what a recipient or a print house expects, and nothing dangerous."""

import email
import hashlib
import io
import json
from dataclasses import replace
from email.policy import default

import pytest
from pypdf import PdfReader

from pipeline.channels.base import Outgoing
from pipeline.channels.email import EmailFormatter, build_message
from pipeline.channels.printfile import PrintFormatter
from pipeline.channels.transports.outbox import OutboxTransport
from pipeline.documents import build_documents
from pipeline.render.engine import WeasyPrintEngine
from pipeline.render.templates import make_environment
from pipeline.settings import PROJECT_ROOT, Settings, SmtpSettings

TEMPLATES = PROJECT_ROOT / "templates"
SELLER = Settings().seller


@pytest.fixture(scope="module")
def outgoing(clean_bundle) -> list[Outgoing]:
    numbers = clean_bundle.invoices["invoice_number"].to_list()[:4]
    renderer = WeasyPrintEngine(TEMPLATES)
    items = []
    for doc in build_documents(clean_bundle, numbers, SELLER):
        pdf = renderer.render(doc)
        items.append(Outgoing(doc, pdf, hashlib.sha256(pdf).hexdigest()))
    return items


def _as(item: Outgoing, **changes) -> Outgoing:
    return replace(item, doc=replace(item.doc, **changes))


@pytest.mark.parametrize(("lang", "subject"), [("fr", "Facture"), ("en", "Invoice"),
                                                ("de", "Rechnung")])
def test_email_is_localized_with_pdf_attached(outgoing, lang, subject) -> None:
    item = _as(outgoing[0], language=lang, email="a@client.example, b@client.example",
               invoice_type="invoice")
    message = email.message_from_bytes(build_message(item, SELLER, make_environment(TEMPLATES)),
                                       policy=default)
    assert message["Subject"].startswith(f"{subject} {item.doc.number}")
    assert [a.addr_spec for a in message["To"].addresses] == ["a@client.example",
                                                              "b@client.example"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content() == item.pdf
    assert attachment.get_filename() == f"{item.doc.number}.pdf"
    assert message["Message-ID"].endswith("@atelier-numerique.example>")


def test_email_is_deterministic(outgoing) -> None:
    env = make_environment(TEMPLATES)
    item = _as(outgoing[0], email="a@client.example")
    assert build_message(item, SELLER, env) == build_message(item, SELLER, env)


@pytest.mark.parametrize("address", ["a@client.example\nBcc: victim@evil.example",
                                     "a@client.example\r\nSubject: spam"])
def test_newline_in_address_is_refused_not_written(outgoing, address) -> None:
    formatter = EmailFormatter(SELLER, make_environment(TEMPLATES), SmtpSettings())
    result = formatter.format([_as(outgoing[0], email=address)], "b-test")
    assert not result.parcels
    assert "unusable email address" in result.failures[outgoing[0].doc.number]


def test_customer_name_cannot_break_headers_or_file_names(outgoing, tmp_path) -> None:
    item = _as(outgoing[0], email="a@client.example", number="FA/../../etc\npasswd")
    formatter = EmailFormatter(SELLER, make_environment(TEMPLATES), SmtpSettings())
    [parcel] = formatter.format([item], "b-test").parcels
    receipt = OutboxTransport(tmp_path).deliver(parcel)
    assert receipt.outcome == "written"
    [written] = list(tmp_path.iterdir())
    assert written.parent == tmp_path and "/" not in written.name and "\n" not in written.name
    assert written.read_bytes() == parcel.data
    message = email.message_from_bytes(parcel.data, policy=default)
    assert "\n" not in message["Subject"]


def test_print_file_merges_pages_with_a_manifest(outgoing) -> None:
    formatted = PrintFormatter(TEMPLATES, SELLER).format(outgoing, "b-print")
    assert not formatted.failures
    pdf_file, csv_file, json_file = (next(p for p in formatted.parcels if p.name.endswith(s))
                                     for s in (".pdf", ".csv", ".json"))
    merged = PdfReader(io.BytesIO(pdf_file.data))
    rows = csv_file.data.decode().splitlines()
    assert rows[0].startswith("sequence,invoice_number")
    assert sorted(r.split(",")[1] for r in rows[1:]) == sorted(i.doc.number for i in outgoing)
    sheets = [json_row["sheets"] for json_row in json.loads(json_file.data)["rows"]]
    assert len(merged.pages) == 2 * (1 + sum(sheets))  # cover sheet + invoices, duplex
    assert all(p.numbers == pdf_file.numbers for p in formatted.parcels)
