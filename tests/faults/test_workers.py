"""Lost workers, fencing of stale attempts, graceful shutdown and cancellation."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.api import node, nodes_by_id
from tests.support.procs import Cluster, pid_alive
from tests.support.services import free_port
from tests.support.topology import Ledger, pause, resume, start_split, wait_for


def running_on(job: dict, node_id: str) -> str | None:
    n = nodes_by_id(job)[node_id]
    return n["worker_id"] if n["state"] == "running" and n["attempts"] else None


def test_kill_9_of_a_worker_retries_the_node_elsewhere(
    fast_cluster: Cluster, ledger: Ledger
) -> None:
    top = start_split(fast_cluster, workers=1)
    job_id = top.api.submit(
        {"name": "lost", "nodes": [node("s", ledger.cmd("sleep 5"), retries=1, timeout=60)]}
    )
    top.api.wait(job_id, lambda j: running_on(j, "s") == "worker1", timeout=20)
    other = top.add_worker("worker2")
    top.workers[0].kill()
    killed_at = time.monotonic()
    job = top.api.wait(job_id, lambda j: nodes_by_id(j)["s"]["attempt"] == 2, timeout=20)
    detected = time.monotonic() - killed_at
    assert detected < 2 + 2, f"lost after {detected:.1f}s with a 2 s lease"
    job = top.api.wait(job_id, timeout=30)
    s = nodes_by_id(job)["s"]
    assert job["status"] == "succeeded"
    assert [a["reason"] for a in s["attempts"]] == ["lost", "succeeded"]
    assert [a["worker_id"] for a in s["attempts"]] == ["worker1", other.name]
    assert ledger.runs() == {(job_id, "s", 1): 1, (job_id, "s", 2): 1}


def test_a_paused_worker_past_its_lease_cannot_record_a_second_result(
    fast_cluster: Cluster, ledger: Ledger, tmp_path: Path
) -> None:
    top = start_split(fast_cluster, workers=2)
    job_id = top.api.submit(
        {"name": "fenced", "nodes": [node("n", ledger.cmd("sleep 1.5"), retries=2, timeout=60)]}
    )
    job = top.api.wait(job_id, lambda j: running_on(j, "n") is not None, timeout=20)
    first = next(w for w in top.workers if w.name == running_on(job, "n"))
    paused = pause(first)  # the worker and its command: a frozen VM
    try:
        job = top.api.wait(job_id, timeout=30)
    finally:
        resume(paused)
    assert job["status"] == "succeeded"
    # After resuming, the paused worker's heartbeat or report is rejected: wait until it knows.
    wait_for(
        lambda: "no longer" in first.log() or "rejected" in first.log(),
        timeout=15,
        what="the resumed worker to hear that its attempt is stale",
    )
    time.sleep(1.0)  # give a wrong implementation the chance to record a second result
    n = nodes_by_id(top.api.get(job_id))["n"]
    assert [a["reason"] for a in n["attempts"]] == ["lost", "succeeded"]
    assert n["attempts"][0]["exit_code"] is None and n["attempts"][0]["worker_id"] == first.name
    assert n["state"] == "succeeded" and n["attempt"] == 2
    assert first.alive(), "a stale worker carries on, it does not crash"


def test_sigterm_drains_running_work_then_exits_0(fast_cluster: Cluster, ledger: Ledger) -> None:
    top = start_split(fast_cluster, workers=1)
    job_id = top.api.submit(
        {"name": "drain", "nodes": [node("d", ledger.cmd("sleep 1; echo finished"))]}
    )
    top.api.wait(job_id, lambda j: running_on(j, "d") is not None, timeout=20)
    assert top.workers[0].stop(timeout=30) == 0
    job = top.api.get(job_id)
    d = nodes_by_id(job)["d"]
    assert job["status"] == "succeeded", "the running attempt finished and was reported"
    assert d["stdout"]["tail"] == "finished\n" and len(d["attempts"]) == 1


def test_drain_timeout_gives_the_attempt_back_without_using_a_retry(
    fast_cluster: Cluster, ledger: Ledger
) -> None:
    top = start_split(fast_cluster, workers=1, worker_env={"MINITEMPORAL_DRAIN_SECONDS": "0.5"})
    job_id = top.api.submit(
        {"name": "give-back", "nodes": [node("g", ledger.cmd("sleep 3"), retries=0, timeout=60)]}
    )
    top.api.wait(job_id, lambda j: running_on(j, "g") == "worker1", timeout=20)
    assert top.workers[0].stop(timeout=30) == 0
    top.add_worker("worker2")
    job = top.api.wait(job_id, timeout=30)
    g = nodes_by_id(job)["g"]
    assert job["status"] == "succeeded", "retries: 0, yet the given-back attempt runs again"
    assert [a["reason"] for a in g["attempts"]] == ["interrupted", "succeeded"]
    assert [a["worker_id"] for a in g["attempts"]] == ["worker1", "worker2"]


def test_cancel_kills_running_and_cancels_waiting(
    fast_cluster: Cluster, ledger: Ledger, tmp_path: Path
) -> None:
    top = start_split(fast_cluster, workers=1)
    pidfile = tmp_path / "pid"
    job_id = top.api.submit(
        {
            "name": "cancel-me",
            "nodes": [
                node("long", f"echo $$ > {pidfile}; exec sleep 60", timeout=120),
                node("after", "true", ["long"]),
                node("later", "sleep 60", ["after"]),
            ],
        }
    )
    top.api.wait(job_id, lambda j: running_on(j, "long") is not None, timeout=20)
    wait_for(pidfile.exists, 10, "the command to start")
    pid = int(pidfile.read_text())
    started = time.monotonic()
    r = top.api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"]
    job = top.api.wait(job_id, timeout=20)
    assert job["status"] == "cancelled"
    assert time.monotonic() - started < 5, "killed within a few seconds (heartbeat reply)"
    assert not pid_alive(pid)
    nodes = nodes_by_id(job)
    assert {n["state"] for n in nodes.values()} == {"cancelled"}
    assert nodes["long"]["attempts"][0]["reason"] == "cancelled"
    assert nodes["after"]["attempts"] == []
    again = top.api.http.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["type"].endswith("/conflict")
    missing = top.api.http.post("/v1/jobs/00000000-0000-0000-0000-000000000000/cancel")
    assert missing.status_code == 404


def test_explanations_for_every_waiting_node(fast_cluster: Cluster) -> None:
    top = start_split(
        fast_cluster,
        workers=1,
        worker_env={"MINITEMPORAL_WORKER_SLOTS": "1", "MINITEMPORAL_WORKER_PREFETCH": "0"},
    )
    blocker = top.api.submit({"name": "busy", "nodes": [node("b", "sleep 3")]})
    top.api.wait(blocker, lambda j: running_on(j, "b") is not None, timeout=20)
    job_id = top.api.submit(
        {
            "name": "why",
            "nodes": [node("q1", "true"), node("q2", "true"), node("w", "true", ["q1", "q2"])],
        }
    )
    job = top.api.get(job_id)
    n = nodes_by_id(job)
    assert n["w"]["explanation"] == "waiting for q1, q2"
    assert "queued (attempt 1 of 1), waiting behind" in n["q1"]["explanation"]
    ahead = {int(x["explanation"].split("behind ")[1].split()[0]) for x in (n["q1"], n["q2"])}
    assert ahead == {0, 1}
    running = nodes_by_id(top.api.get(blocker))["b"]
    assert running["explanation"].startswith("running attempt 1 of 1 on worker1")
    top.api.wait(job_id, timeout=30)


def test_a_worker_cut_off_from_the_scheduler_kills_its_command(
    fast_cluster: Cluster, tmp_path: Path
) -> None:
    top = start_split(fast_cluster, workers=1)
    pidfile = tmp_path / "pid"
    job_id = top.api.submit(
        {
            "name": "cut-off",
            "nodes": [node("c", f"echo $$ > {pidfile}; exec sleep 60", timeout=120)],
        }
    )
    top.api.wait(job_id, lambda j: running_on(j, "c") is not None, timeout=20)
    wait_for(pidfile.exists, 10, "the command to start")
    pid = int(pidfile.read_text())
    top.schedulers[0].kill()  # the worker can no longer renew its lease
    wait_for(lambda: not pid_alive(pid), timeout=2 + 5, what="the worker to kill its command")
    assert "lease lost" in top.workers[0].log()
    assert top.workers[0].alive()


def test_a_prefetched_attempt_stuck_behind_a_long_one_is_released(
    fast_cluster: Cluster, ledger: Ledger
) -> None:
    one_slot = {"MINITEMPORAL_WORKER_SLOTS": "1", "MINITEMPORAL_WORKER_PREFETCH": "1"}
    top = start_split(fast_cluster, workers=1, worker_env=one_slot)
    job_id = top.api.submit(
        {"name": "hol", "nodes": [node("long", ledger.cmd("sleep 4"), timeout=60)]}
    )
    top.api.wait(job_id, lambda j: running_on(j, "long") == "worker1", timeout=20)
    # worker1's slot is busy; its prefetch permit claims the short one, which then waits.
    short = top.api.submit({"name": "short", "nodes": [node("s", ledger.cmd())]})
    wait_for(
        lambda: httpx.get(top.workers[0].http_url + "/metrics").text.count(
            "minitemporal_worker_prefetched 1.0"
        ),
        timeout=10,
        what="worker1 to prefetch the short attempt",
    )
    assert nodes_by_id(top.api.get(short))["s"]["worker_id"] == "worker1"
    # Held for at most a second while worker1 is busy, then released to an idle worker.
    idle = top.add_worker("worker2", env=one_slot)
    done = top.api.wait(short, timeout=20)
    s = nodes_by_id(done)["s"]
    assert done["status"] == "succeeded"
    assert s["attempts"][0]["worker_id"] == idle.name, "run by the idle worker"
    assert s["attempt"] == 1 and len(s["attempts"]) == 1, "a release costs no attempt"
    long_job = top.api.get(job_id)
    assert long_job["status"] == "running", "well before the long one finished"
    top.api.wait(job_id, timeout=20)


def test_a_worker_whose_scheduler_is_gone_stops_at_once(fast_cluster: Cluster) -> None:
    """Its first call waits on a scheduler that never answers; SIGTERM must not wait with it
    (a supervisor's grace period is often 10 s, and nothing runs that needs draining)."""
    worker = fast_cluster.add("orphan", "worker", scheduler_port=free_port()).start()
    wait_for(lambda: "worker started" in worker.log(), timeout=30, what="the worker")
    asked = time.monotonic()
    assert worker.stop() == 0
    took = time.monotonic() - asked
    assert took < 4, f"stopped after {took:.1f}s: it waited for a scheduler that is gone"


def test_a_restarted_worker_removes_the_directories_a_killed_one_left(
    fast_cluster: Cluster, tmp_path: Path
) -> None:
    """kill -9 leaves the worker's ready directories and those of its running attempts,
    with what the commands wrote; the next worker on the host removes them as it starts."""
    work = tmp_path / "work"
    work.mkdir()
    top = start_split(fast_cluster, workers=1, worker_env={"MINITEMPORAL_WORK_DIR": str(work)})
    job_id = top.api.submit(
        {"name": "left", "nodes": [node("w", "echo secret > left.txt; sleep 3", timeout=60)]}
    )
    top.api.wait(job_id, lambda j: running_on(j, "w") == "worker1", timeout=20)
    wait_for(
        lambda: list(work.glob("*/left.txt")), timeout=10, what="the command to write its file"
    )
    worker = top.workers[0]
    worker.kill()
    left = set(work.iterdir())
    assert len(left) > 1, "the running attempt's directory and the ready ones stay behind"
    top.restart(worker)
    wait_for(lambda: not left & set(work.iterdir()), timeout=10, what="the orphans to go")
    assert not list(work.glob("*/left.txt"))
    job = top.api.wait(job_id, timeout=30)  # retried on the new worker, in a fresh directory
    assert job["status"] == "succeeded"
