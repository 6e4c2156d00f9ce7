"""The one picklable entry point run in render workers.

Its inputs and outputs are plain data (documents in; number, bytes, digest or
error out) and each worker process builds its ``PdfRenderer`` once, then
reuses it for every batch it receives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.documents import InvoiceDocument
from pipeline.errors import PipelineError
from pipeline.render.pdf import PdfRenderer

__all__ = ["Rendered", "w_render_batch"]

_renderers: dict[str, PdfRenderer] = {}


@dataclass(frozen=True)
class Rendered:
    """The outcome of rendering one document: PDF bytes, or the error."""

    number: str
    pdf: bytes | None
    sha256: str | None
    error: str | None = None


def _renderer(templates_dir: str) -> PdfRenderer:
    if templates_dir not in _renderers:
        _renderers[templates_dir] = PdfRenderer(Path(templates_dir))
    return _renderers[templates_dir]


def w_render_batch(docs: list[InvoiceDocument], templates_dir: str) -> list[Rendered]:
    """Render a batch; a failing document fails alone, the others still render."""
    renderer = _renderer(templates_dir)
    results = []
    for doc in docs:
        try:
            pdf = renderer.render(doc)
        except PipelineError as exc:
            results.append(Rendered(doc.number, None, None, str(exc)))
            continue
        except Exception as exc:  # a WeasyPrint bug must not take the batch down
            results.append(Rendered(doc.number, None, None,
                                    f"invoice {doc.number}: {type(exc).__name__}: {exc}"))
            continue
        results.append(Rendered(doc.number, pdf, hashlib.sha256(pdf).hexdigest()))
    return results
