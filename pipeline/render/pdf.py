"""HTML -> PDF with WeasyPrint, keeping everything reusable across documents.

One ``PdfRenderer`` per process holds the Jinja environment, the font
configuration, the parsed stylesheet and the image cache. Resources may only
come from the templates' asset folder; anything else (another local file,
any http(s) URL) stops the render with the refused URL named.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from weasyprint import HTML
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from pipeline.documents import InvoiceDocument
from pipeline.errors import RenderError
from pipeline.render.templates import make_environment, render_template

__all__ = ["PdfRenderer", "AssetOnlyFetcher", "DETERMINISTIC_EPOCH"]

# Fixes the timestamps WeasyPrint's font subsets would otherwise embed, so the
# same document gives the same bytes in any process (verifiable by sha256).
DETERMINISTIC_EPOCH = "1767225600"  # 2026-01-01T00:00:00Z


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


class PdfRenderer:
    """Renders documents to PDF bytes; build one per process and reuse it."""

    def __init__(self, templates_dir: Path) -> None:
        os.environ.setdefault("SOURCE_DATE_EPOCH", DETERMINISTIC_EPOCH)
        self.templates_dir = templates_dir
        self.assets = templates_dir / "assets"
        self.env = make_environment(templates_dir)
        self.fonts = FontConfiguration()
        self.fetcher = AssetOnlyFetcher([self.assets])
        self.base_url = self.assets.resolve().as_uri() + "/"
        self.cache: dict[str, object] = {}

    def html(self, doc: InvoiceDocument) -> str:
        """The HTML of one document (also what the preview shows)."""
        name = "credit_note.html" if doc.is_credit_note else "invoice.html"
        return render_template(self.env, name, doc=doc, lang="fr")

    def render(self, doc: InvoiceDocument) -> bytes:
        """PDF bytes of one document; the same document always gives the same bytes."""
        html = self.html(doc)
        try:
            document = HTML(string=html, base_url=self.base_url,
                            url_fetcher=self.fetcher).render(font_config=self.fonts,
                                                             cache=self.cache)
            return document.write_pdf()
        except FatalURLFetchingError as exc:
            raise RenderError(f"invoice {doc.number}: {exc.__cause__ or exc}") from None
