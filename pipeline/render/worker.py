"""The one picklable entry point run in render workers.

Its inputs and outputs are plain data (documents in; number, bytes, digest or
error out). Each worker process builds its engine once, then reuses it for
every batch it receives; it holds one batch at a time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.documents import InvoiceDocument
from pipeline.einvoice.crosscheck import check_pdf
from pipeline.errors import PipelineError
from pipeline.render.engine import RenderEngine, make_engine

__all__ = ["Rendered", "w_render_batch", "render_documents"]

_engines: dict[tuple[str, str], RenderEngine] = {}


@dataclass(frozen=True)
class Rendered:
    """The outcome of rendering one document: PDF bytes, or the error."""

    number: str
    pdf: bytes | None
    sha256: str | None
    error: str | None = None
    engine_s: float = 0.0
    """Seconds spent inside the layout engine (the rest is pipeline overhead)."""


def render_documents(engine: RenderEngine, docs: list[InvoiceDocument]) -> list[Rendered]:
    """Render documents and cross-check each artifact's totals against the model; a failing
    document fails alone (with the reason), the others still render."""
    results = []
    for doc in docs:
        before = engine.engine_seconds
        try:
            pdf = engine.render(doc)
        except PipelineError as exc:
            results.append(Rendered(doc.number, None, None, str(exc)))
            continue
        except Exception as exc:  # a renderer bug must not take the batch down
            results.append(Rendered(doc.number, None, None,
                                    f"invoice {doc.number}: {type(exc).__name__}: {exc}"))
            continue
        mismatches = check_pdf(doc, pdf)
        if mismatches:
            results.append(Rendered(doc.number, None, None,
                                    f"invoice {doc.number}: totals read back from the PDF do "
                                    f"not match, not delivered: {'; '.join(mismatches)}"))
            continue
        results.append(Rendered(doc.number, pdf, hashlib.sha256(pdf).hexdigest(),
                                engine_s=engine.engine_seconds - before))
    return results


def w_render_batch(docs: list[InvoiceDocument], templates_dir: str,
                   engine: str = "weasyprint") -> list[Rendered]:
    """Worker entry point: render a batch with this process's engine."""
    key = (engine, templates_dir)
    if key not in _engines:
        _engines[key] = make_engine(engine, Path(templates_dir))
    return render_documents(_engines[key], docs)
