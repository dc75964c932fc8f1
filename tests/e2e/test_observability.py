"""Metrics that answer an operator's questions, health that names what is down, clean logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import node
from tests.support.procs import Cluster, Proc
from tests.support.services import LocalRedis
from tests.support.topology import FAST, start_split, wait_for


def sample(proc: Proc, name: str, **labels: str) -> float:
    """The value of one sample in a process's /metrics (0 if absent), parsed properly."""
    text = httpx.get(proc.http_url + "/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_after_a_known_workload(fast_cluster: Cluster, tmp_path: Path) -> None:
    top = start_split(fast_cluster, workers=1)
    sched, worker, api = top.schedulers[0], top.workers[0], top.api_proc
    latency = "minitemporal_task_enqueue_to_start_seconds_count"

    before = sample(sched, latency)
    top.api.wait(
        top.api.submit(
            {"name": "three", "nodes": [node("a"), node("b", deps=["a"]), node("c", deps=["b"])]}
        )
    )
    assert sample(sched, latency) - before == 3

    retries = sample(sched, "minitemporal_task_retries_total")
    marker = tmp_path / "once"
    flaky = f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}"
    top.api.wait(top.api.submit({"name": "retry", "nodes": [node("r", flaky, retries=1)]}))
    assert sample(sched, "minitemporal_task_retries_total") - retries == 1
    assert sample(sched, "minitemporal_task_failures_total", reason="exit_code") >= 1

    timeouts = sample(sched, "minitemporal_task_failures_total", reason="timeout")
    top.api.wait(top.api.submit({"name": "t", "nodes": [node("t", "sleep 30", timeout=0.5)]}))
    assert sample(sched, "minitemporal_task_failures_total", reason="timeout") - timeouts == 1

    rescued = sample(sched, "minitemporal_tasks_rescued_total", kind="lost_attempt")
    job_id = top.api.submit({"name": "lost", "nodes": [node("l", "sleep 3", retries=1)]})
    top.api.wait(job_id, lambda j: j["nodes"][0]["state"] == "running", timeout=20)
    worker.kill()
    wait_for(
        lambda: sample(sched, "minitemporal_tasks_rescued_total", kind="lost_attempt") > rescued,
        timeout=10,
        what="the lost attempt to be rescued",
    )
    assert sample(sched, "minitemporal_task_failures_total", reason="lost") >= 1
    worker.start()
    worker.wait_healthy()
    top.api.wait(job_id, timeout=30)

    assert sample(sched, "minitemporal_jobs_submitted_total") == 4
    assert sample(sched, "minitemporal_jobs_finished_total", status="succeeded") == 3
    assert sample(sched, "minitemporal_jobs_finished_total", status="failed") == 1
    assert sample(sched, "minitemporal_job_duration_seconds_count", status="failed") == 1
    assert sample(sched, "minitemporal_task_run_seconds_count", outcome="succeeded") >= 5
    assert (
        sample(sched, "minitemporal_grpc_server_handled_total", method="ClaimTasks", code="OK") >= 1
    )
    # The restarted worker's own counters, and the api's.
    assert sample(worker, "minitemporal_worker_slots") == 4
    assert sample(worker, "minitemporal_worker_tasks_total", outcome="succeeded") >= 1
    assert sample(worker, "minitemporal_worker_spawn_seconds_count") >= 1
    assert (
        sample(worker, "minitemporal_grpc_client_handled_total", method="Heartbeat", code="OK") >= 1
    )
    assert (
        sample(
            api,
            "minitemporal_http_requests_total",
            method="GET",
            route="/v1/jobs/{job_id}",
            status="200",
        )
        >= 1
    )
    assert (
        sample(
            api, "minitemporal_http_requests_total", method="POST", route="/v1/jobs", status="201"
        )
        == 4
    )
    wait_for(lambda: sample(sched, "minitemporal_workers_alive") >= 1, 10, "workers_alive")


def test_roles_in_one_process_share_one_metrics_endpoint(fast_cluster: Cluster) -> None:
    from tests.support.services import free_port

    proc = fast_cluster.add("all", "all", grpc_port=free_port()).start()
    proc.wait_healthy()
    text = httpx.get(proc.http_url + "/metrics").text
    for name in (
        "minitemporal_task_enqueue_to_start_seconds",
        "minitemporal_worker_slots",
        "minitemporal_http_requests_total",
        "minitemporal_grpc_server_handled_total",
        "minitemporal_grpc_client_handled_total",
        "minitemporal_queue_depth",
    ):
        assert f"# TYPE {name}" in text, name
    health = httpx.get(proc.http_url + "/healthz").json()
    assert set(health["checks"]) == {"postgresql", "redis", "scheduler"}


def test_health_names_redis_when_it_is_down(
    tmp_path: Path, database_url: str, private_redis: LocalRedis
) -> None:
    cluster = Cluster(tmp_path, database_url, private_redis.url, extra_env=dict(FAST))
    try:
        top = start_split(cluster, workers=1)
        targets = [top.schedulers[0], top.workers[0]]
        private_redis.stop()
        for proc in targets:
            started = time.monotonic()
            r = httpx.get(proc.http_url + "/healthz", timeout=5)
            assert time.monotonic() - started < 1.5, "answers within a second"
            assert r.status_code == 503, (proc.name, r.text)
            body = r.json()
            assert body["status"] == "unavailable" and not body["checks"]["redis"]["ok"]
            assert body["checks"]["redis"]["error"]
        # The api does not need Redis: it still accepts jobs, which run when Redis is back.
        api = httpx.get(top.api_proc.http_url + "/healthz", timeout=5)
        assert api.status_code == 200, api.text
        private_redis.start()
        for proc in [*targets, top.api_proc]:
            wait_for(
                lambda p=proc: httpx.get(p.http_url + "/healthz", timeout=5).status_code == 200,
                timeout=10,
                what=f"{proc.name} healthy again",
            )
        ok = httpx.get(top.schedulers[0].http_url + "/healthz").json()
        assert ok["checks"]["redis"]["ok"] and ok["checks"]["redis"]["latency_ms"] < 1000
    finally:
        cluster.stop_all()


def test_json_logs_carry_task_fields_and_no_secrets(fast_cluster: Cluster) -> None:
    password = "pw-" + "s3cr3t-in-url"
    url = fast_cluster.database_url
    assert url is not None
    fast_cluster.database_url = url.replace("postgres@", f"postgres:{password}@", 1)
    fast_cluster.extra_env["MINITEMPORAL_LOG_FORMAT"] = "json"
    top = start_split(fast_cluster, workers=1)
    job_id = top.api.submit({"name": "logs", "nodes": [node("a", "exit 3")]})
    top.api.wait(job_id)
    for p in fast_cluster.procs:
        p.stop()
    task_lines = []
    for p in fast_cluster.procs:
        text = p.log_path.read_text()
        assert password not in text and fast_cluster.grpc_secret not in text, p.name
        for line in text.splitlines():
            entry = json.loads(line)  # every line is one JSON object
            assert {"ts", "level", "logger", "msg"} <= set(entry)
            if entry.get("job_id") == job_id and "node_id" in entry:
                task_lines.append(entry)
    assert task_lines, "the worker logs about the attempt"
    for entry in task_lines:
        assert entry["node_id"] == "a" and entry["attempt"] == 1 and entry["worker"] == "worker1"
