"""The whole happy path through REST, in each topology: the example DAG, a diamond, a
200-node DAG of mixed shape, and a failing node with nodes downstream."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from tests.e2e.conftest import System
from tests.support.api import example_job, node, nodes_by_id, ts


def ledger_cmd(ledger: Path, extra: str = "") -> str:
    """A command that appends `node attempt` to a ledger file (commands get a clean env)."""
    return f'{extra}echo "$MINITEMPORAL_NODE_ID $MINITEMPORAL_ATTEMPT" >> {ledger}'


def read_ledger(ledger: Path) -> list[str]:
    return ledger.read_text().split("\n")[:-1] if ledger.exists() else []


def test_example_runs_in_order_with_outputs(system: System) -> None:
    job_id = system.api.submit(example_job())
    job = system.api.wait(job_id, timeout=30)

    assert job["status"] == "succeeded"
    assert job["node_counts"] == {"succeeded": 3}
    nodes = nodes_by_id(job)
    for name in ("extract", "transform", "load"):
        n = nodes[name]
        assert n["state"] == "succeeded"
        assert n["exit_code"] == 0
        assert n["stdout"]["tail"] == f"{name}\n"
        assert n["attempt"] == 1 and len(n["attempts"]) == 1
        assert ts(n["enqueued_at"]) <= ts(n["started_at"]) <= ts(n["finished_at"])
    assert ts(nodes["transform"]["started_at"]) >= ts(nodes["extract"]["finished_at"])
    assert ts(nodes["load"]["started_at"]) >= ts(nodes["transform"]["finished_at"])
    assert ts(job["finished_at"]) >= ts(nodes["load"]["finished_at"])


def test_submit_answers_201_with_id_and_location(system: System) -> None:
    r = system.api.http.post("/v1/jobs", json={"job": example_job()})
    assert r.status_code == 201
    body = r.json()
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "running" and body["nodes_total"] == 3
    system.api.wait(body["id"])


def test_diamond_join_runs_once_after_both_branches(system: System) -> None:
    ledger = system.tmp / "diamond.ledger"
    job_id = system.api.submit(
        {
            "name": "diamond",
            "nodes": [
                node("a", ledger_cmd(ledger)),
                node("b", ledger_cmd(ledger, "sleep 0.2; "), ["a"]),
                node("c", ledger_cmd(ledger), ["a"]),
                node("d", ledger_cmd(ledger), ["b", "c"]),
            ],
        }
    )
    job = system.api.wait(job_id)
    assert job["status"] == "succeeded"
    runs = read_ledger(ledger)
    assert sorted(runs) == ["a 1", "b 1", "c 1", "d 1"]
    assert runs[0] == "a 1" and runs[-1] == "d 1"
    nodes = nodes_by_id(job)
    join_start = ts(nodes["d"]["started_at"])
    assert join_start >= ts(nodes["b"]["finished_at"])
    assert join_start >= ts(nodes["c"]["finished_at"])


def mixed_dag(count: int, seed: int, ledger: Path) -> list[dict[str, object]]:
    """Layers of random width; each node depends on 0-3 nodes of earlier layers."""
    rng = random.Random(seed)
    nodes: list[dict[str, object]] = []
    earlier: list[str] = []
    while len(nodes) < count:
        layer = []
        for _ in range(min(rng.randint(1, 25), count - len(nodes))):
            node_id = f"n{len(nodes) + len(layer):03d}"
            deps = rng.sample(earlier, k=min(len(earlier), rng.randint(0, 3)))
            layer.append(node(node_id, ledger_cmd(ledger), deps))
        nodes.extend(layer)
        earlier.extend(str(n["id"]) for n in layer)
    rng.shuffle(nodes)  # order in the request must not matter
    return nodes


def test_200_node_mixed_dag(system: System) -> None:
    ledger = system.tmp / "mixed.ledger"
    spec = mixed_dag(200, seed=7, ledger=ledger)
    job_id = system.api.submit({"name": "mixed-200", "nodes": spec})
    job = system.api.wait(job_id, timeout=120)

    assert job["status"] == "succeeded", job["node_counts"]
    runs = read_ledger(ledger)
    assert len(runs) == 200 and len(set(runs)) == 200, "every node ran exactly once"
    nodes = nodes_by_id(job)
    for n in nodes.values():
        for dep in n["depends_on"]:
            assert ts(n["started_at"]) >= ts(nodes[dep]["finished_at"]), (n["id"], dep)


def test_failing_node_fails_downstream_and_job(system: System) -> None:
    job_id = system.api.submit(
        {
            "name": "fails",
            "nodes": [
                node("a"),
                node("b", "echo boom >&2; exit 3", ["a"]),
                node("c", "true", ["b"]),
                node("d", "true", ["c"]),
                node("e", "sleep 0.3", ["a"]),  # independent branch keeps running
            ],
        }
    )
    job = system.api.wait(job_id)
    assert job["status"] == "failed"
    nodes = nodes_by_id(job)
    assert nodes["b"]["state"] == "failed"
    assert nodes["b"]["exit_code"] == 3
    assert nodes["b"]["stderr"]["tail"] == "boom\n"
    assert nodes["b"]["attempts"][0]["reason"] == "exit_code"
    assert nodes["c"]["state"] == "upstream_failed"
    assert nodes["d"]["state"] == "upstream_failed"
    assert nodes["c"]["attempts"] == [] and nodes["c"]["started_at"] is None
    assert nodes["e"]["state"] == "succeeded"
    assert "b failed" in nodes["c"]["explanation"]


def test_list_jobs_newest_first_with_cursor_and_status(system: System) -> None:
    ids = [system.api.submit({"name": f"list-{i}", "nodes": [node("only")]}) for i in range(3)]
    for job_id in ids:
        system.api.wait(job_id)
    first = system.api.http.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    assert first["next_cursor"]
    second = system.api.http.get(
        "/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert second["jobs"][0]["id"] == ids[0]
    ok = system.api.http.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
    assert {j["status"] for j in ok["jobs"]} == {"succeeded"}
    assert set(ids) <= {j["id"] for j in ok["jobs"]}


def test_unknown_job_is_a_404_problem(system: System) -> None:
    for job_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        r = system.api.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("/not-found")


def test_invalid_job_is_a_422_listing_every_problem(system: System) -> None:
    r = system.api.http.post(
        "/v1/jobs",
        json={
            "job": {
                "name": "bad",
                "nodes": [
                    node("a", deps=["b"]),
                    node("b", deps=["a"]),
                    node("a"),
                    node("c", deps=["zzz"]),
                ],
            }
        },
    )
    assert r.status_code == 422
    body = r.json()
    assert body["type"].endswith("/invalid-input")
    messages = " | ".join(e["message"] for e in body["errors"])
    assert "duplicate node id 'a'" in messages
    assert "unknown node 'zzz'" in messages
    listed = system.api.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    assert "bad" not in {j["name"] for j in listed}, "nothing stored"


def test_health_and_metrics_on_every_process(system: System) -> None:
    for proc in system.cluster.procs:
        health = httpx.get(proc.http_url + "/healthz", timeout=5)
        assert health.status_code == 200, (proc.name, health.text)
        assert health.json()["status"] == "ok"
        metrics = httpx.get(proc.http_url + "/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "minitemporal_" in metrics.text
