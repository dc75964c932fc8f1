"""Running commands: process groups, timeouts that kill, bounded output (real processes)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from minitemporal.domain.model import Outcome
from minitemporal.worker.process import (
    PIPES_GRACE,
    Execution,
    ResourceLimits,
    RunSpec,
    command_argv,
)
from tests.support.procs import pid_alive, wait_until

pytestmark = pytest.mark.anyio


def spec(command: str, tmp_path: Path, timeout: float | None = 10, grace: float = 0.5) -> RunSpec:
    return RunSpec(
        command=command,
        env={"PATH": os.environ["PATH"], "FOO": "bar"},
        cwd=str(tmp_path),
        timeout=timeout,
        kill_grace=grace,
        tail_bytes=1024,
    )


async def test_exit_codes_output_env_and_cwd(tmp_path: Path) -> None:
    ok = await Execution(spec('echo "$FOO"; pwd; echo err >&2', tmp_path)).run()
    assert ok.outcome is Outcome.SUCCEEDED and ok.exit_code == 0
    assert ok.stdout.tail == f"bar\n{tmp_path}\n" and ok.stderr.tail == "err\n"
    assert ok.started_at is not None and ok.started_at <= ok.finished_at
    bad = await Execution(spec("exit 7", tmp_path)).run()
    assert bad.outcome is Outcome.EXIT_CODE and bad.exit_code == 7


async def test_without_pidfds_a_thread_tells_the_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "pidfd_open: not implemented")  # a kernel before 5.3

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    res = await Execution(spec("echo out; exit 3", tmp_path)).run()
    assert (res.outcome, res.exit_code, res.stdout.tail) == (Outcome.EXIT_CODE, 3, "out\n")
    slow = await Execution(spec("sleep 30", tmp_path, timeout=0.3, grace=0.3)).run()
    assert slow.outcome is Outcome.TIMEOUT and slow.exit_code is not None


async def test_timeout_kills_the_whole_group_even_if_sigterm_is_trapped(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = (
        f"trap '' TERM; (trap '' TERM; sleep 60) & echo $! >> {pids}; "
        f"sleep 60 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    )
    start = time.monotonic()
    res = await Execution(spec(command, tmp_path, timeout=0.5, grace=0.3)).run()
    assert res.outcome is Outcome.TIMEOUT
    assert time.monotonic() - start < 5
    for pid in map(int, pids.read_text().split()):
        assert not pid_alive(pid), f"{pid} survived the timeout"


async def test_background_stragglers_are_ended_after_a_normal_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    res = await Execution(spec(f"sleep 60 & echo $! > {pidfile}; echo done", tmp_path)).run()
    assert res.outcome is Outcome.SUCCEEDED and res.stdout.tail == "done\n"
    assert not pid_alive(int(pidfile.read_text()))


async def test_an_escaped_child_holding_the_pipes_does_not_hold_up_the_run(
    tmp_path: Path,
) -> None:
    """A child that left the group (setsid) keeps the output pipes open: the run ends a
    short grace after the exit, with what was printed, instead of waiting for the child."""
    pidfile = tmp_path / "escaped"
    start = time.monotonic()
    res = await Execution(spec(f"setsid sleep 60 & echo $! > {pidfile}; echo done", tmp_path)).run()
    try:
        assert res.outcome is Outcome.SUCCEEDED and res.stdout.tail == "done\n"
        assert time.monotonic() - start < PIPES_GRACE + 3
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_a_cancelled_run_leaves_no_command_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    execution = Execution(spec(f"echo $$ > {pidfile}; exec sleep 30", tmp_path))
    async with anyio.create_task_group() as tg:
        tg.start_soon(execution.run)
        await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", "pid")
        started = time.monotonic()
        tg.cancel_scope.cancel()
    assert time.monotonic() - started < 0.05, "cancelling does not block the loop"
    pid = int(pidfile.read_text())
    await wait_until(lambda: not pid_alive(pid), "the command to be gone", timeout=5)


async def test_stop_cancels_a_running_command(tmp_path: Path) -> None:
    execution = Execution(spec("sleep 30", tmp_path))
    async with anyio.create_task_group() as tg:
        results = []

        async def run() -> None:
            results.append(await execution.run())

        tg.start_soon(run)
        await anyio.sleep(0.3)
        execution.stop(Outcome.CANCELLED)
    assert results[0].outcome is Outcome.CANCELLED


async def test_huge_output_is_truncated_with_flat_memory(tmp_path: Path) -> None:
    res = await Execution(
        spec("head -c 50000000 /dev/zero | tr '\\0' 'y'", tmp_path, timeout=60)
    ).run()
    assert res.outcome is Outcome.SUCCEEDED
    assert res.stdout.total_bytes == 50_000_000
    assert res.stdout.truncated and res.stdout.tail.endswith("y" * 100)
    assert len(res.stdout.tail) < 1100


async def test_unstartable_command(tmp_path: Path) -> None:
    bad = spec("true", tmp_path)
    object.__setattr__(bad, "cwd", str(tmp_path / "missing"))
    res = await Execution(bad).run()
    assert res.outcome is Outcome.EXIT_CODE and res.exit_code == 127
    assert "could not start" in res.stderr.tail


def limited(command: str, tmp_path: Path, **limits: int) -> RunSpec:
    configured = ResourceLimits.configured(
        cpu_seconds=limits.get("cpu_seconds"),
        memory_bytes=limits.get("memory_bytes"),
        open_files=limits.get("open_files"),
        processes=limits.get("processes"),
    )
    return dataclasses.replace(spec(command, tmp_path, timeout=30), limits=configured)


def test_without_limits_the_spawn_path_is_plain_sh() -> None:
    assert command_argv("echo hi", None) == ["/bin/sh", "-c", "echo hi"]
    no_limits = ResourceLimits.configured(
        cpu_seconds=None, memory_bytes=None, open_files=None, processes=None
    )
    assert no_limits is None


async def test_limits_apply_to_the_command_and_cannot_be_raised(tmp_path: Path) -> None:
    res = await Execution(
        limited(
            "ulimit -t; ulimit -v; ulimit -n; ulimit -p; ulimit -n 4096 || echo refused",
            tmp_path,
            cpu_seconds=30,
            memory_bytes=512 * 1024 * 1024,
            open_files=64,
            processes=4000,
        )
    ).run()
    assert res.stdout.tail.split() == ["30", str(512 * 1024), "64", "4000", "refused"]


async def test_cpu_and_memory_limits_stop_commands(tmp_path: Path) -> None:
    start = time.monotonic()
    spin = await Execution(limited("while :; do :; done", tmp_path, cpu_seconds=1)).run()
    assert spin.outcome is Outcome.EXIT_CODE and spin.exit_code != 0
    assert time.monotonic() - start < 10
    hog = await Execution(
        limited(
            "python3 -c 'bytearray(1 << 30)' || echo refused",
            tmp_path,
            memory_bytes=256 * 1024 * 1024,
        )
    ).run()
    assert "MemoryError" in hog.stderr.tail and hog.stdout.tail == "refused\n"


async def test_start_spawns_at_once_and_run_supervises_it(tmp_path: Path) -> None:
    """A worker starts a freed slot's next command in the same loop turn (`start`), then
    awaits it (`run`): the command runs before anything else on the loop did."""
    marker = tmp_path / "ran"
    execution = Execution(spec(f"echo $$ > {marker}; echo done", tmp_path))
    execution.start()
    assert execution.started_at is not None, "spawned before start() returned"
    await wait_until(lambda: marker.exists() and marker.read_text().strip() != "", "the child")
    execution.start()  # a second start is a no-op, not a second command
    res = await execution.run()
    assert (res.outcome, res.exit_code, res.stdout.tail) == (Outcome.SUCCEEDED, 0, "done\n")
    assert res.started_at == execution.started_at


async def test_stop_between_start_and_run_ends_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    execution = Execution(spec(f"echo $$ > {pidfile}; exec sleep 30", tmp_path))
    execution.start()
    await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", "pid")
    execution.stop(Outcome.CANCELLED)
    res = await execution.run()
    assert res.outcome is Outcome.CANCELLED
    await wait_until(lambda: not pid_alive(int(pidfile.read_text())), "the command gone", timeout=5)


async def test_stopped_before_start_spawns_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    execution = Execution(spec(f"touch {marker}", tmp_path))
    execution.stop(Outcome.CANCELLED)
    execution.start()
    res = await execution.run()
    assert res.outcome is Outcome.CANCELLED and res.started_at is None
    assert not marker.exists()


async def test_a_spawn_that_fails_in_start_is_the_runs_result(tmp_path: Path) -> None:
    bad = spec("true", tmp_path)
    object.__setattr__(bad, "cwd", str(tmp_path / "missing"))
    execution = Execution(bad)
    execution.start()  # does not raise
    res = await execution.run()
    assert res.outcome is Outcome.EXIT_CODE and res.exit_code == 127
    assert "could not start" in res.stderr.tail


async def test_a_crash_in_start_is_raised_by_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start` runs in the worker's own paths (a report's reply, a freed slot): a bug there
    must reach `run`, which the worker turns into a lost attempt, not escape into them."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("subprocess.Popen", broken)
    execution = Execution(spec("true", tmp_path))
    execution.start()
    with pytest.raises(RuntimeError, match="a bug"):
        await execution.run()
