"""The one picklable entry point run in render workers.

Its inputs and outputs are plain data (documents in; number, bytes, digest or
error out). Each worker process builds its engine once, then reuses it for
every batch it receives; it holds one batch at a time.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    logs: tuple[tuple[int, str, str], ...] = ()
    """What was logged while rendering it (level, logger, message), for the parent to log:
    a worker process has no handler of its own, and the run's log is the parent's."""


class _Capture(logging.Handler):
    """Collects the records logged while one document renders (WeasyPrint's warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))


@contextmanager
def _captured() -> Iterator[_Capture]:
    """Capture in a worker process only: in the parent, records reach its handlers."""
    capture, root = _Capture(), logging.getLogger()
    if multiprocessing.parent_process() is None:
        yield capture
        return
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)


def render_documents(engine: RenderEngine, docs: list[InvoiceDocument]) -> list[Rendered]:
    """Render documents and cross-check each artifact's totals against the model; a failing
    document fails alone (with the reason), the others still render."""
    results = []
    for doc in docs:
        with _captured() as capture:
            results.append(_render_one(engine, doc))
        if capture.records:
            results[-1] = replace(results[-1], logs=tuple(capture.records))
    return results


def _render_one(engine: RenderEngine, doc: InvoiceDocument) -> Rendered:
    before = engine.engine_seconds
    try:
        pdf = engine.render(doc)
    except PipelineError as exc:
        return Rendered(doc.number, None, None, str(exc))
    except Exception as exc:  # a renderer bug must not take the batch down
        return Rendered(doc.number, None, None,
                        f"invoice {doc.number}: {type(exc).__name__}: {exc}")
    mismatches = check_pdf(doc, pdf)
    if mismatches:
        return Rendered(doc.number, None, None,
                        f"invoice {doc.number}: totals read back from the PDF do not match, "
                        f"not delivered: {'; '.join(mismatches)}")
    return Rendered(doc.number, pdf, hashlib.sha256(pdf).hexdigest(),
                    engine_s=engine.engine_seconds - before)


def w_render_batch(docs: list[InvoiceDocument], templates_dir: str,
                   engine: str = "weasyprint") -> list[Rendered]:
    """Worker entry point: render a batch with this process's engine."""
    key = (engine, templates_dir)
    if key not in _engines:
        _engines[key] = make_engine(engine, Path(templates_dir))
    return render_documents(_engines[key], docs)
