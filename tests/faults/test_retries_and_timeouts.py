"""Retries with backoff, every attempt recorded; timeouts that kill the whole process group."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import node, nodes_by_id, ts
from tests.support.procs import Cluster, pid_alive
from tests.support.topology import Ledger, start_split, wait_for


def test_retries_with_backoff_then_success(fast_cluster: Cluster, tmp_path: Path) -> None:
    fast_cluster.extra_env["MINITEMPORAL_RETRY_JITTER"] = "0"
    top = start_split(fast_cluster)
    counter = tmp_path / "count"
    # Fails on attempts 1 and 2, succeeds on 3 (retries: 2 allows 3 attempts).
    flaky = f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ "$n" -ge 2 ]'
    job_id = top.api.submit({"name": "flaky", "nodes": [node("f", flaky, retries=2)]})
    job = top.api.wait(job_id, timeout=30)
    assert job["status"] == "succeeded"
    f = nodes_by_id(job)["f"]
    attempts = f["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["reason"] for a in attempts] == ["exit_code", "exit_code", "succeeded"]
    assert [a["exit_code"] for a in attempts] == [1, 1, 0]
    assert all(a["worker_id"] == "worker1" for a in attempts)
    # Backoff base 0.2 s, factor 2, no jitter: at least 0.2 s then 0.4 s between attempts.
    gap1 = ts(attempts[1]["enqueued_at"]) - ts(attempts[0]["finished_at"])
    gap2 = ts(attempts[2]["enqueued_at"]) - ts(attempts[1]["finished_at"])
    assert gap1.total_seconds() >= 0.19 and gap2.total_seconds() >= 0.39, (gap1, gap2)


def test_retries_exhausted_and_per_node_backoff(fast_cluster: Cluster) -> None:
    top = start_split(fast_cluster)
    job_id = top.api.submit(
        {
            "name": "always-fails",
            "nodes": [
                node(
                    "bad",
                    "exit 4",
                    retries=1,
                    retry_backoff={"base_seconds": 1.5, "factor": 1, "max_seconds": 1.5},
                ),
                node("below", "true", ["bad"]),
            ],
        }
    )
    waiting = top.api.wait(job_id, lambda j: nodes_by_id(j)["bad"]["state"] == "retry_wait")
    bad = nodes_by_id(waiting)["bad"]
    assert "backing off until" in bad["explanation"] and bad["next_attempt_at"]
    job = top.api.wait(job_id, timeout=30)
    bad = nodes_by_id(job)["bad"]
    assert job["status"] == "failed" and bad["state"] == "failed"
    assert [a["exit_code"] for a in bad["attempts"]] == [4, 4]
    delay = ts(bad["attempts"][1]["enqueued_at"]) - ts(bad["attempts"][0]["finished_at"])
    assert delay.total_seconds() >= 0.7, "the per-node base of 1.5 s (jitter at most 50%)"
    assert nodes_by_id(job)["below"]["state"] == "upstream_failed"


def test_timeout_kills_the_group_including_trapping_and_background(
    fast_cluster: Cluster, tmp_path: Path
) -> None:
    top = start_split(fast_cluster)
    pids = tmp_path / "pids"
    stubborn = (
        f"trap '' TERM; (trap '' TERM; sleep 60) & echo $! >> {pids}; "
        f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    )
    job_id = top.api.submit(
        {"name": "timeout", "nodes": [node("slow", stubborn, timeout=1, retries=0)]}
    )
    job = top.api.wait(job_id, timeout=30)
    slow = nodes_by_id(job)["slow"]
    assert job["status"] == "failed" and slow["state"] == "failed"
    assert slow["attempts"][0]["reason"] == "timeout"
    assert "timed out" in slow["explanation"]
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 3
    assert not any(pid_alive(p) for p in recorded), "nothing of the attempt is left running"


def test_a_clean_environment_and_private_workdir(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(fast_cluster)
    job_id = top.api.submit(
        {"name": "env", "nodes": [node("e", "env; pwd", env={"GREETING": "hi"})]}
    )
    job = top.api.wait(job_id)
    out = nodes_by_id(job)["e"]["stdout"]["tail"]
    assert "GREETING=hi" in out and f"MINITEMPORAL_JOB_ID={job_id}" in out
    assert "MINITEMPORAL_ATTEMPT=1" in out and "MINITEMPORAL_NODE_ID=e" in out
    for secret in (
        "MINITEMPORAL_DATABASE_URL",
        "MINITEMPORAL_REDIS_URL",
        "MINITEMPORAL_GRPC_SECRET",
        fast_cluster.grpc_secret,
    ):
        assert secret not in out
    workdir = out.strip().splitlines()[-1]
    # Removed by the worker's directory thread, off the attempt's path: soon, not at once.
    wait_for(lambda: not Path(workdir).exists(), 5, "the attempt's working directory removed")
