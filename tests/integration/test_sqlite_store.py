"""What only the SQLite backend has: URLs, pragmas, its storage of time, memory mode, crash
durability, and reads that do not queue behind the writer. Its semantics are the conformance
suite's (test_store_conformance.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from minitemporal.domain.model import JobSpec, NodeSpec, RetryPolicy
from minitemporal.errors import ConfigurationError, NotFound, Unavailable
from minitemporal.store.common import Tx
from minitemporal.store.sqlite import SqliteStore, sqlite_path
from minitemporal.store.sqlite import store as sqlite_module
from tests.support.procs import ROOT

POLICY = RetryPolicy()
JOB = JobSpec("j", (NodeSpec("a", "true"), NodeSpec("b", "true", depends_on=("a",))))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "t.db"), retry_policy=POLICY)
    await s.open()
    yield s
    await s.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        (None, "minitemporal.db"),
        ("", "minitemporal.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///here.db", "here.db"),
        ("sqlite:///./sub/../here.db", "./sub/../here.db"),
    ],
)
def test_urls(url: str | None, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert sqlite_path(url) == path
    absolute = tmp_path / "abs.db"
    assert sqlite_path(f"sqlite:///{absolute}") == str(absolute), "four slashes: absolute"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:x.db", "not an SQLite URL"),
        ("postgresql://h/db", "not an SQLite URL"),
        ("sqlite://host/x.db", "names a file and nothing else"),
        ("sqlite:///x.db?mode=ro", "names a file and nothing else"),
        ("sqlite:///missing/x.db", "directory missing does not exist"),
        ("sqlite:///adir", "is a directory"),
    ],
)
def test_bad_urls(url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigurationError, match=message):
        sqlite_path(url)


def test_an_old_sqlite_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module.sqlite3, "sqlite_version_info", (3, 31, 1))
    with pytest.raises(ConfigurationError, match=r"needs SQLite 3\.35\.0 or newer"):
        SqliteStore(":memory:", retry_policy=POLICY)


@pytest.mark.anyio
async def test_pragmas(store: SqliteStore) -> None:
    async def pragmas(tx: Tx) -> dict[str, object]:
        conn: sqlite3.Connection = tx._conn  # type: ignore[attr-defined]
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        return {n: next(iter(conn.execute(f"PRAGMA {n}").fetchone().values())) for n in names}

    expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 5000}
    assert await store._write(pragmas) == expected, "2 = FULL"
    reads = await store._read(pragmas)
    assert reads == expected


@pytest.mark.anyio
async def test_open_waits_for_another_writer_on_a_new_file(tmp_path: Path) -> None:
    """Another process holds the write lock of a file not yet in WAL mode (two processes
    opening a new file together): SQLite refuses the switch to WAL at once, without its busy
    timeout; the store tries again and opens once the lock is gone."""
    path = tmp_path / "t.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other (i integer)")
    other.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release() -> None:
        time.sleep(0.3)
        other.execute("COMMIT")
        released.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    store = SqliteStore(str(path), retry_policy=POLICY)
    try:
        await store.open()
        assert released.is_set(), "the store waited for the lock"
        res = await store.submit_job(JOB)
        assert (await store.get_job(res.job_id)).node_counts == {"pending": 1, "queued": 1}
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()
        releaser.join()
        other.close()


@pytest.mark.anyio
async def test_time_is_stored_as_utc_microseconds(store: SqliteStore) -> None:
    before = time.time_ns() // 1000
    res = await store.submit_job(JOB)
    after = time.time_ns() // 1000
    with sqlite3.connect(store.path) as raw:
        [(created,)] = raw.execute("SELECT created_at FROM jobs").fetchall()
    assert isinstance(created, int) and before <= created <= after
    view = await store.get_job(res.job_id)
    assert view.created_at.timestamp() * 1_000_000 == pytest.approx(created, abs=1)


@pytest.mark.anyio
async def test_memory_store_works_and_forgets() -> None:
    store = SqliteStore(":memory:", retry_policy=POLICY)
    await store.open()
    res = await store.submit_job(JOB)
    assert (await store.get_job(res.job_id)).node_counts == {"pending": 1, "queued": 1}
    await store.ping()
    await store.close()
    await store.open()
    with pytest.raises(NotFound):
        await store.get_job(res.job_id)
    await store.close()


@pytest.mark.anyio
async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "t.db"), retry_policy=POLICY)
    with pytest.raises(Unavailable):
        await store.submit_job(JOB)
    await store.open()
    await store.close()
    with pytest.raises(Unavailable):
        await store.ping()


CRASH = """
import asyncio, os, sys
from minitemporal.domain.model import JobSpec, NodeSpec, RetryPolicy
from minitemporal.store.sqlite import SqliteStore

async def main() -> None:
    store = SqliteStore(sys.argv[1], retry_policy=RetryPolicy())
    await store.open()
    res = await store.submit_job(JobSpec("j", (NodeSpec("a", "true"),)))
    print(res.job_id, flush=True)
    os._exit(0)  # no close, no checkpoint: what kill -9 leaves behind

asyncio.run(main())
"""


@pytest.fixture
def crashed(tmp_path: Path) -> tuple[Path, str]:
    """A database whose process acknowledged a job, then died without closing it."""
    path = tmp_path / "crash.db"
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert Path(f"{path}-wal").exists(), "the commit is in the WAL, not yet in the file"
    return path, done.stdout.strip()


@pytest.mark.anyio
async def test_an_acknowledged_commit_survives_a_crash(crashed: tuple[Path, str]) -> None:
    path, job_id = crashed
    store = SqliteStore(str(path), retry_policy=POLICY)
    await store.open()
    try:
        assert (await store.get_job(job_id)).node_counts == {"queued": 1}
    finally:
        await store.close()


@pytest.mark.anyio
async def test_reads_do_not_wait_for_the_writer(store: SqliteStore) -> None:
    res = await store.submit_job(JOB)
    gate = threading.Event()

    async def hold(tx: Tx) -> None:
        gate.wait(10)

    held = asyncio.ensure_future(store._write(hold))
    try:
        queued = asyncio.ensure_future(store.submit_job(JOB))  # waits behind `hold`
        job = await asyncio.wait_for(store.get_job(res.job_id), 5)
        assert job.id == res.job_id and not queued.done()
    finally:
        gate.set()
    await held
    assert (await queued).created
