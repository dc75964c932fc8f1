"""The soak: 2,000 nodes over many jobs, 3 workers, 2 schedulers, random kill -9s and a Redis
FLUSHALL, checked by a ledger that every command appends to when it starts."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.api import node, ts
from tests.support.procs import Cluster
from tests.support.services import LocalRedis
from tests.support.topology import FAST, Ledger, start_split

JOBS, NODES_PER_JOB = 40, 50


def job_spec(i: int, ledger: Ledger, rng: random.Random) -> dict:
    """Alternate shapes: fan-out/fan-in, chains of fans, and independent nodes."""
    nodes: list[dict] = []
    for k in range(NODES_PER_JOB):
        if i % 3 == 0:  # fan-out / fan-in
            deps = (
                []
                if k == 0
                else (["n0"] if k < NODES_PER_JOB - 1 else [f"n{j}" for j in range(1, k)])
            )
        elif i % 3 == 1:  # layers of 5, each node depending on two of the previous layer
            layer = k // 5
            deps = (
                []
                if layer == 0
                else rng.sample([f"n{j}" for j in range((layer - 1) * 5, layer * 5)], 2)
            )
        else:
            deps = []
        sleep = rng.choice(["0.02", "0.1", "0.2", "0.3"])
        nodes.append(node(f"n{k}", ledger.cmd(f"sleep {sleep}"), deps, retries=6, timeout=60))
    return {"name": f"soak-{i}", "nodes": nodes}


def scrape(url: str, metric: str) -> float:
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(v) for v in re.findall(rf"^{metric}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.mark.slow
def test_soak_with_chaos(
    tmp_path: Path, database_url: str, private_redis: LocalRedis, ledger: Ledger
) -> None:
    rng = random.Random(20261127)
    env = {**FAST, "MINITEMPORAL_LOG_LEVEL": "warning"}
    cluster = Cluster(tmp_path, database_url, private_redis.url, extra_env=env)
    chaos_log: list[str] = []
    last_chaos = [0.0]
    try:
        top = start_split(cluster, schedulers=2, workers=3)
        job_ids = [top.api.submit(job_spec(i, ledger, rng)) for i in range(JOBS)]
        stop = threading.Event()
        rescued_before_restart = [0.0]

        def chaos() -> None:
            events = ["worker"] * 6 + ["scheduler", "flushall"]
            rng.shuffle(events)
            for event in events:
                if stop.wait(rng.uniform(1.0, 2.0)):
                    return
                if event == "worker":
                    victim = rng.choice(top.workers)
                    victim.kill()
                    chaos_log.append(f"kill -9 {victim.name}")
                    if not stop.wait(rng.uniform(0.2, 1.5)):
                        victim.start()
                elif event == "scheduler":
                    s2 = top.schedulers[1]
                    rescued_before_restart[0] = scrape(
                        s2.http_url, "minitemporal_tasks_rescued_total"
                    )
                    s2.kill()
                    chaos_log.append("kill -9 scheduler2")
                    if not stop.wait(2.0):
                        s2.start()
                else:
                    redis.Redis.from_url(private_redis.url).flushall()
                    chaos_log.append("FLUSHALL")
                last_chaos[0] = time.time()

        monkey = threading.Thread(target=chaos, daemon=True)
        started = time.monotonic()
        monkey.start()
        jobs = [top.api.wait(j, timeout=400, interval=0.5) for j in job_ids]
        elapsed = time.monotonic() - started
        stop.set()
        monkey.join(timeout=30)
        for p in [*top.schedulers, *top.workers]:
            if not p.alive():
                p.start()

        statuses = {j["status"] for j in jobs}
        nodes = [(j["id"], n) for j in jobs for n in j["nodes"]]
        attempts = [a for _, n in nodes for a in n["attempts"]]
        runs = ledger.runs()
        twice = [k for k, c in runs.items() if c > 1]
        ran_after_success = [
            (job_id, n["id"])
            for job_id, n in nodes
            if any(j == job_id and nid == n["id"] and a > n["attempt"] for (j, nid, a) in runs)
        ]
        rescued = sum(
            scrape(s.http_url, "minitemporal_tasks_rescued_total") for s in top.schedulers
        )
        rescued += rescued_before_restart[0]
        reasons = [a["reason"] for a in attempts]
        print(
            f"\nsoak: {len(nodes)} nodes in {len(jobs)} jobs, {elapsed:.1f}s; chaos: {chaos_log}\n"
            f"soak: attempts={len(attempts)} retries={len(attempts) - len(nodes)} "
            f"lost={reasons.count('lost')} interrupted={reasons.count('interrupted')} "
            f"rescued={rescued:.0f} ledger_entries={sum(runs.values())}"
        )
        assert statuses == {"succeeded"}, statuses
        assert len(nodes) == JOBS * NODES_PER_JOB
        assert not twice, f"(job, node, attempt) ran twice: {twice[:5]}"
        assert not ran_after_success, f"ran again after succeeding: {ran_after_success[:5]}"
        assert {(j, n["id"], n["attempt"]) for j, n in nodes} <= set(runs), "every success ran"
        assert len(chaos_log) == 8, chaos_log
        last_finish = max(ts(j["finished_at"]).timestamp() for j in jobs)
        assert last_chaos[0] < last_finish, "all the chaos happened while jobs ran"
    finally:
        cluster.stop_all()
