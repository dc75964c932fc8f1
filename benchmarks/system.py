"""Start and stop what the suite measures: a private PostgreSQL database, a Redis key prefix,
and minitemporal processes in the chosen topology, all on loopback.

Nothing here touches data it did not create: the database is `mt_bench_<random>` (dropped at
the end), every Redis key we clean up starts with our own random prefix.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from benchmarks.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


class StartFailed(RuntimeError):
    """A process of the system under test did not become healthy."""


def run_id() -> str:
    return secrets.token_hex(5)


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@contextlib.contextmanager
def private_database(admin_url: str, name: str):
    """CREATE DATABASE `name` for the run; DROP it (WITH FORCE) afterwards."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_prefixed_keys(redis_url: str, prefix: str) -> int:
    """Delete every key starting with `prefix` (SCAN, never FLUSH*). Returns how many."""
    import redis

    if not prefix or "*" in prefix:
        raise ValueError(f"refusing to delete keys for prefix {prefix!r}")
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


@dataclass
class Proc:
    """One child process of the suite, in its own session (so its whole group can be ended)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    health_url: str | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, deadline: float) -> None:
        if self.health_url is None:
            return
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                assert self.popen is not None
                raise StartFailed(
                    f"{self.name} exited with code {self.popen.returncode} before it was healthy: "
                    f"{self.last_line()}\n{self.log()}"
                )
            try:
                r = httpx.get(self.health_url, timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise StartFailed(f"{self.name} not healthy in time ({last})\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group that we started."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers of our own session only
        return self.popen.returncode

    def last_line(self) -> str:
        lines = [line for line in self.log().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


def base_env() -> dict[str, str]:
    """A clean environment for children: no MINITEMPORAL_* leaking in from the caller."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONPATH"] = str(ROOT)  # the checkout under test, not another installed copy
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_slots(slots: int, workers: int) -> list[int]:
    """`slots` shared out among `workers` processes as evenly as they go (17 over 2: 9, 8)."""
    if workers < 1 or slots < workers:
        raise ValueError(f"cannot share {slots} slot(s) among {workers} worker process(es)")
    return [slots // workers + (i < slots % workers) for i in range(workers)]


@dataclass
class Minitemporal:
    """minitemporal processes of one run: `all` (one process) or `split` (one per role)."""

    topology: str
    workdir: Path
    slots: int
    database_url: str | None
    redis_url: str | None
    redis_prefix: str | None
    log_level: str = "info"
    workers: int = 1  # worker processes (split only); `slots` are shared out among them
    procs: list[Proc] = field(default_factory=list)
    api_url: str = ""

    def _env(self, name: str, secret: str, slots: int | None = None) -> dict[str, str]:
        env = base_env()
        env.update(
            {
                "MINITEMPORAL_GRPC_SECRET": secret,
                "MINITEMPORAL_LOG_LEVEL": self.log_level,
                "MINITEMPORAL_LOG_FORMAT": "json",
                "MINITEMPORAL_WORKER_SLOTS": str(self.slots if slots is None else slots),
                "MINITEMPORAL_WORKER_ID": f"bench-{name}",
            }
        )
        if self.database_url:
            env["MINITEMPORAL_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["MINITEMPORAL_REDIS_URL"] = self.redis_url
        if self.redis_prefix:
            env["MINITEMPORAL_REDIS_PREFIX"] = self.redis_prefix
        return env

    def _proc(self, name: str, roles: str, env: dict[str, str]) -> Proc:
        http_port = free_port()
        key = "MINITEMPORAL_API_PORT" if roles in ("all", "api") else "MINITEMPORAL_METRICS_PORT"
        env[key] = str(http_port)
        argv = [sys.executable, "-m", "minitemporal", "--roles", roles]
        proc = Proc(
            name,
            argv,
            env,
            self.workdir / f"minitemporal-{name}.log",
            self.workdir,
            health_url=f"http://127.0.0.1:{http_port}/healthz",
        )
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 60.0) -> str:
        """Start the processes, wait until each is healthy; return the api's base URL."""
        secret = secrets.token_hex(16)
        grpc_port = free_port()
        deadline = time.monotonic() + timeout
        if self.topology == "all":
            env = self._env("all", secret)
            env["MINITEMPORAL_GRPC_PORT"] = str(grpc_port)
            api = self._proc("all", "all", env)
            api.start().wait_healthy(deadline)
        else:
            workers = worker_slots(self.slots, self.workers)
            names = ["scheduler", "api"]
            names += (
                ["worker"] if len(workers) == 1 else [f"worker{i}" for i in range(len(workers))]
            )
            for i, name in enumerate(names):
                role = name.rstrip("0123456789")
                env = self._env(name, secret, workers[i - 2] if role == "worker" else None)
                if role == "scheduler":
                    env["MINITEMPORAL_GRPC_PORT"] = str(grpc_port)
                else:
                    env["MINITEMPORAL_SCHEDULER_ADDRESS"] = f"127.0.0.1:{grpc_port}"
                self._proc(name, role, env).start()
            for proc in self.procs:
                proc.wait_healthy(deadline)
            api = self.procs[1]
        assert api.health_url is not None
        self.api_url = api.health_url.removesuffix("/healthz")
        return self.api_url

    def pids(self) -> dict[str, int]:
        """Each process's pid by its name (`api`, `scheduler`, `worker`...)."""
        return {p.name: p.popen.pid for p in self.procs if p.popen is not None}

    def stop(self) -> list[tuple[str, int | None]]:
        """Stop in reverse order of start; return (name, exit code) of each."""
        return [(p.name, p.stop()) for p in reversed(self.procs)]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()}" for p in self.procs)
