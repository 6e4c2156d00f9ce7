"""Deterministic ids and keys: a re-run computes the same names and finds its own work.

Invoice numbers come from the customer's ERP and may hold anything; every key
built from them goes through ``safe_component`` so no customer data can
traverse directories or inject characters into file names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import date

from pipeline.schemas import CHANNELS

__all__ = ["safe_component", "short_component", "digest", "batch_id", "pdf_key", "delivery_key",
           "variant_key", "idempotency_key", "delivered_keys", "message_id", "extract_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# File systems cap a name at 255 bytes; leave room for a suffix and a temporary prefix.
MAX_COMPONENT = 200


def safe_component(value: str) -> str:
    """A file-name-safe, reversible rendering of ``value`` (percent-style escapes).

    Only ``[A-Za-z0-9_-]`` pass through; dots are escaped too so that ``..``
    can never appear.
    """
    if not value:
        raise ValueError("an empty value cannot name a file")
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)
    if len(safe) > MAX_COMPONENT:
        raise ValueError(f"{value[:40]!r}... is too long to name a file ({len(safe)} characters "
                         f"once escaped, at most {MAX_COMPONENT})")
    return safe


def short_component(value: str, limit: int = 60) -> str:
    """``safe_component``, cut to ``limit`` characters with a digest of the whole when it
    is longer, so that any customer id can name a letter (still unique, deterministic)."""
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)
    if not value:
        raise ValueError("an empty value cannot name a file")
    return safe if len(safe) <= limit else f"{safe[:limit - 13]}-{digest(value)[:12]}"


def digest(*parts: str) -> str:
    """Hex sha256 of parts joined unambiguously."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def extract_id(invoice_numbers: Iterable[str]) -> str:
    """Short id of an extract: the same invoices give the same id."""
    return digest(*sorted(invoice_numbers))[:12]


def batch_id(invoice_numbers: Iterable[str]) -> str:
    """Id of a batch, from the invoice numbers it holds."""
    return "b-" + digest(*invoice_numbers)[:12]


def _period(issue_date: date) -> str:
    return f"{issue_date:%Y/%m}"


def pdf_key(invoice_number: str, issue_date: date) -> str:
    """Archive key of an invoice's PDF."""
    return f"invoices/{_period(issue_date)}/{safe_component(invoice_number)}.pdf"


_FILE_NAME = re.compile(r"[A-Za-z0-9_%-]+(\.[A-Za-z0-9]+)*")


def delivery_key(channel: str, name: str, day: date) -> str:
    """Archive key of a delivered file (an .eml, a print file, an EDI interchange).

    ``name`` is a parcel's file name, built from escaped components and a suffix;
    anything else is refused rather than escaped twice.
    """
    if not _FILE_NAME.fullmatch(name) or len(name) > MAX_COMPONENT + 20:
        raise ValueError(f"{name[:60]!r} is not a safe file name for the archive")
    return f"deliveries/{safe_component(channel)}/{_period(day)}/{name}"


def variant_key(key: str, sha256: str) -> str:
    """The key of other bytes sent under the same name (a print file re-sent another day):
    the digest's start goes before the suffixes, so both versions are kept."""
    folder, _, name = key.rpartition("/")
    stem, dot, suffixes = name.partition(".")
    return f"{folder}/{stem}.{sha256[:12]}{dot}{suffixes}"


def idempotency_key(invoice_number: str, channel: str) -> str:
    """Ledger key: one delivery per invoice and channel, ever."""
    return f"{channel}:{invoice_number}"


def delivered_keys(invoice_number: str) -> list[str]:
    """Ledger keys that, once final, mean the invoice went out: those of every channel.

    An invoice reaches its buyer once, whichever way: a bounced email that went to print,
    a customer moved to another channel, or French B2B invoices routed to the accredited
    platform once one is configured must not send again what already went out."""
    return [idempotency_key(invoice_number, channel) for channel in CHANNELS]


def message_id(invoice_number: str, pdf_sha256: str, domain: str) -> str:
    """Deterministic RFC 5322 Message-ID: a re-sent message is recognisably the same."""
    return f"<{digest(invoice_number, pdf_sha256)[:32]}@{domain}>"
