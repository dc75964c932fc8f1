"""Run one attempt's command: its own process group, bounded output, a timeout that kills.

The command runs as `/bin/sh -c <command>` in a new session (so its process group id is its
pid), optionally as another user and under resource limits set by `prlimit` before the exec
(no `preexec_fn`: it is unsafe in a process with threads, and grpc has threads). Ending an
attempt ends the whole group: SIGTERM, a grace period, then SIGKILL, which also takes
background children and commands that trap SIGTERM. Output is read as it comes
into two fixed-size tails, so memory stays flat whatever the command prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from minitemporal.domain.model import Outcome, Output
from minitemporal.errors import ConfigurationError

SHELL = "/bin/sh"
PRLIMIT = "prlimit"
READ_CHUNK = 64 * 1024


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


class Execution:
    """One running command. `stop()` may be called at any time from another task."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.started_at: datetime | None = None
        self._stop_reason: Outcome | None = None
        self._stop = anyio.Event()

    def stop(self, reason: Outcome) -> None:
        """End the command early (cancelled, lost lease, shutdown); the first reason wins."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    async def run(self) -> RunResult:
        out, err = TailBuffer(self.spec.tail_bytes), TailBuffer(self.spec.tail_bytes)
        if self._stop_reason is not None:  # stopped before it started
            return self._result(self._stop_reason, None, None, out, err)
        t0 = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command_argv(self.spec.command, self.spec.limits),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(self.spec.env),
                cwd=self.spec.cwd,
                start_new_session=True,
                user=self.spec.user,
                group=self.spec.group,
                extra_groups=[] if self.spec.user is not None else None,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            err.feed(f"minitemporal: could not start the command: {exc}\n".encode())
            return self._result(Outcome.EXIT_CODE, 127, None, out, err)
        spawn_seconds = time.perf_counter() - t0
        self.started_at = datetime.now(UTC)
        pgid = proc.pid
        stdout, stderr = proc.stdout, proc.stderr
        if stdout is None or stderr is None:  # pragma: no cover - PIPE was asked for
            raise RuntimeError("subprocess pipes missing")

        async with anyio.create_task_group() as pumps:
            pumps.start_soon(_pump, stdout, out)
            pumps.start_soon(_pump, stderr, err)
            outcome = await self._supervise(proc, pgid)
            finished_at = datetime.now(UTC)
            # Nothing of the attempt outlives it: end stragglers left in the group.
            if _group_alive(pgid):
                await _terminate_group(pgid, self.spec.kill_grace)
            # Pipes reach EOF once the group is gone; a child that escaped the group (setsid)
            # may keep them open, so do not wait for it.
            pumps.cancel_scope.deadline = anyio.current_time() + 1.0

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
            spawn_seconds=spawn_seconds,
        )

    async def _supervise(self, proc: asyncio.subprocess.Process, pgid: int) -> Outcome:
        """Wait for the exit, the timeout or a stop request; end the group if not exited."""
        async with anyio.create_task_group() as tg:

            async def exited() -> None:
                await proc.wait()
                tg.cancel_scope.cancel()

            async def stopped() -> None:
                await self._stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(exited)
            tg.start_soon(stopped)
            if self.spec.timeout is not None:
                tg.cancel_scope.deadline = anyio.current_time() + self.spec.timeout

        if proc.returncode is not None:
            return Outcome.SUCCEEDED  # refined to EXIT_CODE by the caller
        reason = self._stop_reason or Outcome.TIMEOUT
        await _terminate_group(pgid, self.spec.kill_grace, proc)
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


async def _pump(stream: asyncio.StreamReader, sink: TailBuffer) -> None:
    while chunk := await stream.read(READ_CHUNK):
        sink.feed(chunk)


async def _terminate_group(
    pgid: int, grace: float, proc: asyncio.subprocess.Process | None = None
) -> None:
    """SIGTERM the group, wait up to `grace` for it to be gone, then SIGKILL it."""
    _signal_group(pgid, signal.SIGTERM)
    # A stopped process cannot act on SIGTERM: wake it so it can.
    _signal_group(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None and proc.returncode is None:
            with anyio.move_on_after(0.05):
                await proc.wait()
            if proc.returncode is None:
                continue
        if not _group_alive(pgid):
            break
        await anyio.sleep(0.05)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    if proc is not None and proc.returncode is None:
        with anyio.move_on_after(5.0):
            await proc.wait()
