"""Print delivery: per batch, one duplex-ready PDF for the print house and its manifest.

``PrintFormatter`` turns a batch's print invoices into three parcels, named
``<batch_id>-<digest>`` with the digest of the exact invoices they carry, so a
re-run that prints only the invoices left over never overwrites an earlier file:

- ``.pdf``: a cover sheet, then the invoices sorted by the buyer's country,
  postcode and invoice number. Pages are A4 printed duplex: every invoice starts
  on the front of a new sheet (a blank page follows an invoice with an odd page
  count) and the cover sheet is one sheet too (its back is blank), so invoice
  ``n`` starts on an odd page and the file has ``2 x (1 + sheets of the invoices)``
  pages.
- ``.csv``: the manifest, one row per invoice and envelope, in file order:
  ``MANIFEST_COLUMNS``. The cells are safe to open in a spreadsheet: a text that
  starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (which a
  spreadsheet would run as a formula) is prefixed with a single quote ``'``, so
  a customer named ``=HYPERLINK(...)`` stays a name. The file is UTF-8, without
  byte order mark.
- ``.json``: the same rows with their values as they are (JSON is not opened in
  a spreadsheet, so nothing is prefixed), the batch's totals and weight classes,
  and the name, size and sha256 of the PDF and of the CSV: whoever receives the
  three files can check the other two against it.

Envelope weight classes are estimated from ``SHEET_GRAMS`` per sheet (an A4 sheet,
0.0624 m², of 80 g/m² paper weighs 4.99 g) plus ``ENVELOPE_GRAMS`` for the
envelope, and named by the postal weight steps of ``WEIGHT_CLASSES`` (the
international letter steps: 20, 50, 100, 250, 500, 1,000 and 2,000 g), then
``OVER_WEIGHT``. A single sheet makes 10 g, three sheets 20 g.

An item whose PDF cannot be read (not a PDF, truncated, no page) fails alone,
with the reason; the others are printed. The formatter never writes a file:
a transport (outbox or SFTP) moves the parcels.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

from pypdf import PdfReader, PdfWriter
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError

from pipeline import keys
from pipeline.channels.base import Formatted, Outgoing
from pipeline.channels.transports.base import Parcel
from pipeline.errors import PipelineError, TemplateError
from pipeline.render.engine import DETERMINISTIC_EPOCH, AssetOnlyFetcher
from pipeline.render.templates import make_environment, render_template
from pipeline.settings import SellerSettings

__all__ = ["PrintFormatter", "ManifestRow", "MANIFEST_COLUMNS", "WEIGHT_CLASSES",
           "OVER_WEIGHT", "SHEET_GRAMS", "ENVELOPE_GRAMS", "COVER_TEMPLATE", "COVER_STYLESHEET",
           "envelope_grams", "weight_class", "spreadsheet_safe", "print_order"]

SHEET_GRAMS = 5
"""One A4 sheet of 80 g/m² paper (0.0624 m²: 4.99 g)."""
ENVELOPE_GRAMS = 5
"""One windowed DL or C5 envelope."""
WEIGHT_CLASSES: tuple[tuple[int, str], ...] = (
    (20, "up to 20 g"), (50, "up to 50 g"), (100, "up to 100 g"), (250, "up to 250 g"),
    (500, "up to 500 g"), (1000, "up to 1 kg"), (2000, "up to 2 kg"))
"""Postal weight steps (grams, label): an envelope belongs to the first it does not exceed."""
OVER_WEIGHT = "over 2 kg"

COVER_TEMPLATE = "print/cover.html"
COVER_STYLESHEET = "assets/print.css"
_COVER_PAGES = 2  # the cover sheet, front and (blank) back

# OWASP "CSV injection": what a spreadsheet reads as the start of a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ManifestRow:
    """One invoice of a print file: one envelope.

    ``first_page`` counts from 1 in the merged PDF (the cover sheet is pages 1 and 2);
    ``pages`` are the invoice's own, ``blank_pages`` the blank back added after it (0 or
    1); ``sha256`` is that of the invoice's PDF as archived.
    """

    sequence: int
    invoice_number: str
    customer_id: str
    name: str
    address_line1: str
    address_line2: str
    postcode: str
    city: str
    country: str
    first_page: int
    pages: int
    blank_pages: int
    sheets: int
    weight_g: int
    weight_class: str
    sha256: str

    def csv_cells(self) -> list[str | int]:
        """The row as spreadsheet-safe CSV cells, in ``MANIFEST_COLUMNS`` order."""
        return [spreadsheet_safe(v) if isinstance(v, str) else v
                for v in (getattr(self, f.name) for f in fields(self))]


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))
"""The manifest's columns (CSV header) and keys (JSON rows), in order."""


def spreadsheet_safe(value: str) -> str:
    """``value``, prefixed with ``'`` when a spreadsheet would take it for a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def envelope_grams(sheets: int) -> int:
    """Estimated weight of an envelope holding ``sheets`` A4 sheets."""
    return sheets * SHEET_GRAMS + ENVELOPE_GRAMS


def weight_class(grams: int) -> str:
    """The postal weight class of an envelope of ``grams``."""
    for limit, label in WEIGHT_CLASSES:
        if grams <= limit:
            return label
    return OVER_WEIGHT


def print_order(item: Outgoing) -> tuple[str, str, str]:
    """Sort key of the print file: the buyer's country, postcode, then the invoice number."""
    buyer = item.doc.buyer
    return (buyer.country.upper(), buyer.postcode.replace(" ", "").upper(), item.doc.number)


@dataclass(frozen=True)
class _Readable:
    item: Outgoing
    reader: PdfReader
    pages: int


def _read(item: Outgoing) -> _Readable:
    """Open an invoice's PDF and make sure every object a merge copies can be read."""
    reader = PdfReader(io.BytesIO(item.pdf))
    pages = len(reader.pages)
    if not pages:
        raise ValueError("the PDF has no page")
    # A clone walks every object of the file: what fails here would fail the merge
    # half-way, with some of the invoice's pages already in the print file.
    PdfWriter(clone_from=reader).write(io.BytesIO())
    return _Readable(item, reader, pages)


class PrintFormatter:
    """Builds a batch's print file: merged PDF with a cover sheet, CSV and JSON manifests.

    The cover sheet is ``templates/print/cover.html`` with ``templates/assets/print.css``,
    laid out by WeasyPrint like the invoices (same sandbox, and only files under
    ``assets/`` may load).
    """

    name = "print"

    def __init__(self, templates_dir: Path, seller: SellerSettings,
                 today: Callable[[], date] = date.today) -> None:
        """Check the cover sheet's template and stylesheet and prepare the layout engine.

        Args:
            templates_dir: the templates root (``settings.render.templates_dir``).
            seller: the issuing company, named on the cover sheet as the sender.
            today: the date printed on the cover sheet and in the JSON manifest; the
                files are otherwise the same bytes for the same invoices.
        """
        root = templates_dir.resolve()
        missing = [n for n in (COVER_TEMPLATE, COVER_STYLESHEET) if not (root / n).is_file()]
        if missing:
            raise TemplateError(f"the print cover sheet needs {' and '.join(missing)} under "
                                f"{root}; copy them from the project's templates/ folder.")
        os.environ.setdefault("SOURCE_DATE_EPOCH", DETERMINISTIC_EPOCH)
        self.seller = seller
        self.today = today
        self._root = root
        self._env = make_environment(root)
        self._fetcher = AssetOnlyFetcher([root / "assets"])
        self._fonts = FontConfiguration()
        self._css: CSS | None = None

    def format(self, items: list[Outgoing], batch_id: str) -> Formatted:
        """The print file of a batch's print items; an unreadable PDF fails its item alone.

        Args:
            items: the batch's rendered invoices of the print channel, in any order.
            batch_id: the batch, first part of the file names.
        """
        formatted = Formatted()
        readable: list[_Readable] = []
        for item in items:
            try:
                readable.append(_read(item))
            except Exception as exc:  # pypdf raises many types on a damaged file
                formatted.failures[item.doc.number] = (
                    f"invoice {item.doc.number}: its PDF cannot be read for the print file "
                    f"({type(exc).__name__}: {exc}); render it again, then re-run.")
        if not readable:
            return formatted
        readable.sort(key=lambda r: print_order(r.item))
        numbers = tuple(r.item.doc.number for r in readable)
        stem = f"{keys.safe_component(batch_id)}-{keys.digest(*sorted(numbers))[:8]}"
        rows = self._rows(readable)
        day = self.today()
        totals = self._totals(rows)
        try:
            cover = self._cover(batch_id, stem, day, rows, totals)
        except PipelineError as exc:  # every invoice of the file fails with the reason
            formatted.failures.update(dict.fromkeys(numbers, f"print file {stem}: {exc}"))
            return formatted
        pdf = self._merge(cover, readable)
        manifest_csv = self._csv(rows)
        manifest_json = self._json(batch_id, stem, day, rows, totals, pdf, manifest_csv)
        formatted.parcels += [Parcel(f"{stem}.pdf", pdf, numbers),
                              Parcel(f"{stem}.csv", manifest_csv, numbers),
                              Parcel(f"{stem}.json", manifest_json, numbers)]
        return formatted

    @staticmethod
    def _rows(readable: Sequence[_Readable]) -> list[ManifestRow]:
        rows, page = [], _COVER_PAGES + 1
        for sequence, r in enumerate(readable, start=1):
            doc, buyer = r.item.doc, r.item.doc.buyer
            blank = r.pages % 2
            sheets = (r.pages + blank) // 2
            grams = envelope_grams(sheets)
            rows.append(ManifestRow(
                sequence=sequence, invoice_number=doc.number, customer_id=doc.customer_id,
                name=buyer.name, address_line1=buyer.address_line1,
                address_line2=buyer.address_line2 or "", postcode=buyer.postcode,
                city=buyer.city, country=buyer.country, first_page=page, pages=r.pages,
                blank_pages=blank, sheets=sheets, weight_g=grams,
                weight_class=weight_class(grams), sha256=r.item.sha256))
            page += r.pages + blank
        return rows

    @staticmethod
    def _totals(rows: Sequence[ManifestRow]) -> dict[str, Any]:
        """What the cover sheet and the JSON manifest say about the whole file."""
        invoice_sheets = sum(r.sheets for r in rows)
        envelopes = Counter(r.weight_class for r in rows)
        sheets_of = Counter[str]()
        for r in rows:
            sheets_of[r.weight_class] += r.sheets
        limits: list[tuple[int | None, str]] = [*WEIGHT_CLASSES, (None, OVER_WEIGHT)]
        return {
            "invoices": len(rows),
            "sheets": 1 + invoice_sheets,
            "invoice_sheets": invoice_sheets,
            "pages": 2 * (1 + invoice_sheets),
            "blank_pages": 1 + sum(r.blank_pages for r in rows),
            "weight_classes": [{"label": label, "max_g": limit, "envelopes": envelopes[label],
                                "sheets": sheets_of[label]} for limit, label in limits],
            "countries": [{"country": country, "envelopes": n}
                          for country, n in sorted(Counter(r.country for r in rows).items())],
        }

    def _cover(self, batch_id: str, stem: str, day: date, rows: Sequence[ManifestRow],
               totals: dict[str, Any]) -> bytes:
        """The cover sheet's page, laid out by WeasyPrint; it must fit on one page."""
        html = render_template(
            self._env, COVER_TEMPLATE, lang="en", batch_id=batch_id, stem=stem,
            date=day.isoformat(), sender=self.seller.legal_name, invoices=totals["invoices"],
            sheets=totals["sheets"], invoice_sheets=totals["invoice_sheets"],
            pages=totals["pages"], blank_pages=totals["blank_pages"],
            sheet_grams=SHEET_GRAMS, envelope_grams=ENVELOPE_GRAMS,
            classes=totals["weight_classes"], countries=totals["countries"],
            first_invoice=rows[0].invoice_number, last_invoice=rows[-1].invoice_number)
        if self._css is None:
            self._css = CSS(filename=str(self._root / COVER_STYLESHEET),
                            url_fetcher=self._fetcher, font_config=self._fonts)
        try:
            document = HTML(string=html, base_url=(self._root / "assets").as_uri() + "/",
                            url_fetcher=self._fetcher).render(stylesheets=[self._css],
                                                              font_config=self._fonts)
        except FatalURLFetchingError as exc:
            raise TemplateError(f"{COVER_TEMPLATE}: {exc.__cause__ or exc}") from None
        if len(document.pages) != 1:
            raise TemplateError(f"{COVER_TEMPLATE} laid out {len(document.pages)} pages for "
                                f"{len(rows)} invoices; the cover sheet must fit on one page. "
                                "Shorten it and check it with a preview.")
        return bytes(document.write_pdf())

    @staticmethod
    def _merge(cover: bytes, readable: Sequence[_Readable]) -> bytes:
        writer = PdfWriter()
        for pdf in [PdfReader(io.BytesIO(cover))] + [r.reader for r in readable]:
            for page in pdf.pages:
                writer.add_page(page)
            if len(pdf.pages) % 2:  # the next document starts on the front of a sheet
                last = pdf.pages[-1].mediabox
                writer.add_blank_page(float(last.width), float(last.height))
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    @staticmethod
    def _csv(rows: Sequence[ManifestRow]) -> bytes:
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(MANIFEST_COLUMNS)
        out.writerows(r.csv_cells() for r in rows)
        return text.getvalue().encode()

    def _json(self, batch_id: str, stem: str, day: date, rows: Sequence[ManifestRow],
              totals: dict[str, Any], pdf: bytes, manifest_csv: bytes) -> bytes:
        manifest = {
            "batch_id": batch_id,
            "date": day.isoformat(),
            "sender": self.seller.legal_name,
            "files": {kind: {"name": f"{stem}.{kind}", "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}
                      for kind, data in (("pdf", pdf), ("csv", manifest_csv))},
            "duplex": True,
            "cover_pages": _COVER_PAGES,
            "invoices": totals["invoices"],
            "sheets": totals["sheets"],
            "pages": totals["pages"],
            "blank_pages": totals["blank_pages"],
            "sheet_grams": SHEET_GRAMS,
            "envelope_grams": ENVELOPE_GRAMS,
            "weight_classes": totals["weight_classes"],
            "countries": totals["countries"],
            "rows": [asdict(r) for r in rows],
        }
        return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()

