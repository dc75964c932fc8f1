"""What a command can and cannot reach on a worker: a clean environment, a private working
directory that is gone afterwards, its own unprivileged user, resource limits, bounded output;
and nothing written into Redis makes a worker run anything."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.api import node, nodes_by_id
from tests.support.procs import Cluster
from tests.support.security import token
from tests.support.topology import Ledger, start_split, wait_for

RUN_AS = "61001:61001,61002:61002"  # no passwd entry needed: numeric ids


def test_a_command_sees_none_of_the_workers_settings_or_secrets(cluster: Cluster) -> None:
    secret, entry = token("ci", "read,submit")
    cluster.extra_env.update(
        {"MINITEMPORAL_API_TOKENS": entry, "MINITEMPORAL_GRPC_SECRET": "grpc-s3cret-value"}
    )
    top = start_split(cluster)
    top.api.http.headers["Authorization"] = f"Bearer {secret}"
    job = top.api.wait(
        top.api.submit(
            {"name": "env", "nodes": [node("show", "env; echo; set", env={"MINE": "mine"})]}
        )
    )
    out = nodes_by_id(job)["show"]["stdout"]["tail"]
    assert "MINITEMPORAL_NODE_ID=show" in out and "MINE=mine" in out
    leaks = [
        cluster.database_url,
        cluster.redis_url,
        "grpc-s3cret-value",
        secret,
        entry.split(":")[1],
        "MINITEMPORAL_DATABASE_URL",
        "MINITEMPORAL_REDIS",
        "MINITEMPORAL_GRPC",
        "MINITEMPORAL_API_TOKENS",
        "127.0.0.1:",
    ]
    assert [leak for leak in leaks if leak and leak in out] == []


@pytest.fixture
def shared_dirs() -> Iterator[tuple[Path, Path]]:
    """A parent for workdirs that other users may traverse but not list (0711), and a drop
    box they can all write (1777); outside pytest's root-only temp dirs."""
    root = Path(tempfile.mkdtemp(prefix="minitemporal-sandbox-"))
    root.chmod(0o711)
    work, box = root / "work", root / "box"
    work.mkdir(mode=0o711)
    box.mkdir()
    box.chmod(0o1777)
    work.chmod(0o711)
    try:
        yield work, box
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a root worker")
def test_attempts_run_as_their_own_users_and_cannot_read_each_other(
    fast_cluster: Cluster, shared_dirs: tuple[Path, Path]
) -> None:
    work, box = shared_dirs
    top = start_split(
        fast_cluster,
        workers=0,
    )
    top.add_worker(
        "sandboxed",
        env={
            "MINITEMPORAL_RUN_AS_USER": RUN_AS,
            "MINITEMPORAL_WORKER_SLOTS": "2",
            "MINITEMPORAL_WORK_DIR": str(work),
            "MINITEMPORAL_LIMIT_OPEN_FILES": "64",
            "MINITEMPORAL_LIMIT_CPU_SECONDS": "60",
        },
    )
    wait_done = (
        f"i=0; while [ ! -e {box}/b-done ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done"
    )
    a = (
        f"echo s3cret > secret; pwd > {box}/a-dir; "
        f"setsid sleep 300 < /dev/null > /dev/null 2>&1 & echo $! > {box}/a-straggler; "
        f"id -u; stat -c '%u %a' .; echo HOME=$HOME; ulimit -n; {wait_done}"
    )
    b = (
        f"i=0; while [ ! -e {box}/a-dir ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; "
        f'A=$(cat {box}/a-dir); id -u; cat "$A/secret" || echo cannot-read; '
        f'ls "$A" || echo cannot-list; ls {work} || echo cannot-list-parent; '
        f"cat /proc/$PPID/environ || echo cannot-read-worker-env; touch {box}/b-done"
    )
    job = top.api.wait(
        top.api.submit({"name": "iso", "nodes": [node("a", a), node("b", b)]}), timeout=60
    )
    nodes = nodes_by_id(job)
    out_a, out_b = nodes["a"]["stdout"]["tail"], nodes["b"]["stdout"]["tail"]
    assert job["status"] == "succeeded", (out_a, out_b, nodes["b"]["stderr"]["tail"])

    uid_a = out_a.split()[0]
    assert {uid_a, out_b.split()[0]} == {"61001", "61002"}, "a user of its own each"
    workdir = (box / "a-dir").read_text().strip()
    assert f"{uid_a} 700" in out_a, "the workdir belongs to the command's user, mode 0700"
    assert f"HOME={workdir}" in out_a and "\n64\n" in out_a
    for refused in ("cannot-read", "cannot-list", "cannot-list-parent", "cannot-read-worker-env"):
        assert refused in out_b.split(), (refused, out_b)
    assert "s3cret" not in out_b
    # Removed by the worker's directory thread, off the attempt's path: soon, not at once.
    wait_for(lambda: not Path(workdir).exists(), timeout=5, what="the workdir to be gone")
    straggler = int((box / "a-straggler").read_text())
    wait_for(lambda: not _alive(straggler), timeout=10, what="the straggler to be killed")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workdirs_are_fresh_and_removed(cluster: Cluster) -> None:
    top = start_split(cluster)
    job = top.api.wait(
        top.api.submit(
            {
                "name": "dirs",
                "nodes": [
                    node("a", 'pwd; ls -A | wc -l; echo left > file; stat -c %a "$PWD"'),
                    node("b", "pwd; ls -A | wc -l", ["a"]),
                ],
            }
        )
    )
    nodes = nodes_by_id(job)
    a_dir, a_files, a_mode = nodes["a"]["stdout"]["tail"].split()
    b_dir, b_files = nodes["b"]["stdout"]["tail"].split()
    assert a_dir != b_dir and a_files == b_files == "0" and a_mode == "700"
    # Removed by the worker's directory thread, off the attempt's path: soon, not at once.
    wait_for(lambda: not Path(a_dir).exists() and not Path(b_dir).exists(), 5, "the dirs removed")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_gigabyte_of_output_keeps_the_worker_flat_and_stores_a_tail(cluster: Cluster) -> None:
    top = start_split(cluster)
    worker = top.workers[0]
    top.api.wait(top.api.submit({"name": "warm", "nodes": [node("w", "seq 100000")]}))
    baseline = _rss_kib(worker.pid)
    job_id = top.api.submit({"name": "yes", "nodes": [node("y", "yes | head -c 1G", timeout=300)]})
    peak, samples = baseline, 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        peak, samples = max(peak, _rss_kib(worker.pid)), samples + 1
        job = top.api.get(job_id)
        if job["status"] != "running":
            break
        time.sleep(0.05)
    out = nodes_by_id(job)["y"]["stdout"]
    assert job["status"] == "succeeded", job
    assert samples > 5, "sampled during the run"
    print(f"worker RSS {baseline} KiB before, peak {peak} KiB, {samples} samples")
    assert peak - baseline < 48 * 1024, f"worker RSS grew {(peak - baseline) // 1024} MiB"
    assert out["total_bytes"] == 1 << 30 and out["truncated"]
    assert out["tail"].startswith("[... ") and out["tail"].endswith("y\ny\n")
    assert len(out["tail"].encode()) <= 65536 + 100


def test_forged_queue_members_make_no_worker_run_anything(
    fast_cluster: Cluster, redis_server_url: str, ledger: Ledger
) -> None:
    top = start_split(fast_cluster)
    done = top.api.wait(top.api.submit({"name": "real", "nodes": [node("a", ledger.cmd())]}))
    assert done["status"] == "succeeded" and len(ledger.entries()) == 1
    with psycopg.connect(fast_cluster.database_url) as conn:
        (real_id,) = conn.execute("SELECT id FROM nodes").fetchone()
    marker = Path(tempfile.gettempdir()) / f"minitemporal-forged-{os.getpid()}"
    forged = [
        f"{real_id}:1",  # a finished attempt, again
        f"{real_id}:2",  # an attempt that was never queued
        "987654321:1",  # no such node
        "99999999999999999999999:1",  # beyond bigint
        "-1:1",
        "0:0",
        f"touch {marker}",
        f"1:1; touch {marker}",
        "\xff\xfe:1",
        "",
    ]
    queue = redis.Redis.from_url(redis_server_url)
    key = f"{fast_cluster.redis_prefix}:ready"
    queue.zadd(key, {m: 0 for m in forged})
    wait_for(lambda: queue.zcard(key) == 0, timeout=20, what="the worker to pop the forgeries")
    after = top.api.wait(top.api.submit({"name": "after", "nodes": [node("b", ledger.cmd())]}))
    assert after["status"] == "succeeded"
    assert [n for _, n, _ in ledger.entries()] == ["a", "b"], "nothing forged ran"
    assert not marker.exists()
    assert top.workers[0].alive()
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
    queue.close()
