"""kill -9 of a scheduler at any moment, including between its commit and its Redis push."""

from __future__ import annotations

import time

import httpx

from tests.support.api import node, nodes_by_id
from tests.support.procs import Cluster
from tests.support.topology import Ledger, Topology, start_split


def assert_ran_once_each(ledger: Ledger, job: dict) -> None:
    """No (node, attempt) ran twice, and no node ran again after the attempt that succeeded."""
    runs = ledger.runs()
    assert all(count == 1 for count in runs.values()), [k for k, c in runs.items() if c > 1]
    for n in job["nodes"]:
        attempts = [a for (j, nid, a) in runs if j == job["id"] and nid == n["id"]]
        assert n["state"] == "succeeded"
        if n["cached"]:
            continue
        assert attempts and max(attempts) == n["attempt"], (n["id"], attempts, n["attempt"])


def fanout(ledger: Ledger, width: int, then: str = "sleep 0.05") -> list[dict]:
    nodes = [node("root", ledger.cmd())]
    nodes += [node(f"n{i}", ledger.cmd(then), ["root"], retries=3) for i in range(width)]
    nodes.append(node("join", ledger.cmd(), [f"n{i}" for i in range(width)]))
    return nodes


def restart_scheduler(top: Topology, index: int = 0, env: dict[str, str] | None = None) -> None:
    proc = top.schedulers[index]
    proc.kill()
    if env is not None:
        proc.env = {**proc.env, **env}
    top.restart(proc)


def test_kill_9_scheduler_mid_run_then_restart(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(fast_cluster, workers=2)
    job_id = top.api.submit({"name": "survivor", "nodes": fanout(ledger, 80)})
    top.api.wait(job_id, lambda j: j["node_counts"].get("succeeded", 0) >= 20, timeout=30)
    top.schedulers[0].kill()
    top.restart(top.schedulers[0])
    job = top.api.wait(job_id, timeout=90)
    assert job["status"] == "succeeded"
    assert_ran_once_each(ledger, job)
    for w in top.workers:
        assert w.alive(), f"{w.name} must ride out the outage"


def test_crash_between_submit_commit_and_push(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(
        fast_cluster,
        workers=1,
        scheduler_env={"MINITEMPORAL_FAILPOINTS": "scheduler.after_submit_commit=exit"},
    )
    body = {"job": {"name": "committed-not-pushed", "nodes": [node("only", ledger.cmd())]}}
    headers = {"Idempotency-Key": "crash-1"}
    r = top.api.http.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 503, "the scheduler died before answering"
    top.schedulers[0].popen.wait(timeout=10)  # its sockets close a moment before it is reaped
    restart_scheduler(top, env={"MINITEMPORAL_FAILPOINTS": ""})
    # The client retries with the same key, as 503's Retry-After says (the api's channel may
    # still be backing off from the dead scheduler): the job was durable all along.
    deadline = time.monotonic() + 15
    while (again := top.api.http.post("/v1/jobs", json=body, headers=headers)).status_code == 503:
        assert again.headers["retry-after"] and time.monotonic() < deadline
        time.sleep(0.2)
    assert again.status_code == 200
    job = top.api.wait(again.json()["id"], timeout=30)
    assert job["status"] == "succeeded"
    assert_ran_once_each(ledger, job)


def test_crash_between_complete_commit_and_push(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(
        fast_cluster,
        workers=1,
        scheduler_env={"MINITEMPORAL_FAILPOINTS": "scheduler.after_complete_commit=exit"},
    )
    job_id = top.api.submit(
        {
            "name": "children-lost",
            "nodes": [node("a", ledger.cmd()), node("b", ledger.cmd(), ["a"])],
        }
    )
    top.schedulers[0].popen.wait(timeout=30)  # dies once a's success made b ready
    restart_scheduler(top, env={"MINITEMPORAL_FAILPOINTS": ""})
    job = top.api.wait(job_id, timeout=30)
    assert job["status"] == "succeeded"
    assert_ran_once_each(ledger, job)
    # b was handed to the worker in the commit whose reply was lost: the worker's next
    # heartbeat does not list it, so it is given back (not counted: retries is 0) and run.
    b = nodes_by_id(job)["b"]
    assert [a["reason"] for a in b["attempts"]] in (["succeeded"], ["interrupted", "succeeded"])


def test_two_schedulers_at_once(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(fast_cluster, schedulers=2, workers=2)
    jobs = [top.api.submit({"name": f"two-{i}", "nodes": fanout(ledger, 60)}) for i in range(3)]
    for job_id in jobs:
        job = top.api.wait(job_id, timeout=90)
        assert job["status"] == "succeeded"
        assert_ran_once_each(ledger, job)
    workers_used = {
        a["worker_id"] for j in jobs for n in top.api.get(j)["nodes"] for a in n["attempts"]
    }
    assert workers_used == {"worker1", "worker2"}, "each worker claimed through its scheduler"
    metrics = httpx.get(top.schedulers[1].http_url + "/metrics").text
    assert 'minitemporal_grpc_server_handled_total{code="OK",method="ClaimTasks"}' in metrics
