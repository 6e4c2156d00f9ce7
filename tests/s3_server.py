"""A real S3-compatible HTTP server on loopback: moto in server mode, in its own process.

The pipeline talks to it through boto3 exactly as it would to AWS or MinIO; the
credentials are the standard AWS environment variables, set here to dummies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from secrets import token_hex
from typing import Any

import boto3
import pytest

from tests.pg_server import free_port

__all__ = ["s3_endpoint", "s3_client", "new_bucket", "start_moto", "S3_ENV"]

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}



def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """Start ``moto_server`` on a free loopback port; returns the process and its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server for the whole session, AWS variables pointing at it."""
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    process, url = start_moto()
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_client(s3_endpoint: str) -> Any:
    """A plain boto3 client on the server, to look behind the pipeline's back."""
    return boto3.client("s3", endpoint_url=s3_endpoint)


def new_bucket(client: Any, *, versioned: bool = False, object_lock: bool = False) -> str:
    """A fresh bucket; versioning lets a test count every PUT that created an object."""
    name = f"archive-{token_hex(6)}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    if versioned and not object_lock:
        client.put_bucket_versioning(Bucket=name,
                                     VersioningConfiguration={"Status": "Enabled"})
    return name
