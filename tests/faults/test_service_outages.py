"""Redis lost or restarted, PostgreSQL restarted: nothing acknowledged is lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from tests.conftest import fresh_database
from tests.faults.test_scheduler_crashes import assert_ran_once_each, fanout
from tests.support.api import node
from tests.support.procs import Cluster
from tests.support.services import LocalPostgres, LocalRedis
from tests.support.topology import FAST, Ledger, start_split, wait_for


def test_flushall_mid_run_loses_nothing_and_adds_no_attempts(
    tmp_path: Path, database_url: str, private_redis: LocalRedis, ledger: Ledger
) -> None:
    cluster = Cluster(tmp_path, database_url, private_redis.url, extra_env=dict(FAST))
    try:
        top = start_split(cluster, workers=2, worker_env={"MINITEMPORAL_WORKER_SLOTS": "2"})
        jobs = [
            top.api.submit({"name": f"flush-{i}", "nodes": fanout(ledger, 40, "sleep 0.1")})
            for i in range(3)
        ]
        top.api.wait(jobs[0], lambda j: j["node_counts"].get("succeeded", 0) >= 10, timeout=30)
        redis.Redis.from_url(private_redis.url).flushall()
        for job_id in jobs:
            job = top.api.wait(job_id, timeout=90)
            assert job["status"] == "succeeded"
            assert_ran_once_each(ledger, job)
            assert {n["attempt"] for n in job["nodes"]} == {1}, "no extra attempts"
        rebuilds = httpx.get(top.schedulers[0].http_url + "/metrics").text
        assert "minitemporal_queue_rebuilds_total 2.0" in rebuilds, "start + flush"
    finally:
        cluster.stop_all()
    assert all(c == 0 for p in cluster.procs for c in p.exit_codes)


def test_redis_restart_roles_reconnect_and_submissions_are_kept(
    tmp_path: Path, database_url: str, private_redis: LocalRedis, ledger: Ledger
) -> None:
    cluster = Cluster(tmp_path, database_url, private_redis.url, extra_env=dict(FAST))
    try:
        top = start_split(cluster, workers=1)
        before = top.api.submit({"name": "before", "nodes": fanout(ledger, 20, "sleep 0.2")})
        top.api.wait(before, lambda j: j["node_counts"].get("succeeded", 0) >= 3, timeout=30)
        private_redis.stop()
        during = top.api.submit({"name": "during", "nodes": [node("x", ledger.cmd())]})
        health = httpx.get(top.schedulers[0].http_url + "/healthz", timeout=5)
        assert health.status_code == 503 and not health.json()["checks"]["redis"]["ok"]
        time.sleep(2)  # an outage that lasts: every role must keep retrying, not exit
        assert all(p.alive() for p in cluster.procs)
        private_redis.start()
        for job_id in (before, during):
            job = top.api.wait(job_id, timeout=60)
            assert job["status"] == "succeeded"
            assert_ran_once_each(ledger, job)
        wait_for(
            lambda: httpx.get(top.workers[0].http_url + "/healthz").status_code == 200,
            timeout=10,
            what="the worker to report healthy again",
        )
    finally:
        cluster.stop_all()
    assert all(c == 0 for p in cluster.procs for c in p.exit_codes)


def test_postgres_restart_gives_503s_then_everything_finishes(
    tmp_path: Path,
    private_pg: LocalPostgres,
    pg_template: str,
    redis_server_url: str,
    redis_prefix: str,
    ledger: Ledger,
) -> None:
    with fresh_database(private_pg.url, "template1") as db:
        cluster = Cluster(tmp_path, db, redis_server_url, redis_prefix, extra_env=dict(FAST))
        try:
            top = start_split(cluster, workers=1)
            job_id = top.api.submit({"name": "pg", "nodes": fanout(ledger, 30, "sleep 0.2")})
            top.api.wait(job_id, lambda j: j["node_counts"].get("succeeded", 0) >= 3, timeout=30)
            private_pg.stop()
            started = time.monotonic()
            r = top.api.http.get(f"/v1/jobs/{job_id}", timeout=15)
            assert r.status_code == 503, r.text
            assert time.monotonic() - started < 5, "a quick 503, not a hang"
            assert r.json()["type"].endswith("/unavailable")
            post = top.api.http.post("/v1/jobs", json={"job": {"name": "x", "nodes": [node("x")]}})
            assert post.status_code == 503
            sched = httpx.get(top.schedulers[0].http_url + "/healthz", timeout=5)
            assert sched.status_code == 503 and not sched.json()["checks"]["postgresql"]["ok"]
            wait_for(
                lambda: httpx.get(top.api_proc.http_url + "/healthz", timeout=5).status_code == 503,
                timeout=5,
                what="the api to see its scheduler not serving (gRPC health)",
            )
            time.sleep(1)
            assert all(p.alive() for p in cluster.procs)
            private_pg.start()
            job = top.api.wait(job_id, timeout=90)
            assert job["status"] == "succeeded"
            assert_ran_once_each(ledger, job)
            again = top.api.submit({"name": "after", "nodes": [node("y", ledger.cmd())]})
            assert top.api.wait(again, timeout=30)["status"] == "succeeded"
        finally:
            cluster.stop_all()
    assert all(c == 0 for p in cluster.procs for c in p.exit_codes)
