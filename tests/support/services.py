"""PostgreSQL and Redis for tests: from the environment, from testcontainers, or private
servers started from local binaries in a temp dir. Fault tests always use private servers,
because they stop, restart and flush them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.ports import free_port

REQUIRE_ENV = "MINITEMPORAL_TEST_REQUIRE_SERVICES"


class ServiceUnavailable(RuntimeError):
    """No way to provide the service here; the test skips (or fails in CI)."""


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def docker_available() -> bool:
    try:
        import docker  # testcontainers' dependency

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def _as_postgres_user() -> list[str]:
    """postgres refuses to run as root: drop to the postgres account when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceUnavailable("running as root without runuser: cannot start postgres")
    return [runuser, "-u", "postgres", "--"]


@dataclass
class LocalPostgres:
    """A private PostgreSQL cluster in a temp dir, on its own port.

    Its directory is made with mkdtemp, not under pytest's tmp_path: when we are root the
    server runs as `postgres`, which cannot enter root's 0700 pytest directories.
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="minitemporal-pg-")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def init(self) -> None:
        """Create the cluster (about a second)."""
        initdb = find_binary("initdb")
        if initdb is None or find_binary("postgres") is None:
            raise ServiceUnavailable("no initdb/postgres binaries on this machine")
        self.root.mkdir(parents=True, exist_ok=True)
        prefix = _as_postgres_user()
        if prefix:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            [
                *prefix,
                initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        postgres = find_binary("postgres")
        assert postgres is not None
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                *_as_postgres_user(),
                postgres,
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url, connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ServiceUnavailable(
                        f"postgres exited: {(self.root / 'postgres.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def stop(self, *, fast: bool = True) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, 2 if fast else 15)  # SIGINT = fast shutdown
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class LocalRedis:
    """A private redis-server that keeps nothing (like the CI's), on its own port."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = find_binary("redis-server")
        if server is None:
            raise ServiceUnavailable("no redis-server binary on this machine")
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """An admin URL of a PostgreSQL server (database `postgres`), however we can get one."""
    url = os.environ.get("MINITEMPORAL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    local = LocalPostgres()
    local.init()
    local.start()
    try:
        yield local.url
    finally:
        local.stop()
        shutil.rmtree(local.root, ignore_errors=True)


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    url = os.environ.get("MINITEMPORAL_TEST_REDIS_URL")
    if url:
        yield url
        return
    if docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as r:
            yield f"redis://{r.get_container_host_ip()}:{r.get_exposed_port(6379)}/0"
        return
    local = LocalRedis(tmp / "redis")
    local.start()
    try:
        yield local.url
    finally:
        local.stop()
