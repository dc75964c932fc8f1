"""Both kinds of idempotency: node keys (run once, never twice at once) and Idempotency-Key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.api import node, nodes_by_id
from tests.support.procs import Cluster
from tests.support.topology import Ledger, start_split


def test_a_succeeded_key_is_not_run_again(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(fast_cluster)
    spec = {
        "name": "etl",
        "nodes": [
            node("extract", ledger.cmd("echo data"), key="extract-2026-11-27"),
            node("load", ledger.cmd(), ["extract"]),
        ],
    }
    first = top.api.wait(top.api.submit(spec))
    second = top.api.wait(top.api.submit(spec))
    assert first["status"] == second["status"] == "succeeded"
    extract = nodes_by_id(second)["extract"]
    assert extract["cached"] and extract["attempts"] == []
    assert extract["stdout"]["tail"] == "data\n" and extract["exit_code"] == 0
    runs = [(j, n) for j, n, _ in ledger.entries()]
    assert runs.count((first["id"], "extract")) == 1
    assert (second["id"], "extract") not in runs, "completed from the recorded result"
    assert (second["id"], "load") in runs, "nodes without a key run as usual"


def test_two_nodes_with_one_key_never_run_at_once(fast_cluster: Cluster, tmp_path: Path) -> None:
    top = start_split(fast_cluster, workers=2)
    spans = tmp_path / "spans"
    # Fails the first time (so the twin must run), then succeeds; records its running span.
    cmd = (
        f'echo "start $(date +%s.%N)" >> {spans}; sleep 0.5; echo "end $(date +%s.%N)" >> {spans}; '
        f'[ "$(grep -c start {spans})" -ge 2 ]'
    )
    a = top.api.submit({"name": "a", "nodes": [node("k", cmd, key="shared-key")]})
    b = top.api.submit({"name": "b", "nodes": [node("k", cmd, key="shared-key")]})
    ja, jb = top.api.wait(a, timeout=30), top.api.wait(b, timeout=30)
    assert {ja["status"], jb["status"]} == {"failed", "succeeded"}
    events = [
        (kind, float(t)) for kind, t in (line.split() for line in spans.read_text().splitlines())
    ]
    assert [k for k, _ in events] == ["start", "end", "start", "end"], (
        "strictly one after the other"
    )


def test_idempotency_key_header(fast_cluster: Cluster) -> None:
    top = start_split(fast_cluster)
    body = {"job": {"name": "once", "nodes": [node("a")]}}
    first = top.api.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201
    # Same key, same body (keys reordered, other whitespace): the same job, 200.
    same = top.api.http.post(
        "/v1/jobs",
        content='{"job":{"nodes":[{"depends_on":[],"id":"a","name":"a","command":"true",'
        '"retries":0,"timeout_seconds":30,"idempotency_key":null}],"name":"once"}}',
        headers={"Idempotency-Key": "order-42", "Content-Type": "application/json"},
    )
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    other = top.api.http.post(
        "/v1/jobs",
        json={"job": {"name": "other", "nodes": [node("a")]}},
        headers={"Idempotency-Key": "order-42"},
    )
    assert other.status_code == 409 and other.json()["type"].endswith("/conflict")


def test_fifty_concurrent_identical_submissions_create_one_job(fast_cluster: Cluster) -> None:
    top = start_split(fast_cluster)
    body = {"job": {"name": "stampede", "nodes": [node("a")]}}

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=top.api_proc.http_url, timeout=30) as c:
            return c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "stampede-1"})

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(submit, range(50)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 49 + [201], codes
    assert len({r.json()["id"] for r in responses}) == 1
    listed = top.api.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    assert [j["name"] for j in listed].count("stampede") == 1
