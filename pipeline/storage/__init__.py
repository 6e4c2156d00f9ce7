"""Archive storage backends behind one small protocol, chosen by the archive URL."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.settings import Settings
from pipeline.storage.base import (
    ArchiveConflictError,
    Blob,
    MissingObjectError,
    Storage,
    StoredObject,
)
from pipeline.storage.local import LocalStorage

__all__ = ["Storage", "StoredObject", "Blob", "LocalStorage", "ArchiveConflictError",
           "MissingObjectError", "open_storage", "url_scheme", "SCHEMES"]

SCHEMES = ("s3",)
"""URL schemes the archive understands; anything else with a scheme is refused."""
# Anything that starts like a URL is taken for one, so that a typo (``s3:/bucket``) is
# refused instead of naming a local folder "s3:".
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def url_scheme(url: str | None) -> str | None:
    """The scheme of an archive URL (``s3``), or None for a local path."""
    match = _SCHEME.match(url or "")
    return match.group(1).lower() if match else None


def open_storage(settings: Settings) -> Storage:
    """The archive store the settings name: a local folder unless the URL says ``s3://``.

    Raises ValueError for a scheme no backend serves (preflight reports it first).
    """
    archive = settings.archive
    scheme = url_scheme(archive.url)
    if scheme is None:
        return LocalStorage(Path(archive.url) if archive.url else settings.home / "archive")
    if scheme == "s3":
        from pipeline.storage.s3 import S3Storage, parse_s3_url  # boto3 only when asked for

        bucket, prefix = parse_s3_url(archive.url or "")
        return S3Storage(bucket, prefix, endpoint_url=archive.endpoint_url,
                         workers=archive.upload_workers, retention_years=archive.retention_years,
                         conditional_writes=archive.conditional_writes)
    raise ValueError(f"{scheme}:// archives are not supported (only local paths and "
                     f"{', '.join(s + '://' for s in SCHEMES)})")
