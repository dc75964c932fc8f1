"""GET /openapi.json describes the real API: every route of the falcon app, every status the
code answers; and schemathesis, fuzzing a real api with a token, finds no 5xx and no response
outside the document."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minitemporal.api.app import SCOPES, ApiDeps, create_app
from minitemporal.api.auth import TokenSet
from minitemporal.api.openapi import build_openapi
from minitemporal.config import Settings
from minitemporal.errors import (
    ConfigurationError,
    CredentialsRejected,
    MinitemporalError,
)
from minitemporal.observability.health import Health
from minitemporal.observability.metrics import Metrics
from minitemporal.rpc.client import SchedulerClient
from tests.conftest import fresh_cluster
from tests.support.security import token
from tests.support.services import free_port

METHODS = ("get", "head", "post", "put", "patch", "delete")


def _routes(app: Any) -> dict[str, set[str]]:
    """(template -> methods with a responder of ours) from falcon's compiled router."""
    found: dict[str, set[str]] = {}
    stack = list(app._router._roots)
    while stack:
        n = stack.pop()
        stack.extend(n.children)
        if n.method_map:
            found[n.uri_template] = {
                m.lower()
                for m, responder in n.method_map.items()
                if getattr(responder, "__name__", "").startswith("on_")
            }
    return found


def _app(auth: bool) -> Any:
    """The app, built inside an event loop as the api builds it: grpc's aio channel takes the
    running loop (outside one it needs a current loop, which an earlier test may have unset)."""
    _, entry = token("x", "read")

    async def build() -> Any:
        deps = ApiDeps(
            scheduler=SchedulerClient("127.0.0.1:1", metrics=Metrics().grpc),
            limits=Settings().limits,
            max_body_bytes=1024,
            metrics=Metrics(),
            health=Health(),
            tokens=TokenSet.load(entry, None) if auth else None,
        )
        return create_app(deps)

    return asyncio.run(build())


@pytest.mark.parametrize("auth", [True, False])
def test_every_route_and_method_is_described(auth: bool) -> None:
    spec = build_openapi(Settings().limits, auth=auth)
    described = {path: {m for m in ops if m in METHODS} for path, ops in spec["paths"].items()}
    assert _routes(_app(auth)) == described


def test_every_status_the_code_can_answer_is_described() -> None:
    spec = build_openapi(Settings().limits, auth=True, metrics_auth=True)
    ops = {(p, m.upper()): op for p, item in spec["paths"].items() for m, op in item.items()}
    documented = {int(code) for op in ops.values() for code in op["responses"]}

    def statuses(cls: type[MinitemporalError]) -> set[int]:
        return {cls.http_status} | {s for sub in cls.__subclasses__() for s in statuses(sub)}

    # Every error the system raises on purpose, but the startup-only configuration error and
    # the 500 of a bug, is somewhere in the document.
    raised = statuses(MinitemporalError) - {ConfigurationError.http_status, 500}
    assert raised <= documented, raised - documented
    assert CredentialsRejected.http_status == 503
    for (path, method), op in ops.items():
        codes = {int(c) for c in op["responses"]}
        if (path, method) in SCOPES:
            assert {401, 403} <= codes, (path, method)
            assert op["security"] == [{"bearer": [SCOPES[(path, method)]]}]
        if path.startswith("/v1/"):
            assert 503 in codes, (path, method)  # the scheduler may be unavailable
        if "{job_id}" in path:
            assert 404 in codes, (path, method)
        if "requestBody" in op:
            assert {400, 408, 413, 422} <= codes, (path, method)


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin_url: str,
    pg_template: str,
    redis_server_url: str,
) -> Iterator[tuple[str, str, Path]]:
    """A real scheduler and api with tokens; no worker, so no fuzzed command ever runs."""
    tmp = tmp_path_factory.mktemp("fuzz")
    secret, entry = token("fuzz", "read,submit,metrics")
    env = {"MINITEMPORAL_API_TOKENS": entry, "MINITEMPORAL_METRICS_AUTH": "1"}
    with fresh_cluster(tmp, pg_admin_url, pg_template, redis_server_url, env) as cluster:
        grpc = free_port()
        sched = cluster.add("scheduler", "scheduler", grpc_port=grpc).start()
        api = cluster.add("api", "api", scheduler_port=grpc).start()
        sched.wait_healthy()
        api.wait_healthy()
        yield api.http_url, secret, tmp


def test_the_served_document_is_the_built_one(fuzz_target: tuple[str, str, Path]) -> None:
    url, _, _ = fuzz_target
    served = httpx.get(url + "/openapi.json", timeout=5).json()
    assert served == build_openapi(Settings().limits, auth=True, metrics_auth=True)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    fuzz_target: tuple[str, str, Path],
) -> None:
    url, secret, tmp = fuzz_target
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is part of the test extra: pip install '.[test]'"
    result = subprocess.run(
        [
            cli,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            # Valid by the schema is not always acceptable: a depends_on naming no node, a
            # cycle, a NUL byte in a command are 422s a JSON Schema cannot express.
            "--exclude-checks",
            "positive_data_acceptance,use_after_free,ensure_resource_availability",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "40",
            "--max-time",
            "60",
            "--seed",
            "7",
            "--request-timeout",
            "10",
            "--header",
            f"Authorization: Bearer {secret}",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp,
    )
    print(result.stdout[-3000:])
    failures = result.stdout.find("FAILURES")
    report = result.stdout[failures:] if failures >= 0 else result.stdout
    assert result.returncode == 0, report[:20000] + result.stderr[-3000:]
