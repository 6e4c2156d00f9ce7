"""S3, or any S3-compatible store (MinIO, Ceph, Scaleway, OVH), through boto3.

Write-once with conditional writes: every object goes up with ``If-None-Match: *``
(``PutObject``, or ``CompleteMultipartUpload`` for large files), so the store
itself refuses to replace a key, even against a second run racing this one. A
refusal (412) is answered by comparing digests: the same bytes are a no-op,
other bytes an ``ArchiveConflictError``. Stores that reject the header
(``conditional_writes = false``) get a HEAD before each write instead; two runs
writing the same key in the same instant could then both write, and the last
one wins, which is why conditional writes are the default.

Each object carries its sha256 (and its invoice number, when it has one) in its
metadata; with ``retention_years`` set, archived artifacts get an Object Lock
retention in compliance mode, which not even the account's root user can lift.
Credentials and region come from the standard AWS chain (environment, profile,
instance role).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from pipeline.errors import StorageError
from pipeline.storage.base import (
    ArchiveConflictError,
    Blob,
    MissingObjectError,
    StoredObject,
    check_key,
    put_concurrently,
    sha256_of,
)

__all__ = ["S3Storage", "parse_s3_url"]

MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last
_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix")."""
    if url[:5].lower() != "s3://":
        raise ValueError(f"{url!r} is not an S3 URL; write s3://bucket or s3://bucket/prefix")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; write s3://bucket or s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _years_from_now(years: int) -> datetime:
    now = datetime.now(UTC)
    try:
        return now.replace(year=now.year + years)
    except ValueError:  # 29 February
        return now.replace(year=now.year + years, day=28)


class S3Storage:
    """Objects under ``s3://bucket/prefix``."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 workers: int = 16, retention_years: int | None = None,
                 conditional_writes: bool = True,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 part_size: int = PART_SIZE) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.workers = workers
        self.retention_years = retention_years
        self.conditional_writes = conditional_writes
        self.multipart_threshold, self.part_size = multipart_threshold, part_size
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/") + (
            f" at {endpoint_url}" if endpoint_url else "")
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url,
            config=Config(max_pool_connections=max(10, workers), connect_timeout=10,
                          read_timeout=120, retries={"max_attempts": 5, "mode": "standard"}))

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"{self.location}: {action} {key} failed: {exc}")

    def put(self, key: str, data: bytes,
            metadata: Mapping[str, str] | None = None, *, retain: bool = True) -> StoredObject:
        """Upload ``data`` unless the key holds it already; ``retain`` applies the Object Lock
        retention, if one is set (index parts are not retained: compaction replaces them)."""
        full, digest = self._key(key), sha256_of(data)
        args: dict[str, Any] = {
            "Bucket": self.bucket, "Key": full,
            # S3 metadata travels in HTTP headers: ASCII only, so anything else is escaped.
            "Metadata": {"sha256": digest,
                         **{k: quote(v, safe=" ./-_:") for k, v in (metadata or {}).items()}}}
        if self.retention_years and retain:
            args |= {"ObjectLockMode": "COMPLIANCE",
                     "ObjectLockRetainUntilDate": _years_from_now(self.retention_years)}
        if not self.conditional_writes and (found := self.head(key)) is not None:
            return self._same_or_conflict(key, found.sha256, digest, len(data))
        try:
            if len(data) >= self.multipart_threshold:
                self._multipart(args, data)
            else:
                # The store checks the body against its SHA-256 (and Object Lock needs one).
                self.client.put_object(Body=data, ChecksumAlgorithm="SHA256", **args,
                                       **self._if_absent())
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                found = self.head(key)
                if found is None:  # another run's upload of the key is completing now
                    raise StorageError(f"{self.location}: {key} is being written by another "
                                       "run; re-run to compare it") from exc
                return self._same_or_conflict(key, found.sha256, digest, len(data))
            if _code(exc) in ("NotImplemented", "501"):
                raise StorageError(
                    f"{self.location}: the store refused a conditional write (If-None-Match) "
                    f"for {key}: {exc}. Set INVOICES_ARCHIVE__CONDITIONAL_WRITES=false for "
                    "this store (see the README on write-once archives).") from exc
            raise self._error("writing", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("writing", key, exc) from exc
        return StoredObject(key, digest, len(data), created=True)

    def _if_absent(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self.conditional_writes else {}

    def _same_or_conflict(self, key: str, stored: str, digest: str, size: int) -> StoredObject:
        if stored != digest:
            raise ArchiveConflictError(self.location, key, stored, digest)
        return StoredObject(key, digest, size, created=False)

    def _multipart(self, args: dict[str, Any], data: bytes) -> None:
        """Large files in parts; the object appears only when the upload completes."""
        upload = self.client.create_multipart_upload(**args)["UploadId"]
        where = {"Bucket": args["Bucket"], "Key": args["Key"], "UploadId": upload}
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                reply = self.client.upload_part(
                    Body=data[start:start + self.part_size], PartNumber=number, **where)
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
            self.client.complete_multipart_upload(
                MultipartUpload={"Parts": parts}, **where, **self._if_absent())
        except BaseException:
            try:
                self.client.abort_multipart_upload(**where)
            except (ClientError, BotoCoreError):
                pass  # the store expires abandoned uploads by its lifecycle rules
            raise

    def put_many(self, blobs: Sequence[Blob]) -> list[StoredObject | StorageError]:
        """Upload over a bounded thread pool (boto3 clients are thread-safe)."""
        return put_concurrently(self, blobs, self.workers)

    def get(self, key: str) -> bytes:
        """Download the object under ``key``."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(reply["Body"].read())
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise MissingObjectError(f"{self.location}: no object {key}") from None
            raise self._error("reading", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("reading", key, exc) from exc

    def head(self, key: str) -> StoredObject | None:
        """The digest recorded in the object's metadata, and its size."""
        try:
            reply = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._error("looking at", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("looking at", key, exc) from exc
        digest = reply.get("Metadata", {}).get("sha256")
        if digest is None:  # written by something else than this pipeline
            digest = sha256_of(self.get(key))
        return StoredObject(key, digest, int(reply["ContentLength"]), created=False)

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix``, sorted (S3 lists in key order)."""
        full = self._key(prefix) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full)
            found = [item["Key"][strip:] for page in pages for item in page.get("Contents", ())]
        except (ClientError, BotoCoreError) as exc:
            raise self._error("listing", prefix, exc) from exc
        return iter(sorted(found))

    def delete(self, keys: Sequence[str]) -> None:
        """Remove merged index parts, a thousand per request."""
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            try:
                reply = self.client.delete_objects(Bucket=self.bucket,
                                                   Delete={"Objects": chunk, "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._error("deleting", chunk[0]["Key"], exc) from exc
            if errors := reply.get("Errors"):
                raise StorageError(f"{self.location}: could not delete "
                                   + ", ".join(f"{e['Key']} ({e.get('Code')})" for e in errors))

    def check(self, writing: bool) -> str | None:
        """Reach the bucket (HeadBucket), and check Object Lock when retention is asked."""
        tried = f"HeadBucket on {self.bucket!r}" + (f" at {self.endpoint_url}"
                                                    if self.endpoint_url else "")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            return (f"{tried}: no AWS credentials found (tried AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, and the instance role)")
        except ClientError as exc:
            code = _code(exc)
            what = {"404": "the bucket does not exist (or the endpoint is not an S3 store)",
                    "NoSuchBucket": "the bucket does not exist", "403": "access denied "
                    "(check the credentials and the bucket policy)"}.get(code, str(exc))
            return f"{tried}: {what}"
        except BotoCoreError as exc:
            return f"{tried}: {exc}"
        return None

    def retention_problem(self) -> str | None:
        """Why the asked Object Lock retention cannot be applied to this bucket, or None."""
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = lock["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
        except (ClientError, BotoCoreError):
            enabled = False
        if enabled:
            return None
        return (f"Object Lock is not enabled on bucket {self.bucket!r} "
                "(GetObjectLockConfiguration); it can only be enabled when a bucket is created")
