"""A small synchronous REST client for tests, and job builders."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx

TERMINAL_JOB = {"succeeded", "failed", "cancelled"}


class Api:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=30, headers=headers)

    def close(self) -> None:
        self.http.close()

    def submit(self, job: dict[str, Any], *, key: str | None = None, expect: int = 201) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        r = self.http.post("/v1/jobs", json={"job": job}, headers=headers)
        assert r.status_code == expect, (r.status_code, r.text)
        return str(r.json()["id"])

    def get(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, (r.status_code, r.text)
        return dict(r.json())

    def wait(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 60.0,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """Poll until `until(job)` (default: the job finished), or fail at the deadline."""
        check = until or (lambda j: j["status"] in TERMINAL_JOB)
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                job = self.get(job_id)
            except (httpx.HTTPError, AssertionError):
                time.sleep(interval)
                continue
            if check(job):
                return job
            time.sleep(interval)
        states = {n["id"]: n["state"] for n in job.get("nodes", [])}
        raise AssertionError(
            f"job {job_id} not done after {timeout}s: {job.get('status')} {states}"
        )


def node(
    node_id: str,
    command: str = "true",
    deps: Sequence[str] = (),
    *,
    retries: int = 0,
    timeout: float | None = 30,
    key: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": node_id,
        "command": command,
        "retries": retries,
        "timeout_seconds": timeout,
        "idempotency_key": key,
        "depends_on": list(deps),
        **extra,
    }


def example_job() -> dict[str, Any]:
    """The issue's example, exactly."""
    return {
        "name": "example-dag",
        "nodes": [
            {
                "id": "extract",
                "name": "extract",
                "command": "echo extract",
                "retries": 2,
                "timeout_seconds": 10,
                "idempotency_key": "extract-v1",
                "depends_on": [],
            },
            {
                "id": "transform",
                "name": "transform",
                "command": "echo transform",
                "retries": 2,
                "timeout_seconds": 10,
                "idempotency_key": "transform-v1",
                "depends_on": ["extract"],
            },
            {
                "id": "load",
                "name": "load",
                "command": "echo load",
                "retries": 2,
                "timeout_seconds": 10,
                "idempotency_key": "load-v1",
                "depends_on": ["transform"],
            },
        ],
    }


def ts(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


def nodes_by_id(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in job["nodes"]}
