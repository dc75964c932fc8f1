"""The internal gRPC API: a wrong shared secret is refused and said so in the refused
process's log; TLS and mutual TLS with certificates made in the test."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from tests.support.api import Api, node
from tests.support.procs import Cluster, Proc
from tests.support.security import Authority
from tests.support.topology import Topology, start_split, wait_for

REFUSED = "refused our credentials (MINITEMPORAL_GRPC_SECRET"


def with_wrong_secret(top: Topology, name: str, roles: str) -> Proc:
    env = {"MINITEMPORAL_GRPC_SECRET": "wrong-secret"}
    return top.cluster.add(name, roles, scheduler_port=top.grpc_ports[0], env=env).start()


def test_worker_with_a_wrong_secret_claims_nothing_and_says_why(
    fast_cluster: Cluster, redis_server_url: str
) -> None:
    top = start_split(fast_cluster, workers=0)
    intruder = with_wrong_secret(top, "intruder", "worker")
    wait_for(lambda: REFUSED in intruder.log(), timeout=30, what="the refusal in the log")

    marker = fast_cluster.tmp / "ran"
    job_id = top.api.submit({"name": "guarded", "nodes": [node("a", f"touch {marker}")]})
    queue = redis.Redis.from_url(redis_server_url)
    key = f"{fast_cluster.redis_prefix}:ready"
    wait_for(lambda: queue.zcard(key) == 1, timeout=10, what="the attempt in Redis")
    # Proving an absence takes a window: for 3 s (several of its retries) the refused worker
    # pops nothing, so the attempt stays queued for others, and runs nothing.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert queue.zcard(key) == 1
        assert top.api.get(job_id)["nodes"][0]["state"] == "queued"
        time.sleep(0.1)
    assert not marker.exists()
    assert "attempt finished" not in intruder.log() and intruder.alive()
    health = httpx.get(intruder.http_url + "/healthz", timeout=5)
    assert health.status_code == 503 and "refused this process's credentials" in health.text

    top.add_worker("honest")
    assert top.api.wait(job_id)["status"] == "succeeded"
    assert marker.exists()
    queue.close()


def test_api_with_a_wrong_secret_answers_503_and_says_why(fast_cluster: Cluster) -> None:
    top = start_split(fast_cluster, workers=0)
    api_proc = with_wrong_secret(top, "bad-api", "api")
    wait_for(lambda: api_proc.alive() and "api listening" in api_proc.log(), 30, "the api")
    api = Api(api_proc.http_url)
    wait_for(lambda: _answers(api), timeout=30, what="the api to answer")
    r = api.http.post("/v1/jobs", json={"job": {"name": "x", "nodes": [node("a")]}})
    assert r.status_code == 503, r.text
    assert r.json()["type"].endswith("/unavailable")
    assert "127.0.0.1" not in r.text, "callers are not told where the scheduler is"
    assert REFUSED in api_proc.log()
    assert top.api.http.get("/v1/jobs").json()["jobs"] == [], "nothing stored"


def _answers(api: Api) -> bool:
    try:
        api.http.get("/healthz")
    except httpx.HTTPError:
        return False
    return True


def _tls_env(ca: Path, server: tuple[Path, Path], client_ca: Path | None = None) -> dict[str, str]:
    env = {
        "MINITEMPORAL_GRPC_TLS_CERT": str(server[0]),
        "MINITEMPORAL_GRPC_TLS_KEY": str(server[1]),
        "MINITEMPORAL_GRPC_TLS_CA": str(ca),
        "MINITEMPORAL_GRPC_TLS_SERVER_NAME": "localhost",
    }
    if client_ca is not None:
        env["MINITEMPORAL_GRPC_TLS_CLIENT_CA"] = str(client_ca)
    return env


def test_tls_between_roles_and_plaintext_clients_are_refused(
    fast_cluster: Cluster, tmp_path: Path
) -> None:
    ca = Authority(tmp_path, "ca")
    server = ca.issue("scheduler", server=True)
    fast_cluster.extra_env.update(_tls_env(ca.path, (server.cert, server.key)))
    top = start_split(fast_cluster)
    assert top.api.wait(top.api.submit({"name": "tls", "nodes": [node("a")]}))["status"] == (
        "succeeded"
    )
    plain = fast_cluster.add(
        "plain",
        "worker",
        scheduler_port=top.grpc_ports[0],
        env={"MINITEMPORAL_GRPC_TLS_CA": "", "MINITEMPORAL_GRPC_TLS_SERVER_NAME": ""},
    )
    plain.env = {k: v for k, v in plain.env.items() if v != ""}
    plain.start()
    wait_for(lambda: "cannot take work" in plain.log(), timeout=30, what="the plaintext failure")
    assert httpx.get(plain.http_url + "/healthz", timeout=5).status_code == 503


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(
    fast_cluster: Cluster, tmp_path: Path
) -> None:
    ca, rogue_ca = Authority(tmp_path, "ca"), Authority(tmp_path, "rogue")
    server = ca.issue("scheduler", server=True)
    client, rogue = ca.issue("worker", server=False), rogue_ca.issue("worker", server=False)
    fast_cluster.extra_env.update(_tls_env(ca.path, (server.cert, server.key), ca.path))
    fast_cluster.extra_env.update(
        {
            "MINITEMPORAL_GRPC_TLS_CLIENT_CERT": str(client.cert),
            "MINITEMPORAL_GRPC_TLS_CLIENT_KEY": str(client.key),
        }
    )
    top = start_split(fast_cluster)
    assert top.api.wait(top.api.submit({"name": "mtls", "nodes": [node("a")]}))["status"] == (
        "succeeded"
    )
    for name, env in [
        (
            "no-cert",
            {"MINITEMPORAL_GRPC_TLS_CLIENT_CERT": "", "MINITEMPORAL_GRPC_TLS_CLIENT_KEY": ""},
        ),
        (
            "rogue-cert",
            {
                "MINITEMPORAL_GRPC_TLS_CLIENT_CERT": str(rogue.cert),
                "MINITEMPORAL_GRPC_TLS_CLIENT_KEY": str(rogue.key),
            },
        ),
    ]:
        proc = fast_cluster.add(name, "api", scheduler_port=top.grpc_ports[0], env=env)
        proc.env = {k: v for k, v in proc.env.items() if v != ""}
        proc.start()
        api = Api(proc.http_url)
        wait_for(lambda a=api: _answers(a), timeout=30, what=f"{name} to answer")
        r = api.http.post("/v1/jobs", json={"job": {"name": name, "nodes": [node("a")]}})
        assert r.status_code == 503, (name, r.text)
        assert proc.alive(), "refused, not crashed"
    names = {j["name"] for j in top.api.http.get("/v1/jobs").json()["jobs"]}
    assert names == {"mtls"}, "the refused clients stored nothing"
