"""A real ``prefect server`` on loopback, started once per test session, and a small
REST client for what the UI does (trigger a deployment, press Retry, read artifacts
and logs).

The port goes through ``PREFECT_SERVER_API_PORT``, not ``--port``, so the UI calls
the right API (../shared/notes/prefect.md, pitfall 4).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pg_server import free_port

__all__ = ["prefect_api", "PrefectApi", "start_prefect_server"]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}



def start_prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``prefect server start`` with its own PREFECT_HOME; returns it and its API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).parent / "prefect"
    process = subprocess.Popen([str(prefect), "server", "start"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("prefect server did not start")
        time.sleep(0.25)


class _RetryingTransport(httpx.BaseTransport):
    """Retries what a busy server answers 429, 502 or 503 (its SQLite database locked under
    load), as Prefect's own client and the UI do, instead of failing the test on it."""

    def __init__(self, inner: httpx.BaseTransport, attempts: int = 6) -> None:
        self.inner, self.attempts = inner, attempts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.attempts):
            response = self.inner.handle_request(request)
            if response.status_code not in (429, 502, 503) or attempt == self.attempts - 1:
                return response
            response.close()
            time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.inner.close()


class PrefectApi:
    """The REST calls the UI makes, for tests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30,
                                 transport=_RetryingTransport(httpx.HTTPTransport()))

    def deployment_id(self, flow: str, deployment: str, wait_s: float = 120) -> str:
        deadline = time.monotonic() + wait_s
        while True:
            reply = self.http.get(f"/deployments/name/{flow}/{deployment}")
            if reply.status_code == 200:
                return str(reply.json()["id"])
            if time.monotonic() > deadline:
                raise AssertionError(f"deployment {flow}/{deployment} never appeared")
            time.sleep(0.5)

    def run_deployment(self, deployment_id: str, parameters: dict[str, Any]) -> str:
        reply = self.http.post(f"/deployments/{deployment_id}/create_flow_run",
                               json={"parameters": parameters})
        reply.raise_for_status()
        return str(reply.json()["id"])

    def flow_run(self, run_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/flow_runs/{run_id}")
        reply.raise_for_status()
        return dict(reply.json())

    def wait(self, run_id: str, timeout_s: float = 600, after_count: int = 0) -> dict[str, Any]:
        """The flow run once it is final (and has run more than ``after_count`` times)."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.flow_run(run_id)
            if run["state_type"] in TERMINAL and run["run_count"] > after_count:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run_id} still {run['state_type']}")
            time.sleep(1)

    def press_retry(self, run_id: str) -> None:
        """What the v2 UI's Retry button sends."""
        reply = self.http.post(f"/flow_runs/{run_id}/set_state", json={
            "state": {"type": "SCHEDULED", "name": "AwaitingRetry",
                      "message": "Retry from the UI"}, "force": True})
        reply.raise_for_status()
        assert reply.json()["status"] == "ACCEPT", reply.json()

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        reply = self.http.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run_id]}}})
        reply.raise_for_status()
        return list(reply.json())

    def logs(self, run_id: str) -> list[str]:
        found: list[str] = []
        while True:
            reply = self.http.post("/logs/filter", json={
                "logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                "offset": len(found), "sort": "TIMESTAMP_ASC"})
            reply.raise_for_status()
            page = [entry["message"] for entry in reply.json()]
            found += page
            if len(page) < 200:
                return found


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[PrefectApi]:
    """A prefect server for the whole session (about 10 s to start on 2 cores)."""
    home = Path(tempfile.mkdtemp(prefix="prefect-server-"))
    process, url = start_prefect_server(home)
    try:
        yield PrefectApi(url)
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
