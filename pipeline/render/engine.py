"""Render engines: a render-ready document and a template set in, PDF bytes out.

Batching, workers and delivery only know ``RenderEngine``; WeasyPrint is the
engine today and another (Typst, say) can be added to ``ENGINES`` without
touching them. An engine is built once per worker process and keeps what can
be reused: Jinja environments and compiled templates, the font
configuration, parsed stylesheets, the image cache.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from weasyprint import CSS, HTML, Attachment
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from pipeline.documents import InvoiceDocument
from pipeline.einvoice import facturx
from pipeline.einvoice.en16931 import to_en16931
from pipeline.errors import RenderError
from pipeline.render.templates import TemplateSet

__all__ = ["RenderEngine", "WeasyPrintEngine", "AssetOnlyFetcher", "ENGINES", "make_engine",
           "DETERMINISTIC_EPOCH", "harfbuzz_subsetting"]

log = logging.getLogger(__name__)

# Fixes the timestamps WeasyPrint's font subsets would otherwise embed, so the
# same document gives the same bytes in any process (verifiable by sha256).
DETERMINISTIC_EPOCH = "1767225600"  # 2026-01-01T00:00:00Z


class RenderEngine(Protocol):
    """Turns documents into PDF bytes."""

    name: str
    engine_seconds: float
    """Time spent in the layout engine itself so far, to tell it from pipeline overhead."""

    def html(self, doc: InvoiceDocument, lang: str | None = None) -> str:
        """The markup the engine lays out (what a preview shows)."""
        ...

    def render(self, doc: InvoiceDocument, lang: str | None = None) -> bytes:
        """PDF bytes; the same document always gives the same bytes."""
        ...


def harfbuzz_subsetting() -> bool:
    """Whether WeasyPrint subsets fonts with HarfBuzz (2x faster than its fontTools fallback)."""
    from weasyprint.text.ffi import harfbuzz, harfbuzz_subset
    return harfbuzz_subset is not None and bool(harfbuzz.hb_version_atleast(4, 1, 0))


class AssetOnlyFetcher(URLFetcher):
    """A URL fetcher that serves files under the asset folders and refuses the rest."""

    def __init__(self, allowed_dirs: list[Path]) -> None:
        super().__init__(allowed_protocols={"file"}, fail_on_errors=True)
        self.allowed = [d.resolve() for d in allowed_dirs]

    def fetch(self, url: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        parsed = urlparse(url)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path)).resolve()
            if any(path.is_relative_to(d) for d in self.allowed) and path.is_file():
                return super().fetch(url, headers)
        raise ValueError(f"resource refused (only files under the template assets may load): {url}")


class WeasyPrintEngine:
    """HTML and CSS laid out by WeasyPrint; every PDF is a Factur-X PDF/A-3b."""

    name = "weasyprint"

    def __init__(self, templates_dir: Path) -> None:
        os.environ.setdefault("SOURCE_DATE_EPOCH", DETERMINISTIC_EPOCH)
        if not harfbuzz_subsetting():
            log.warning("WeasyPrint is not using HarfBuzz font subsetting: rendering is more "
                        "than twice as slow. Install libharfbuzz-subset0 (make install does).")
        self.templates = TemplateSet(templates_dir)
        self.fonts = FontConfiguration()
        self.fetcher = AssetOnlyFetcher(self.templates.asset_dirs())
        self.cache: dict[str, object] = {}
        self._stylesheets: dict[Path, CSS] = {}
        self.engine_seconds = 0.0

    def html(self, doc: InvoiceDocument, lang: str | None = None) -> str:
        """The HTML of one document."""
        return self.templates.html(doc, lang)

    def factur_x(self, doc: InvoiceDocument) -> Attachment:
        """The ``factur-x.xml`` embedded in the document's PDF."""
        return facturx.attachment(to_en16931(doc))[0]

    def _stylesheet(self, path: Path) -> CSS:
        if path not in self._stylesheets:
            self._stylesheets[path] = CSS(filename=str(path), url_fetcher=self.fetcher,
                                          font_config=self.fonts)
        return self._stylesheets[path]

    def render(self, doc: InvoiceDocument, lang: str | None = None) -> bytes:
        """PDF bytes of one document."""
        html = self.html(doc, lang)
        css = self.templates.stylesheet(doc)
        start = time.perf_counter()
        try:
            document = HTML(string=html, base_url=css.parent.as_uri() + "/",
                            url_fetcher=self.fetcher).render(
                stylesheets=[self._stylesheet(css)], font_config=self.fonts, cache=self.cache)
            return document.write_pdf(pdf_variant=facturx.PDF_VARIANT,
                                      attachments=[self.factur_x(doc)],
                                      xmp_metadata=[io.BytesIO(facturx.XMP)])
        except FatalURLFetchingError as exc:
            raise RenderError(f"invoice {doc.number}: {exc.__cause__ or exc}") from None
        finally:
            self.engine_seconds += time.perf_counter() - start


ENGINES: dict[str, type[WeasyPrintEngine]] = {"weasyprint": WeasyPrintEngine}


def make_engine(name: str, templates_dir: Path) -> RenderEngine:
    """Build an engine by name (``settings.render.engine``)."""
    try:
        return ENGINES[name](templates_dir)
    except KeyError:
        raise RenderError(f"unknown render engine {name!r}; known: {sorted(ENGINES)}") from None
