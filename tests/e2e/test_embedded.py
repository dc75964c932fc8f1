"""The embedded mode as a user meets it: `minitemporal --roles all` with nothing configured.
One line says so at start; the SQLite file lands in the working directory; a process stopped
mid-job (SIGTERM or kill -9) and started again on the same file finishes the job; role sets
that cannot work embedded exit with one line naming the missing setting."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Api, example_job, nodes_by_id
from tests.support.procs import ROOT, Cluster, Proc, minitemporal_command
from tests.support.services import free_port

# Quick leases so that an attempt of a killed process is recovered in seconds.
FAST = {
    "MINITEMPORAL_LEASE_SECONDS": "1.5",
    "MINITEMPORAL_HEARTBEAT_SECONDS": "0.3",
    "MINITEMPORAL_RECONCILE_SECONDS": "1",
    "MINITEMPORAL_DRAIN_SECONDS": "0.3",
    "MINITEMPORAL_KILL_GRACE_SECONDS": "1",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, database_url=None, redis_url=None, extra_env=FAST)
    yield c
    c.stop_all()


def start(cluster: Cluster, name: str) -> Api:
    proc = cluster.add(name, "all", grpc_port=free_port()).start()
    proc.wait_healthy()
    return Api(proc.http_url)


def signal_and_wait(proc: Proc, sig: int, timeout: float = 20.0) -> int:
    """One signal, then wait for the exit code. (Proc.stop would send SIGTERM again, and a
    second signal means "stop now": the launcher has let go of signals by then.)"""
    proc.signal(sig)
    assert proc.popen is not None
    code = proc.popen.wait(timeout=timeout)
    proc.exit_codes.append(code)
    return code


def three_steps(ledger: Path, *, middle: str, retries: int = 0) -> dict[str, object]:
    def record(step: str) -> str:
        return f'echo "{step} $MINITEMPORAL_ATTEMPT" >> {ledger}'

    return {
        "name": "restart",
        "nodes": [
            {"id": "a", "command": record("a")},
            {
                "id": "b",
                "command": f"{middle}; {record('b')}",
                "depends_on": ["a"],
                "retries": retries,
            },
            {"id": "c", "command": record("c"), "depends_on": ["b"]},
        ],
    }


def running(node: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: nodes_by_id(job)[node]["state"] == "running"


def test_banner_and_database_file(cluster: Cluster) -> None:
    api = start(cluster, "first")
    job = api.wait(api.submit(example_job()))
    assert job["status"] == "succeeded"
    api.close()
    proc = cluster.procs[0]
    first_line = proc.log().splitlines()[0]
    assert first_line.startswith("minitemporal: embedded mode (SQLite file ./minitemporal.db")
    assert "MINITEMPORAL_DATABASE_URL=postgresql://" in first_line
    assert "MINITEMPORAL_REDIS_URL=redis://" in first_line
    assert (cluster.tmp / "minitemporal.db").is_file(), "in the working directory"
    assert proc.stop() == 0


def test_restart_after_sigterm_mid_job_finishes_the_job(cluster: Cluster) -> None:
    ledger = cluster.tmp / "ledger"
    api = start(cluster, "first")
    first_only = 'if [ "$MINITEMPORAL_ATTEMPT" = 1 ]; then sleep 30; fi'
    job_id = api.submit(three_steps(ledger, middle=first_only))
    api.wait(job_id, running("b"), timeout=30)
    api.close()
    assert cluster.procs[0].stop() == 0, "a clean stop, the running command given back"

    api = start(cluster, "second")
    job = api.wait(job_id, timeout=60)
    assert job["status"] == "succeeded", job
    b = nodes_by_id(job)["b"]
    assert [t["reason"] for t in b["attempts"]] == ["interrupted", "succeeded"]
    assert b["attempt"] == 2, "a give-back does not use up the node's single attempt"
    assert ledger.read_text().splitlines() == ["a 1", "b 2", "c 1"]
    api.close()


def test_restart_after_kill_9_mid_job_finishes_the_job(cluster: Cluster) -> None:
    ledger = cluster.tmp / "ledger"
    api = start(cluster, "first")
    job_id = api.submit(three_steps(ledger, middle="sleep 2", retries=1))
    api.wait(job_id, running("b"), timeout=30)
    # x may be running when the process dies: then its attempt is lost, hence a retry.
    late = api.submit(
        {"name": "acknowledged", "nodes": [{"id": "x", "command": "true", "retries": 1}]}
    )
    cluster.procs[0].kill()  # the 201 above was the last thing it did

    api = start(cluster, "second")
    job = api.wait(job_id, timeout=60)
    assert job["status"] == "succeeded", job
    b = nodes_by_id(job)["b"]
    assert [t["reason"] for t in b["attempts"]] == ["lost", "succeeded"]
    assert b["attempts"][0]["worker_id"] == "first" and b["worker_id"] == "second"
    assert api.wait(late)["status"] == "succeeded", "an acknowledged job survives kill -9"
    api.close()


def test_in_memory_database(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, database_url="sqlite:///:memory:", redis_url=None)
    try:
        api = start(cluster, "memory")
        assert api.wait(api.submit(example_job()))["status"] == "succeeded"
        api.close()
        assert "SQLite in memory" in cluster.procs[0].log().splitlines()[0]
        assert cluster.procs[0].stop() == 0
    finally:
        cluster.stop_all()
    assert not list(tmp_path.glob("*.db*")), "nothing written to disk"


def run_cli(
    tmp: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    return subprocess.run(
        [*minitemporal_command(), *args],
        env=clean,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("roles", "env", "names"),
    [
        ("worker", {}, "MINITEMPORAL_REDIS_URL"),
        ("scheduler", {}, "MINITEMPORAL_REDIS_URL"),
        ("api,scheduler", {}, "MINITEMPORAL_REDIS_URL"),
        ("all", {"MINITEMPORAL_DATABASE_URL": "sqlite:///no/such/dir/x.db"}, "no/such/dir"),
        ("all", {"MINITEMPORAL_DATABASE_URL": "sqlite://host/x.db"}, "sqlite://host/x.db"),
        ("all", {"MINITEMPORAL_DATABASE_URL": "mysql://db"}, "MINITEMPORAL_DATABASE_URL"),
    ],
)
def test_settings_that_cannot_work_exit_with_one_line(
    tmp_path: Path, roles: str, env: dict[str, str], names: str
) -> None:
    result = run_cli(tmp_path, ["--roles", roles], env)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("minitemporal: ") and names in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "minitemporal.db").exists(), "refused before touching anything"


def test_sigint_stops_the_embedded_process_cleanly(cluster: Cluster) -> None:
    start(cluster, "first").close()
    assert signal_and_wait(cluster.procs[0], signal.SIGINT) == 0
    assert not (cluster.tmp / "minitemporal.db-wal").exists(), "checkpointed at close"


def test_a_second_signal_stops_at_once_without_a_traceback(cluster: Cluster) -> None:
    """Ctrl-C twice (or a supervisor forwarding the signal it got): stop now, but still
    release the gRPC server inside the event loop, so nothing is printed from a finalizer."""
    api = start(cluster, "first")
    api.submit({"name": "slow", "nodes": [{"id": "s", "command": "sleep 30"}]})
    api.close()
    proc = cluster.procs[0]
    proc.signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while "stopping gracefully" not in proc.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.signal(signal.SIGINT)
    assert proc.popen is not None
    assert proc.popen.wait(timeout=20) == 0
    log = proc.log()
    assert "second signal: stopping now" in log
    assert "Traceback" not in log and "Exception ignored" not in log, log[-2000:]


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "minitemporal.db").write_text("not a database " * 20)
    env = {"MINITEMPORAL_API_PORT": str(free_port()), "MINITEMPORAL_GRPC_PORT": str(free_port())}
    result = run_cli(tmp_path, ["--roles", "all"], env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines()[-1] == (
        "minitemporal: cannot open the SQLite database minitemporal.db: file is not a database"
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_attempts_left_queued_are_pushed_again_after_a_restart(tmp_path: Path) -> None:
    """One slot: while x runs, y and z wait in the in-process queue, which dies with the
    process. The next process rebuilds its queue from the store (claim_epoch) and runs them."""
    cluster = Cluster(
        tmp_path,
        database_url=None,
        redis_url=None,
        extra_env={**FAST, "MINITEMPORAL_WORKER_SLOTS": "1", "MINITEMPORAL_WORKER_PREFETCH": "0"},
    )
    try:
        api = start(cluster, "first")
        first_only = 'if [ "$MINITEMPORAL_ATTEMPT" = 1 ]; then sleep 30; fi'
        job_id = api.submit(
            {
                "name": "queued",
                "nodes": [
                    {"id": "x", "command": first_only},
                    {"id": "y", "command": "true"},
                    {"id": "z", "command": "true"},
                ],
            }
        )
        job = api.wait(job_id, running("x"), timeout=30)
        assert {n["id"]: n["state"] for n in job["nodes"]} == {
            "x": "running",
            "y": "queued",
            "z": "queued",
        }
        api.close()
        assert cluster.procs[0].stop() == 0
        api = start(cluster, "second")
        job = api.wait(job_id, timeout=60)
        assert job["status"] == "succeeded"
        assert all(n["worker_id"] == "second" for n in job["nodes"])
        api.close()
    finally:
        cluster.stop_all()


def test_sigterm_while_the_database_is_locked_stops_the_process(tmp_path: Path) -> None:
    """Another process holds the file's write lock: the store is not ready, and SIGTERM must
    still stop the process (it used to keep serving http, waiting for nothing)."""
    db = tmp_path / "minitemporal.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS held (x)")
    holder.execute("BEGIN EXCLUSIVE")
    cluster = Cluster(tmp_path, database_url=None, redis_url=None)
    try:
        proc = cluster.add("locked", "all", grpc_port=free_port()).start()
        deadline = time.monotonic() + 30
        while "store not ready" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "database is locked" in proc.log()
        started = time.monotonic()
        assert signal_and_wait(proc, signal.SIGTERM) == 0
        assert time.monotonic() - started < 15
    finally:
        holder.close()
        cluster.stop_all()
