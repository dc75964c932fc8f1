"""API authentication against real processes: tokens and scopes, 401/403 that change nothing,
open probes, the loopback-only default and its explicit override."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import fresh_cluster
from tests.support.api import Api, node
from tests.support.procs import ROOT, Cluster, Proc, minitemporal_command
from tests.support.security import token
from tests.support.services import free_port
from tests.support.sse import EventStream
from tests.support.topology import start_split, wait_for


@dataclass
class Secured:
    cluster: Cluster
    procs: list[Proc]
    url: str
    db: str
    tokens: dict[str, str]  # scope set -> token

    def api(self, who: str | None) -> Api:
        return Api(self.url, token=self.tokens[who] if who else None)

    def jobs_in_database(self) -> list[tuple[str, str, object]]:
        with psycopg.connect(self.db) as conn:
            return conn.execute(
                "SELECT id::text, status, cancel_requested_at FROM jobs ORDER BY created_at"
            ).fetchall()


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin_url: str,
    pg_template: str,
    redis_server_url: str,
) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("auth")
    scopes = {"reader": "read", "submitter": "submit", "ci": "read,submit", "prom": "metrics"}
    made = {who: token(who, scope) for who, scope in scopes.items()}
    env = {
        "MINITEMPORAL_API_TOKENS": " ".join(entry for _, entry in made.values()),
        "MINITEMPORAL_METRICS_AUTH": "true",
    }
    with fresh_cluster(tmp, pg_admin_url, pg_template, redis_server_url, env) as cluster:
        url = _start(cluster)
        secrets = {who: secret for who, (secret, _) in made.items()}
        yield Secured(cluster, cluster.procs, url, str(cluster.database_url), secrets)


def _start(cluster: Cluster) -> str:
    grpc = free_port()
    procs = [
        cluster.add("scheduler", "scheduler", grpc_port=grpc).start(),
        cluster.add("api", "api", scheduler_port=grpc).start(),
        cluster.add("worker", "worker", scheduler_port=grpc).start(),
    ]
    for p in procs:
        p.wait_healthy()
    return procs[1].http_url


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and str(body["type"]).endswith("/" + slug)
    return dict(body)


def test_unauthenticated_and_wrong_scope_requests_change_nothing(secured: Secured) -> None:
    job = {"job": {"name": "denied", "nodes": [node("a", "sleep 30")]}}
    anonymous, forged, reader = (
        secured.api(None),
        Api(secured.url, "mt_forged"),
        secured.api("reader"),
    )

    r = anonymous.http.post("/v1/jobs", json=job)
    _problem(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"] == 'Bearer realm="minitemporal"'
    r = forged.http.post("/v1/jobs", json=job)
    _problem(r, 401, "unauthenticated")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    r = reader.http.post("/v1/jobs", json=job)
    _problem(r, 403, "forbidden")
    assert 'error="insufficient_scope", scope="submit"' in r.headers["www-authenticate"]
    r = anonymous.http.post(
        "/v1/jobs", content=b"x" * 100, headers={"Authorization": "Basic dXNlcjpwYXNz"}
    )
    _problem(r, 401, "unauthenticated")
    assert secured.jobs_in_database() == [], "nothing was stored"

    ci = secured.api("ci")
    job_id = ci.submit(job["job"])
    ci.wait(job_id, lambda j: j["nodes"][0]["state"] == "running", timeout=30)
    before = secured.jobs_in_database()
    _problem(anonymous.http.post(f"/v1/jobs/{job_id}/cancel"), 401, "unauthenticated")
    _problem(reader.http.post(f"/v1/jobs/{job_id}/cancel"), 403, "forbidden")
    _problem(anonymous.http.get(f"/v1/jobs/{job_id}"), 401, "unauthenticated")
    _problem(anonymous.http.get("/v1/jobs"), 401, "unauthenticated")
    assert secured.jobs_in_database() == before
    assert before[0][1] == "running" and before[0][2] is None, "not cancelled"
    assert ci.get(job_id)["nodes"][0]["state"] == "running"

    assert secured.api("submitter").http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert ci.wait(job_id)["status"] == "cancelled"


def test_each_scope_allows_what_it_names(secured: Secured) -> None:
    submitter, reader = secured.api("submitter"), secured.api("reader")
    job_id = submitter.submit({"name": "scoped", "nodes": [node("a")]})
    assert reader.wait(job_id)["status"] == "succeeded"
    assert reader.http.get("/v1/jobs").status_code == 200
    _problem(submitter.http.get(f"/v1/jobs/{job_id}"), 403, "forbidden")
    _problem(reader.http.get("/metrics"), 403, "forbidden")
    # A method a route lacks still needs a token, then 405; unknown paths are 404.
    assert reader.http.delete(f"/v1/jobs/{job_id}").status_code == 405
    assert secured.api(None).http.delete(f"/v1/jobs/{job_id}").status_code == 401
    assert secured.api(None).http.get("/v2/nothing").status_code == 404


def test_event_streams_need_the_read_scope(secured: Secured) -> None:
    job_id = secured.api("ci").submit({"name": "watched", "nodes": [node("a")]})
    with EventStream.open(secured.url, job_id) as anonymous:
        _problem(anonymous.read(), 401, "unauthenticated")
    with EventStream.open(secured.url, job_id, token=secured.tokens["submitter"]) as submitter:
        _problem(submitter.read(), 403, "forbidden")
        assert 'scope="read"' in submitter.response.headers["www-authenticate"]
    with EventStream.open(secured.url, job_id, token="mt_forged") as forged:
        _problem(forged.read(), 401, "unauthenticated")
    with EventStream.open(secured.url, job_id, token=secured.tokens["reader"]) as reader:
        assert reader.status == 200
        events = reader.events()
    assert events[0].name == "snapshot" and events[-1].name == "end"
    assert events[-1].data["status"] == "succeeded"


def test_probes_stay_open_and_metrics_follow_the_setting(secured: Secured) -> None:
    for proc in secured.procs:
        assert httpx.get(proc.http_url + "/healthz", timeout=5).status_code == 200
        _problem(httpx.get(proc.http_url + "/metrics", timeout=5), 401, "unauthenticated")
        metrics = httpx.get(
            proc.http_url + "/metrics",
            headers={"Authorization": f"Bearer {secured.tokens['prom']}"},
            timeout=5,
        )
        assert metrics.status_code == 200 and "minitemporal_" in metrics.text
    spec = httpx.get(secured.url + "/openapi.json", timeout=5)
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")


def test_tokens_never_reach_the_logs(secured: Secured) -> None:
    for who in secured.tokens:
        secured.api(who).http.get("/v1/jobs")
    Api(secured.url, "mt_wrong-token-value").http.get("/v1/jobs")
    logs = "".join(p.log(tail=10**7) for p in secured.procs)
    assert "mt_" not in logs


def _env(**extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "MINITEMPORAL_LOG_FORMAT": "text",
        **extra,
    }


@pytest.mark.parametrize(
    ("roles", "flags", "needs"),
    [
        ("api", ["--api-host", "0.0.0.0"], "MINITEMPORAL_API_TOKENS"),
        ("api", ["--api-host", "::"], "MINITEMPORAL_API_TOKENS"),
        ("scheduler", ["--grpc-host", "0.0.0.0"], "MINITEMPORAL_GRPC_SECRET"),
    ],
)
def test_refuses_to_listen_beyond_loopback_without_credentials(
    tmp_path: Path, roles: str, flags: list[str], needs: str
) -> None:
    result = subprocess.run(
        [*minitemporal_command(), "--roles", roles, *flags],
        env=_env(MINITEMPORAL_REDIS_URL="redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needs in lines[0] and "Traceback" not in result.stderr, lines
    assert "refusing" in lines[0]


def test_insecure_no_auth_is_loud_at_every_start(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, None, None, extra_env={"MINITEMPORAL_INSECURE_NO_AUTH": "1"})
    proc = cluster.add("api", "api", scheduler_port=free_port())
    try:
        for starts in (1, 2):
            proc.start()
            wait_for(
                lambda n=starts: proc.log().count("--insecure-no-auth") == n,
                timeout=30,
                what=f"the warning of start {starts}",
            )
            # Stopped once running: a SIGTERM before then is not a graceful stop.
            wait_for(
                lambda n=starts: proc.log().count("minitemporal running") == n,
                timeout=30,
                what=f"start {starts}",
            )
            assert proc.stop() == 0
    finally:
        cluster.stop_all()


def test_split_topology_with_tokens_runs_jobs(tmp_path: Path, cluster: Cluster) -> None:
    secret, entry = token("ci", "read,submit")
    cluster.extra_env["MINITEMPORAL_API_TOKENS"] = entry
    top = start_split(cluster)
    api = Api(top.api_proc.http_url, token=secret)
    assert api.wait(api.submit({"name": "ok", "nodes": [node("a")]}))["status"] == "succeeded"
    assert top.api.http.get("/v1/jobs").status_code == 401
