"""Real `minitemporal` processes for end-to-end and fault tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[2]


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `predicate` on the event loop until it holds; fail after `timeout` seconds."""
    deadline = anyio.current_time() + timeout
    while not predicate():
        assert anyio.current_time() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.01)


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, still answering kill(0), counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone between the two calls (ENOENT, or ESRCH while reading)
        return False


def minitemporal_command() -> list[str]:
    """`python -m minitemporal` of the checkout under test (not some other installed copy)."""
    return [sys.executable, "-m", "minitemporal"]


@dataclass
class Proc:
    """One minitemporal process, its settings and its log."""

    name: str
    roles: str
    env: dict[str, str]
    log_path: Path
    http_port: int
    popen: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Proc:
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.popen = subprocess.Popen(
            [*minitemporal_command(), "--roles", self.roles],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.log_path.parent,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                r = httpx.get(self.http_url + "/healthz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s: {last}\n{self.log()}")

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        code = self.popen.returncode
        self.exit_codes.append(code)
        self._reap_group()
        return code

    def kill(self) -> None:
        """kill -9 the process (its commands are its own process groups: they live on)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
            self.exit_codes.append(self.popen.returncode)

    def _reap_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


@dataclass
class Cluster:
    """A set of processes sharing one database and one Redis."""

    tmp: Path
    database_url: str | None
    redis_url: str | None
    redis_prefix: str = "minitemporal"
    grpc_secret: str = "test-secret"
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        env = {
            "MINITEMPORAL_REDIS_PREFIX": self.redis_prefix,
            "MINITEMPORAL_GRPC_SECRET": self.grpc_secret,
            "MINITEMPORAL_LOG_FORMAT": "text",
            "MINITEMPORAL_LOG_LEVEL": "info",
            **self.extra_env,
        }
        if self.database_url:
            env["MINITEMPORAL_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["MINITEMPORAL_REDIS_URL"] = self.redis_url
        return env

    def add(
        self,
        name: str,
        roles: str,
        *,
        grpc_port: int | None = None,
        scheduler_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        http_port = free_port()
        e = self.base_env()
        if "api" in roles or roles == "all":
            e["MINITEMPORAL_API_PORT"] = str(http_port)
        else:
            e["MINITEMPORAL_METRICS_PORT"] = str(http_port)
        if grpc_port is not None:
            e["MINITEMPORAL_GRPC_PORT"] = str(grpc_port)
        if scheduler_port is not None:
            e["MINITEMPORAL_SCHEDULER_ADDRESS"] = f"127.0.0.1:{scheduler_port}"
        e["MINITEMPORAL_WORKER_ID"] = name
        e.update(env or {})
        proc = Proc(name, roles, e, self.tmp / f"{name}.log", http_port)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop(timeout=20)
            p.kill()
