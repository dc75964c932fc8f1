"""Fixtures for real services. Each test gets its own PostgreSQL database (cloned from a
template that already has the schema) and its own Redis key prefix.

Where the services come from: MINITEMPORAL_TEST_DATABASE_URL / MINITEMPORAL_TEST_REDIS_URL,
else testcontainers when a Docker daemon answers, else private servers started from local
binaries, else the tests skip, unless MINITEMPORAL_TEST_REQUIRE_SERVICES=1 (CI), where
they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.procs import Cluster
from tests.support.services import (
    REQUIRE_ENV,
    LocalPostgres,
    LocalRedis,
    ServiceUnavailable,
    postgres_server,
    redis_server,
)
from tests.support.topology import FAST, Ledger

SCHEMA = Path(__file__).resolve().parents[1] / "schema.sql"


def _unavailable(what: str, why: object) -> None:
    message = f"{what} unavailable: {why}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message + f" ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """grpc.aio needs asyncio, so every async test runs on it."""
    return "asyncio"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with postgres_server(tmp_path_factory.mktemp("pg")) as url:
            yield url
    except ServiceUnavailable as exc:
        _unavailable("PostgreSQL", exc)


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except ServiceUnavailable as exc:
        _unavailable("Redis", exc)


def with_database(url: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A database holding the schema; each test's database is a copy of it."""
    name = f"mt_template_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(with_database(pg_admin_url, name), autocommit=True) as conn:
        conn.execute(SCHEMA.read_text().encode())
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(admin_url: str, template: str) -> Iterator[str]:
    name = f"mt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"mt-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
        client.close()


@contextlib.contextmanager
def fresh_cluster(
    tmp: Path, admin_url: str, template: str, redis_url: str, extra_env: dict[str, str]
) -> Iterator[Cluster]:
    """A Cluster on its own database and Redis prefix, for a module's shared processes."""
    with fresh_database(admin_url, template) as db, fresh_prefix(redis_url) as prefix:
        cluster = Cluster(tmp, db, redis_url, prefix, extra_env=extra_env)
        try:
            yield cluster
        finally:
            cluster.stop_all()


@pytest.fixture
def database_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    with fresh_database(pg_admin_url, pg_template) as url:
        yield url


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    with fresh_prefix(redis_server_url) as prefix:
        yield prefix


@pytest.fixture
def cluster(
    tmp_path: Path, database_url: str, redis_server_url: str, redis_prefix: str
) -> Iterator[Cluster]:
    """Real processes against this test's database and Redis prefix; stopped afterwards."""
    c = Cluster(tmp_path, database_url, redis_server_url, redis_prefix)
    try:
        yield c
    finally:
        c.stop_all()


# --- for tests that start several processes and break things
@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger")


@pytest.fixture
def fast_cluster(cluster: Cluster) -> Cluster:
    cluster.extra_env.update(FAST)
    return cluster


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    root = Path(tempfile.mkdtemp(prefix="minitemporal-redis-"))
    server = LocalRedis(root)
    try:
        server.start()
    except ServiceUnavailable as exc:
        _unavailable("a private redis-server", exc)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[LocalPostgres]:
    server = LocalPostgres()
    try:
        server.init()
        server.start()
    except ServiceUnavailable as exc:
        _unavailable("a private PostgreSQL", exc)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
