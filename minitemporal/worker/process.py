"""Run one attempt's command: its own process group, bounded output, a timeout that kills.

The command runs as `/bin/sh -c <command>` in a new session (so its process group id is its
pid), optionally as another user and under resource limits set by `prlimit` before the exec
(no `preexec_fn`: it is unsafe in a process with threads, and grpc has threads). Ending an
attempt ends the whole group: SIGTERM, a grace period, then SIGKILL, which also takes
background children and commands that trap SIGTERM. The child is spawned by `Popen` itself
and its start stamped the moment it has exec'd; its pipes then go on the loop, and plain
readers feed two fixed-size tails, so memory stays flat whatever the command prints, and an
attempt costs no reader tasks: this is the worker's hot path, and it uses plain asyncio
futures and loop readers rather than task groups or transports for that reason. A pidfd on
the loop tells the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from minitemporal.domain.model import Outcome, Output
from minitemporal.errors import ConfigurationError

SHELL = "/bin/sh"
PRLIMIT = "prlimit"
PIPES_GRACE = 1.0  # after the group is gone, how long to wait for its pipes to close


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Per-process rlimits of a command (soft = hard, so it cannot raise them)."""

    cpu_seconds: int | None = None
    memory_bytes: int | None = None  # address space
    open_files: int | None = None
    processes: int | None = None  # per user: every command of a shared run-as user counts
    tool: str = PRLIMIT  # the prlimit executable, resolved at start

    @classmethod
    def configured(
        cls,
        *,
        cpu_seconds: int | None,
        memory_bytes: int | None,
        open_files: int | None,
        processes: int | None,
    ) -> ResourceLimits | None:
        """The limits a worker applies, or None when none is set (the fast spawn path)."""
        limits = cls(cpu_seconds, memory_bytes, open_files, processes)
        if not limits.prlimit_args():
            return None
        tool = shutil.which(PRLIMIT)
        if tool is None:
            raise ConfigurationError(
                "the MINITEMPORAL_LIMIT_* settings need the prlimit command (util-linux)"
            )
        return dataclasses.replace(limits, tool=tool)

    def prlimit_args(self) -> list[str]:
        pairs = (
            ("--cpu", self.cpu_seconds),
            ("--as", self.memory_bytes),
            ("--nofile", self.open_files),
            ("--nproc", self.processes),
        )
        return [f"{flag}={value}" for flag, value in pairs if value is not None]


def command_argv(command: str, limits: ResourceLimits | None) -> list[str]:
    """`/bin/sh -c <command>`, behind `prlimit` only when limits are set (one exec more)."""
    shell = [SHELL, "-c", command]
    if limits is None or not (args := limits.prlimit_args()):
        return shell
    return [limits.tool, *args, "--", *shell]


class TailBuffer:
    """The last `limit` bytes of a stream, and how many bytes it had in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk
        if len(self._buf) > 2 * self.limit:  # amortised: trim in large steps
            del self._buf[: len(self._buf) - self.limit]

    def output(self) -> Output:
        data = bytes(self._buf[-self.limit :])
        dropped = self.total - len(data)
        if dropped:
            # Do not start mid-character: skip UTF-8 continuation bytes.
            skip = 0
            while skip < min(4, len(data)) and data[skip] & 0xC0 == 0x80:
                skip += 1
            data = data[skip:]
            dropped += skip
        text = data.decode("utf-8", "replace").replace("\x00", "\ufffd")
        if dropped:
            text = f"[... {dropped} earlier bytes truncated ...]\n{text}"
        return Output(tail=text, total_bytes=self.total)


@dataclass(frozen=True, slots=True)
class RunSpec:
    command: str
    env: Mapping[str, str]
    cwd: str
    timeout: float | None
    kill_grace: float
    tail_bytes: int
    user: int | None = None
    group: int | None = None
    limits: ResourceLimits | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime
    stdout: Output
    stderr: Output
    spawn_seconds: float = 0.0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a group we cannot signal is not ours
        return False
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Child:
    """A spawned command on the loop. Its two output pipes are read by plain readers into the
    tails; `exited` resolves once it has exited and was reaped, `pipes_closed` once both
    pipes hit EOF, and the exit also wakes `wake`, the one future the run awaits. No
    transports, protocols or extra futures: on the hot path every callback is a loop turn.

    The exit is told by a pidfd on the loop (Linux 5.3+); elsewhere by a thread that waits for
    this one child. Nothing else reaps it: asyncio's child watchers wait for their own pids."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        loop: asyncio.AbstractEventLoop,
        wake: asyncio.Future[None],
    ) -> None:
        self.proc = proc
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        self._loop = loop
        self._reading: dict[int, TailBuffer] = {}
        self._pidfd: int | None = None

    def attach(self, out: TailBuffer, err: TailBuffer) -> None:
        self._watch_exit()
        for pipe, tail in ((self.proc.stdout, out), (self.proc.stderr, err)):
            assert pipe is not None  # both are PIPE
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._reading[fd] = tail
            self._loop.add_reader(fd, self._read, fd)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # a broken pipe reads as its end
            data = b""
        if data:
            self._reading[fd].feed(data)
            return
        self._stop_reading(fd)
        if not self._reading:
            _wake(self.pipes_closed)

    def _stop_reading(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        del self._reading[fd]  # the fd itself is closed with the Popen's file object

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
            threading.Thread(target=self._wait_in_thread, daemon=True).start()
            return
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self._forget_pidfd()
        self.proc.poll()  # exited (the pidfd is readable): reaps without blocking
        self._set_exited()

    def _wait_in_thread(self) -> None:
        self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._set_exited)

    def _set_exited(self) -> None:
        _wake(self.exited)
        _wake(self._wake)

    def _forget_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def close(self) -> None:
        for fd in list(self._reading):
            self._stop_reading(fd)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.proc.poll() is None:  # still running: the run was cancelled
            _signal_group(self.proc.pid, signal.SIGKILL)  # the exit watch still reaps it
        else:
            self._forget_pidfd()


class Execution:
    """One running command. `stop()` may be called at any time, from the same event loop.

    `start()` spawns it at once, in the caller's loop turn; `run()` then supervises it to
    its end (and starts it first if nobody did). A worker starts the next command in the turn
    a slot frees, not one turn later in the task that runs it: under load each turn of the
    worker's loop is long, and a slot waits for every turn on its path."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.started_at: datetime | None = None
        self._stop_reason: Outcome | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._out = TailBuffer(spec.tail_bytes)
        self._err = TailBuffer(spec.tail_bytes)
        self._child: _Child | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawn_seconds = 0.0
        self._crashed: Exception | None = None

    def stop(self, reason: Outcome) -> None:
        """End the command early (cancelled, lost lease, shutdown); the first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._stopped is not None:
            _wake(self._stopped)

    def start(self) -> None:
        """Spawn the command now, once. It does not raise: what goes wrong is `run()`'s to
        report. The caller must then await `run()`, which alone ends what this starts."""
        if self._stopped is not None or self._stop_reason is not None:
            return  # started already, or stopped before it started
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        t0 = time.perf_counter()
        try:
            # Popen returns once the child has exec'd (or failed to): the command runs from
            # here, before any pipe is on the loop. It blocks the loop as long as asyncio's
            # own subprocess_exec would: until the vforked child execs, 0.1-0.3 ms when a
            # core is free, more when the child waits for one (a spawner thread measured
            # worse: benchmarks/README.md).
            proc = subprocess.Popen(
                command_argv(self.spec.command, self.spec.limits),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(self.spec.env),
                cwd=self.spec.cwd,
                start_new_session=True,
                user=self.spec.user,
                group=self.spec.group,
                extra_groups=[] if self.spec.user is not None else None,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._err.feed(f"minitemporal: could not start the command: {exc}\n".encode())
            return
        except Exception as exc:  # a bug: raised by run(), where the worker handles a crash
            self._crashed = exc
            return
        self.started_at = datetime.now(UTC)
        self._spawn_seconds = time.perf_counter() - t0
        self._proc = proc
        self._child = _Child(proc, loop, self._stopped)
        try:
            self._child.attach(self._out, self._err)
        except Exception as exc:  # raised by run(), where the worker handles a crash
            self._child.close()  # kills the group: nothing will supervise it
            self._crashed = exc

    async def run(self) -> RunResult:
        self.start()
        if self._crashed is not None:
            raise self._crashed
        out, err = self._out, self._err
        proc, child = self._proc, self._child
        if proc is None or child is None:
            if self._stop_reason is not None and self._stopped is None:
                return self._result(self._stop_reason, None, None, out, err)
            return self._result(Outcome.EXIT_CODE, 127, None, out, err)  # could not spawn
        pgid = proc.pid  # a new session: the group is the child's pid
        try:
            outcome = await self._supervise(child, pgid)
            finished_at = datetime.now(UTC)
            # Nothing of the attempt outlives it: end stragglers left in the group.
            if _group_alive(pgid):
                await _terminate_group(pgid, self.spec.kill_grace)
            # Pipes reach EOF once the group is gone; a child that escaped the group (setsid)
            # may keep them open, so do not wait for it long.
            if not child.pipes_closed.done():
                await asyncio.wait({child.pipes_closed}, timeout=PIPES_GRACE)
        finally:
            child.close()
        code = proc.returncode
        if outcome is Outcome.SUCCEEDED and code != 0:
            outcome = Outcome.EXIT_CODE
        return RunResult(
            outcome=outcome,
            exit_code=code,
            started_at=self.started_at,
            finished_at=finished_at,
            stdout=out.output(),
            stderr=err.output(),
            spawn_seconds=self._spawn_seconds,
        )

    async def _supervise(self, child: _Child, pgid: int) -> Outcome:
        """Wait for the exit, the timeout or a stop request (each wakes `_stopped`: one
        future, one timer); end the group if not exited."""
        wake = self._stopped
        assert wake is not None
        timer = None
        if self.spec.timeout is not None:
            timer = asyncio.get_running_loop().call_later(self.spec.timeout, _wake, wake)
        try:
            await wake
        finally:
            if timer is not None:
                timer.cancel()
        if child.exited.done():
            return Outcome.SUCCEEDED  # refined to EXIT_CODE by the caller
        reason = self._stop_reason or Outcome.TIMEOUT
        await _terminate_group(pgid, self.spec.kill_grace, child.exited)
        return reason

    def _result(
        self,
        outcome: Outcome,
        code: int | None,
        started: datetime | None,
        out: TailBuffer,
        err: TailBuffer,
    ) -> RunResult:
        return RunResult(outcome, code, started, datetime.now(UTC), out.output(), err.output())


async def _terminate_group(
    pgid: int, grace: float, exited: asyncio.Future[None] | None = None
) -> None:
    """SIGTERM the group, wait up to `grace` for it to be gone, then SIGKILL it."""
    _signal_group(pgid, signal.SIGTERM)
    # A stopped process cannot act on SIGTERM: wake it so it can.
    _signal_group(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if exited is not None and not exited.done():
            await asyncio.wait({exited}, timeout=0.05)
            continue
        if not _group_alive(pgid):
            break
        await asyncio.sleep(0.05)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    if exited is not None and not exited.done():
        await asyncio.wait({exited}, timeout=5.0)
