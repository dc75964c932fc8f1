"""Failures through REST, in each topology (embedded included): retries with backoff,
timeouts, cancellation, both kinds of idempotency, explanations, metrics."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.conftest import System
from tests.support.api import nodes_by_id, ts

QUICK = {"base_seconds": 0.3, "factor": 2, "max_seconds": 1}


def test_a_failing_node_is_retried_with_backoff_then_succeeds(system: System) -> None:
    marker = system.tmp / f"flaky-{uuid.uuid4().hex}"
    flaky = f"if [ -e {marker} ]; then echo ok; else touch {marker}; echo no >&2; exit 7; fi"
    job_id = system.api.submit(
        {
            "name": "flaky",
            "nodes": [
                {"id": "a", "command": flaky, "retries": 2, "retry_backoff": QUICK},
                {"id": "b", "command": "true", "depends_on": ["a"]},
            ],
        }
    )
    job = system.api.wait(job_id, timeout=30)
    assert job["status"] == "succeeded"
    a = nodes_by_id(job)["a"]
    assert [t["reason"] for t in a["attempts"]] == ["exit_code", "succeeded"]
    assert a["attempts"][0]["exit_code"] == 7 and a["attempts"][0]["stderr"]["tail"] == "no\n"
    first, second = a["attempts"]
    waited = (ts(second["enqueued_at"]) - ts(first["finished_at"])).total_seconds()
    assert waited >= 0.1, "a retry waits for its backoff (0.3 s, jitter at most half of it)"


def test_a_node_past_its_timeout_is_killed_and_fails(system: System) -> None:
    job_id = system.api.submit(
        {
            "name": "slow",
            "nodes": [
                {"id": "slow", "command": "sleep 30", "timeout_seconds": 0.5},
                {"id": "after", "command": "true", "depends_on": ["slow"]},
            ],
        }
    )
    job = system.api.wait(job_id, timeout=30)
    assert job["status"] == "failed"
    nodes = nodes_by_id(job)
    [attempt] = nodes["slow"]["attempts"]
    assert attempt["reason"] == "timeout"
    assert (ts(attempt["finished_at"]) - ts(attempt["started_at"])).total_seconds() < 10
    assert nodes["slow"]["explanation"] == "failed: attempt 1 of 1 timed out"
    assert nodes["after"]["state"] == "upstream_failed"


def test_cancel_kills_running_commands_and_cancels_the_rest(system: System) -> None:
    job_id = system.api.submit(
        {
            "name": "to-cancel",
            "nodes": [
                {"id": "long", "command": "sleep 60"},
                {"id": "next", "command": "true", "depends_on": ["long"]},
            ],
        }
    )
    system.api.wait(job_id, lambda j: nodes_by_id(j)["long"]["state"] == "running", timeout=30)
    r = system.api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["cancel_requested"] is True
    job = system.api.wait(job_id, timeout=30)
    assert job["status"] == "cancelled"
    nodes = nodes_by_id(job)
    assert nodes["long"]["attempts"][0]["reason"] == "cancelled"
    assert "the process was killed" in nodes["long"]["explanation"]
    assert nodes["next"]["state"] == "cancelled"
    assert nodes["next"]["explanation"] == "cancelled before it ran"
    again = system.api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["type"].endswith("/conflict")


def test_a_node_key_that_succeeded_is_not_run_again(system: System) -> None:
    key = f"key-{uuid.uuid4().hex}"
    ledger = system.tmp / f"{key}.ledger"
    command = f"echo ran >> {ledger}; echo result"
    first = system.api.wait(
        system.api.submit(
            {"name": "k1", "nodes": [{"id": "a", "command": command, "idempotency_key": key}]}
        )
    )
    assert first["status"] == "succeeded"
    second = system.api.wait(
        system.api.submit(
            {
                "name": "k2",
                "nodes": [
                    {"id": "x", "command": command, "idempotency_key": key},
                    {"id": "y", "command": "true", "depends_on": ["x"]},
                ],
            }
        )
    )
    assert second["status"] == "succeeded"
    x = nodes_by_id(second)["x"]
    assert x["cached"] is True and x["attempts"] == []
    assert x["stdout"]["tail"] == "result\n" and x["cached_result"]["exit_code"] == 0
    assert "idempotency key" in x["explanation"]
    assert ledger.read_text() == "ran\n", "the command ran once"


def test_the_idempotency_key_header_returns_the_same_job(system: System) -> None:
    key = f"submit-{uuid.uuid4().hex}"
    job = {"name": "once", "nodes": [{"id": "a", "command": "true"}]}
    first = system.api.http.post("/v1/jobs", json={"job": job}, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    again = system.api.http.post("/v1/jobs", json={"job": job}, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = {"name": "once", "nodes": [{"id": "a", "command": "false"}]}
    clash = system.api.http.post("/v1/jobs", json={"job": other}, headers={"Idempotency-Key": key})
    assert clash.status_code == 409 and clash.json()["type"].endswith("/conflict")
    system.api.wait(first.json()["id"])


def test_metrics_count_what_happened(system: System) -> None:
    system.api.wait(system.api.submit({"name": "m", "nodes": [{"id": "bad", "command": "exit 1"}]}))
    scheduler = next(p for p in system.cluster.procs if p.roles in ("all", "scheduler"))
    text = httpx.get(scheduler.http_url + "/metrics", timeout=5).text
    for name in (
        "minitemporal_jobs_submitted_total",
        'minitemporal_jobs_finished_total{status="failed"}',
        'minitemporal_task_failures_total{reason="exit_code"}',
        'minitemporal_tasks_completed_total{outcome="succeeded"}',
    ):
        assert name in text, name
