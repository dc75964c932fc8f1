"""The embedded store: one SQLite file (or memory), for `minitemporal --roles all` with nothing
installed. Same operations as PostgreSQL (`store.common`); the steps are queries.sql here.

How it uses SQLite, and why:

- Writes are serialised in one place: one writer thread owns the one connection that writes.
  Every write transaction goes through it and starts with `BEGIN IMMEDIATE`, so it holds the
  write lock from its first statement (no upgrade deadlocks, and a second process on the same
  file waits through the busy timeout instead of failing). Reads run on a small pool of
  read-only connections in worker threads: in WAL mode they see every commit that preceded
  them and never wait for the writer. Nothing runs sqlite3 on the event loop.
- Group commit: the writer takes every operation waiting when it is free and runs them in one
  transaction, each in its own savepoint (an operation that fails, say with `Conflict`, rolls
  back alone). One commit, one fsync, acknowledges them all; no caller hears of its operation
  before that commit returned.
- Durability: `journal_mode=WAL` with `synchronous=FULL`, so every commit fsyncs the WAL
  before it returns. NORMAL would survive a crash of the process (kill -9: the WAL is in the
  OS's page cache) but could lose the last commits on power loss or a kernel crash, and a job
  acknowledged with 201 must survive anything short of losing the disk. FULL costs about
  0.2 ms per commit here, paid once per batch thanks to group commit.
- `foreign_keys=ON` and a busy timeout (5 s) on every connection; the tables keep the CHECK
  constraints of the PostgreSQL schema.
- Time is the store's clock (this process), UTC, stored as integer microseconds since the Unix
  epoch and returned as timezone-aware datetimes, like PostgreSQL's timestamptz.
- The shared flows are coroutines (PostgreSQL awaits its driver). Here they run on the writer
  thread, driven to their end by `run_to_end`: every step they await is a plain sqlite3 call
  on that thread, so none ever suspends.
- `sqlite://` or `sqlite:///:memory:` keep everything in memory: one connection (the writer's)
  serves reads as well, and everything is gone when the process stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import json
import logging
import os
import queue
import random
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import anyio.to_thread

from minitemporal.domain.model import (
    Beat,
    JobStatus,
    NodeState,
    RetryPolicy,
    TaskRef,
)
from minitemporal.errors import ConfigurationError, Unavailable
from minitemporal.store.common import (
    ExpiredNode,
    HeldNode,
    JobCount,
    JobKey,
    LockedNode,
    Row,
    SqlStore,
    Succeeded,
    Tx,
)
from minitemporal.store.sqlfile import load_queries, load_text

T = TypeVar("T")
log = logging.getLogger("minitemporal.store.sqlite")

MEMORY = ":memory:"
DEFAULT_FILE = "minitemporal.db"
MIN_VERSION = (3, 35, 0)  # RETURNING (3.35), row values and window functions (older)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_BOOLEANS = frozenset(
    {"cached", "key_wait", "cancel", "cancelled", "in_flight", "overdue", "has_dependents"}
)
_JSON = frozenset({"depends_on", "env"})
_TIMES = ("_at", "_until")
# Errors at open that waiting can cure; any other (not a database, corrupt, read-only) cannot.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PROTOCOL")


# --- configuration
def sqlite_path(url: str | None) -> str:
    """The file a database URL names, or ":memory:"; `ConfigurationError` if it cannot work.

    Unset: ./minitemporal.db. `sqlite://` and `sqlite:///:memory:`: in memory. Otherwise, as
    in SQLAlchemy, `sqlite:///relative/path.db` and `sqlite:////absolute/path.db`.
    """
    if not url:
        path = DEFAULT_FILE
    else:
        parts = urlsplit(url)
        if parts.scheme != "sqlite" or not url.startswith("sqlite://"):
            raise ConfigurationError(
                f"not an SQLite URL: {url!r} (sqlite:///path/to/file.db or sqlite:///:memory:)"
            )
        if parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(
                f"an SQLite URL names a file and nothing else: {url!r} "
                "(sqlite:///relative.db, sqlite:////absolute.db or sqlite:///:memory:)"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if path in ("", MEMORY):
            return MEMORY
    folder = Path(path).parent
    if Path(path).is_dir():
        raise ConfigurationError(f"the SQLite database {path} is a directory, not a file")
    if not folder.is_dir():
        raise ConfigurationError(f"the SQLite database's directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"cannot write in {folder}: the SQLite database and its WAL need to"
        )
    return path


def describe(path: str) -> str:
    """The database as the start-up banner names it."""
    if path == MEMORY:
        return "SQLite in memory, gone at exit"
    shown = path if os.path.isabs(path) or path.startswith(".") else f"./{path}"
    return f"SQLite file {shown}"


def _check_version() -> None:
    if sqlite3.sqlite_version_info < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise ConfigurationError(
            f"the embedded store needs SQLite {need} or newer, this Python has "
            f"{sqlite3.sqlite_version}: use a newer Python build, or set "
            "MINITEMPORAL_DATABASE_URL=postgresql://..."
        )


# --- values
def now_us() -> int:
    """The store's clock: microseconds since the Unix epoch, UTC."""
    return (datetime.now(UTC) - _EPOCH) // _US


def _to_db(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _US
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _seconds(value: float) -> int:
    return round(value * 1_000_000)


def _from_db(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    """Rows as dicts with the Python values the PostgreSQL driver returns (the row factory)."""
    row: Row = {}
    for (name, *_), value in zip(cursor.description, values, strict=True):
        if value is not None:
            if name.endswith(_TIMES):
                value = _EPOCH + timedelta(microseconds=value)
            elif name in _BOOLEANS:
                value = bool(value)
            elif name in _JSON:
                value = json.loads(value)
        row[name] = value
    return row


def _unavailable(exc: sqlite3.Error) -> Unavailable:
    error = Unavailable(f"SQLite: {exc}")
    error.__cause__ = exc
    return error


def run_to_end(step: Awaitable[T]) -> T:
    """Run a coroutine that never suspends (every await in it is an sqlite3 call on this
    thread) to its end, without an event loop."""
    it = step.__await__()
    try:
        next(it)
    except StopIteration as done:
        return cast(T, done.value)
    it.close()  # type: ignore[attr-defined]
    raise RuntimeError("an SQLite transaction awaited something other than its own steps")


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> str | None:
    """Put the database file in WAL mode (once per file); return the mode it is in.

    Switching takes an exclusive lock, and SQLite refuses it at once, without waiting out the
    busy timeout, while another connection holds the write lock: two processes opening a new
    file together. Tried again until the timeout. A file already in WAL mode is left alone
    (setting it again would wait for every reader).
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            row = conn.execute("PRAGMA journal_mode").fetchone()
            if row is not None and row["journal_mode"] == "wal":
                return "wal"
            row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return None if row is None else str(row["journal_mode"])
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _connect(path: str, busy_timeout: float, *, read_only: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = _from_db
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


# --- the writer
class _Op:
    __slots__ = ("body", "future")

    def __init__(self, body: Callable[[sqlite3.Connection], Any]) -> None:
        self.body = body
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _Writer:
    """The one thread, and the one connection, that every write transaction goes through."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], max_batch: int = 256) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._main, name="minitemporal-sqlite-writer", daemon=True
        )

    def start(self) -> concurrent.futures.Future[None]:
        """Connect and prepare the database on the writer thread; done when it is ready."""
        self._thread.start()
        return self._ready

    def submit(self, body: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        op = _Op(body)
        with self._lock:
            if self._closed:
                raise Unavailable("the store is closed")
            self._ops.put(op)
        return op.future

    def stop(self) -> None:
        """Finish what was submitted, then close the connection (blocks: call in a thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ops.put(None)
        self._thread.join()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            stop = False
            while not stop:
                batch: list[_Op] = []
                item = self._ops.get()
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self._max_batch:
                        break
                    try:
                        item = self._ops.get_nowait()
                    except queue.Empty:
                        break
                else:
                    stop = True
                if batch:
                    try:
                        self._commit(conn, batch)
                    except Exception as exc:  # never leave a caller waiting forever
                        log.exception("SQLite writer failed a batch")
                        for op in batch:
                            if not op.future.done():
                                op.future.set_exception(exc)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        """One transaction for the batch, one savepoint per operation; settle after COMMIT."""
        ops = [op for op in batch if op.future.set_running_or_notify_cancel()]
        if not ops:
            return
        settled: list[tuple[_Op, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                settled.append(self._run(conn, op))
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction is lost: so is every operation in it
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("SQLite rollback failed")
            if not isinstance(exc, sqlite3.Error):
                log.exception("SQLite write batch failed")
            for op in ops:
                op.future.set_exception(
                    _unavailable(exc) if isinstance(exc, sqlite3.Error) else exc
                )
            return
        for op, ok, value in settled:
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    @staticmethod
    def _run(conn: sqlite3.Connection, op: _Op) -> tuple[_Op, bool, Any]:
        conn.execute("SAVEPOINT op")
        try:
            value = op.body(conn)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back (I/O error, disk full, ...)
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            if isinstance(exc, sqlite3.OperationalError):
                return op, False, _unavailable(exc)
            return op, False, exc
        conn.execute("RELEASE op")
        return op, True, value


# --- the store
class SqliteStore(SqlStore):
    kind = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        retry_policy: RetryPolicy,
        rng: random.Random | None = None,
        busy_timeout: float = 5.0,
        readers: int = 4,
    ) -> None:
        _check_version()
        super().__init__(retry_policy=retry_policy, rng=rng)
        self.path = path
        self._busy_timeout = busy_timeout
        self._reader_count = 0 if path == MEMORY else readers
        self._q = load_queries("minitemporal.store.sqlite", "queries.sql")
        self._writer: _Writer | None = None
        self._readers: queue.SimpleQueue[sqlite3.Connection | None] | None = None

    @classmethod
    def from_url(cls, url: str | None, *, retry_policy: RetryPolicy) -> SqliteStore:
        return cls(sqlite_path(url), retry_policy=retry_policy)

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY

    # --- lifecycle
    async def open(self) -> None:
        if self._writer is not None:
            return
        writer = _Writer(self._prepare)
        try:
            await asyncio.wrap_future(writer.start())
        except BaseException as exc:
            with anyio.CancelScope(shield=True):  # cancelled mid-open: end the thread too
                await anyio.to_thread.run_sync(writer.stop)
            if not isinstance(exc, sqlite3.Error):
                raise
            message = f"cannot open the SQLite database {self.path}: {exc}"
            if getattr(exc, "sqlite_errorname", "").startswith(_TRANSIENT):
                raise Unavailable(message) from exc
            raise ConfigurationError(message) from exc  # not a database, read-only, ...
        self._writer = writer
        if self._reader_count:
            self._readers = await anyio.to_thread.run_sync(self._open_readers)

    def _prepare(self) -> sqlite3.Connection:
        """The writer's connection, with WAL on and the schema applied (on its thread)."""
        conn = _connect(self.path, self._busy_timeout)
        try:
            if not self.in_memory:
                mode = _use_wal(conn, self._busy_timeout)
                if mode != "wal":
                    log.warning("SQLite refused WAL mode (%s): readers will wait for writes", mode)
            schema = load_text("minitemporal.store.sqlite", "schema.sql")
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_readers(self) -> queue.SimpleQueue[sqlite3.Connection | None]:
        pool: queue.SimpleQueue[sqlite3.Connection | None] = queue.SimpleQueue()
        for _ in range(self._reader_count):
            pool.put(_connect(self.path, self._busy_timeout, read_only=True))
        return pool

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        readers, self._readers = self._readers, None
        if writer is not None:
            await anyio.to_thread.run_sync(writer.stop)
        if readers is not None:

            def close_readers() -> None:
                for _ in range(self._reader_count):
                    conn = readers.get()  # waits for reads in flight
                    if conn is not None:
                        conn.close()
                readers.put(None)  # a read that fetched the pool before close finds this

            await anyio.to_thread.run_sync(close_readers)

    async def ping(self) -> None:
        """The writer answers: it is alive and can take the write lock."""

        async def nothing(tx: Tx) -> None:
            return None

        if self._writer is not None and not self._writer.alive():
            raise Unavailable("the SQLite writer thread is gone")
        await self._write(nothing)

    # --- transactions
    async def _write(self, body: Callable[[Tx], Awaitable[T]], *, single: bool = False) -> T:
        """`single` changes nothing here: every write joins the writer's next batch."""
        writer = self._writer
        if writer is None:
            raise Unavailable("the store is not open")
        queries = self._q
        future = writer.submit(lambda conn: run_to_end(body(_SqliteTx(queries, conn))))
        return await asyncio.wrap_future(future)

    async def _read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        if self._readers is None:
            return await self._write(body)  # in memory: the writer's connection is the only one
        readers = self._readers

        def read() -> T:
            conn = readers.get()
            if conn is None:
                readers.put(None)  # for the next one
                raise Unavailable("the store is closed")
            try:
                conn.execute("BEGIN")  # deferred: one snapshot from the first read on
                try:
                    return run_to_end(body(_SqliteTx(self._q, conn)))
                finally:
                    conn.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:
                raise _unavailable(exc) from exc
            finally:
                readers.put(conn)

        return await anyio.to_thread.run_sync(read)


class _SqliteTx(Tx):
    """The steps of one SQLite transaction. Every statement gets the clock as `:now`."""

    def __init__(self, queries: dict[str, str], conn: sqlite3.Connection) -> None:
        self._q = queries
        self._conn = conn

    def _run(self, name: str, params: dict[str, Any]) -> sqlite3.Cursor:
        bound = {"now": now_us()} | {k: _to_db(v) for k, v in params.items()}
        return self._conn.execute(self._q[name], bound)

    def _one(self, name: str, params: dict[str, Any]) -> Row | None:
        return cast(Row | None, self._run(name, params).fetchone())

    def _one_row(self, name: str, params: dict[str, Any]) -> Row:
        """A statement that always returns one row (a SELECT of scalars)."""
        row = self._one(name, params)
        if row is None:  # pragma: no cover
            raise RuntimeError(f"{name} returned no row")
        return row

    def _all(self, name: str, params: dict[str, Any]) -> list[Row]:
        return self._run(name, params).fetchall()

    # --- jobs
    async def insert_job(
        self,
        job: uuid.UUID,
        name: str,
        key: str | None,
        digest: str | None,
        nodes: list[Row],
        lease: float = 0.0,
    ) -> tuple[datetime, list[Row]] | None:
        row = self._one(
            "insert_job",
            {"id": job, "name": name, "n": len(nodes), "idempotency_key": key, "digest": digest},
        )
        if row is None:
            return None
        inserted = self._insert_nodes(job, nodes)
        for n, r in zip(nodes, inserted, strict=True):
            # An idle worker's offer: claimed for it in this transaction.
            ref = TaskRef(r["id"], r["attempt"])
            if n.get("worker") and await self.claim(n["worker"], [ref], lease):
                r["state"] = "running"
        return row["created_at"], inserted

    async def job_by_idempotency_key(self, key: str) -> Row | None:
        return self._one("job_by_idempotency_key", {"key": key})

    def _insert_nodes(self, job: uuid.UUID, nodes: list[Row]) -> list[Row]:
        now = now_us()
        inserted: list[Row] = []
        ids: dict[str, int] = {}
        for n in nodes:
            queue_it = n["queue"]
            row = self._one(
                "insert_node",
                {
                    **n,
                    "job": job,
                    "depends_on": json.dumps(n["depends_on"]),
                    "env": json.dumps(n["env"]),
                    "deps_pending": len(n["depends_on"]),
                    "state": "queued" if queue_it else "pending",
                    "attempt": 1 if queue_it else 0,
                    "enqueued_at": now if queue_it else None,
                },
            )
            if row is None:  # pragma: no cover - an INSERT without ON CONFLICT returns its row
                raise RuntimeError("node insert returned nothing")
            inserted.append(row)
            ids[n["id"]] = row["id"]
        edges = [
            {"parent": ids[dep], "child": ids[n["id"]]} for n in nodes for dep in n["depends_on"]
        ]
        self._conn.executemany(self._q["insert_edge"], edges)
        return inserted

    async def get_job(self, job: JobKey) -> Row | None:
        return self._one("get_job", {"job": job})

    async def job_status(self, job: JobKey) -> Row | None:
        return self._one("job_status", {"job": job})

    async def node_counts(self, jobs: list[JobKey]) -> list[Row]:
        return [r for job in jobs for r in self._all("job_node_counts", {"job": job})]

    async def job_nodes(self, job: JobKey) -> list[Row]:
        return self._all("job_nodes", {"job": job})

    async def job_attempts(self, job: JobKey) -> list[Row]:
        return self._all("job_attempts", {"job": job})

    async def source_attempts(self, nodes: list[int]) -> list[Row]:
        return [r for node in set(nodes) for r in self._all("source_attempt", {"id": node})]

    async def queue_positions(self, job: JobKey) -> list[Row]:
        return self._all("queue_positions", {"job": job})

    async def list_jobs(
        self,
        status: str | None,
        before_created: datetime | None,
        before_id: uuid.UUID | None,
        limit: int,
    ) -> list[Row]:
        params = {
            "status": status,
            "before_created": before_created,
            "before_id": before_id,
            "limit": limit,
        }
        return self._all("list_jobs", params)

    async def request_cancel(self, job: JobKey) -> bool:
        return self._one("request_cancel", {"job": job}) is not None

    async def cancel_waiting_nodes(self, job: JobKey) -> list[Row]:
        waiting = self._all("waiting_nodes", {"job": job})
        if waiting:
            self._run("cancel_waiting_nodes", {"job": job})
        return waiting

    # --- attempts
    async def claim(self, worker: str, refs: Sequence[TaskRef], lease: float) -> list[Row]:
        claimed = []
        for ref in refs:
            params = {"worker": worker, "lease": _seconds(lease), "id": ref.node}
            row = self._one("claim", {**params, "attempt": ref.attempt})
            if row is not None:
                self._run("record_claim", {**params, **row})
                claimed.append(row)
        return claimed

    async def release(self, worker: str, refs: Sequence[TaskRef]) -> list[Row]:
        released = []
        for ref in refs:
            params = {"worker": worker, "id": ref.node, "attempt": ref.attempt}
            row = self._one("release", params)
            if row is not None:
                self._run("forget_attempt", params)
                released.append(row)
        return released

    async def heartbeat(self, worker: str, beats: Sequence[Beat], lease: float) -> list[Row]:
        held = []
        for b in beats:
            params = {"worker": worker, "id": b.ref.node, "attempt": b.ref.attempt}
            row = self._one("heartbeat", {**params, "lease": _seconds(lease)})
            if row is not None:
                held.append(row)
            self._run("record_start", {**params, "started_at": b.started_at})
        self._run("worker_seen", {"worker": worker, "running": len(beats)})
        return held

    async def lock_unlisted(
        self, worker: str, beats: Sequence[Beat], lease: float, grace: float
    ) -> list[HeldNode]:
        listed = {b.ref.node for b in beats}
        params = {"worker": worker, "lease": _seconds(lease), "grace": _seconds(grace)}
        rows = self._all("lock_unlisted", params)
        return cast(list[HeldNode], [r for r in rows if r["id"] not in listed])

    async def succeed_running(self, worker: str, params: list[Row]) -> Succeeded | None:
        done: list[Row] = []
        recorded: dict[int, datetime] = {}
        for p in params:
            row = self._one("succeed_running", {**p, "worker": worker})
            if row is None:
                continue  # stale, or recorded already
            done.append(row)
            enqueued_at = await self.record_attempt({**p, "reason": "succeeded"})
            if enqueued_at is not None:
                recorded[row["id"]] = enqueued_at
        return self._follow_successes(done, recorded)

    async def succeed_cached(self, node: int, source: int) -> Succeeded | None:
        done = self._one("succeed_cached", {"id": node, "source": source})
        return self._follow_successes([done], {}) if done is not None else None

    def _follow_successes(self, done: list[Row], recorded: dict[int, datetime]) -> Succeeded | None:
        """Unblock the children of nodes that just succeeded and count them on their jobs."""
        if not done:
            return None
        ready: list[tuple[int, int]] = []
        keyed: list[int] = []
        for node in done:
            for child in self._all("unblock_children", {"id": node["id"]}):
                if child["state"] == "queued":
                    ready.append((child["id"], child["attempt"]))
                elif child["deps_pending"] == 0 and child["idempotency_key"] is not None:
                    keyed.append(child["id"])
        counted = [
            self._one("count_finished", {"job": job, "finished": n, "failed": 0})
            for job, n in Counter(node["job_id"] for node in done).items()
        ]
        finished = sorted(
            (c for c in counted if c is not None and c["nodes_unfinished"] == 0),
            key=lambda c: c["id"],
        )
        ready.sort()
        return Succeeded(
            recorded_ids=sorted(recorded),
            recorded_at=[recorded[i] for i in sorted(recorded)],
            keys=sorted({n["idempotency_key"] for n in done if n["idempotency_key"] is not None}),
            ready_ids=[i for i, _ in ready],
            ready_attempts=[a for _, a in ready],
            keyed_ids=sorted(keyed),
            done_jobs=[c["id"] for c in finished],
            done_failed=[c["nodes_failed"] for c in finished],
            done_cancelled=[c["cancelled"] for c in finished],
            succeeded=len(done),
        )

    async def already_recorded(self, params: Row) -> str | None:
        row = self._one("already_recorded", params)
        return row["reason"] if row is not None else None

    async def lock_running(self, params: Row) -> LockedNode | None:
        return cast(LockedNode | None, self._one("lock_running", params))

    async def record_attempt(self, params: Row) -> datetime | None:
        row = self._one("record_attempt", params)
        return row["enqueued_at"] if row is not None else None

    async def node_to_retry_wait(self, node: int, delay: float, given_back: bool) -> None:
        params = {"id": node, "delay": _seconds(delay), "given_back": int(given_back)}
        self._run("node_to_retry_wait", params)

    async def node_to_final(self, node: int, state: NodeState) -> None:
        self._run("node_to_final", {"id": node, "state": state})

    async def cascade_upstream_failed(self, node: int) -> int:
        return len(self._all("cascade_upstream_failed", {"id": node}))

    async def count_finished(self, job: JobKey, finished: int, failed: int) -> JobCount | None:
        params = {"job": job, "finished": finished, "failed": failed}
        return cast(JobCount | None, self._one("count_finished", params))

    async def finish_job(self, job: JobKey, status: JobStatus) -> float | None:
        row = self._one("finish_job", {"job": job, "status": status})
        return row["duration"] if row is not None else None

    # --- idempotency keys
    async def keyed_node(self, node: int) -> str | None:
        row = self._one("keyed_node", {"id": node})
        return row["idempotency_key"] if row is not None else None

    async def lock_key(self, key: str) -> None:
        """Nothing to do: the write transaction already excludes every other writer."""

    async def key_holders(self, key: str, node: int) -> Row:
        return self._one_row("key_holders", {"key": key, "id": node})

    async def queue_keyed(self, node: int) -> Row | None:
        return self._one("queue_keyed", {"id": node})

    async def wait_keyed(self, node: int) -> None:
        self._run("wait_keyed", {"id": node})

    async def key_waiters(self, key: str) -> list[int]:
        return [r["id"] for r in self._all("key_waiters", {"key": key})]

    # --- sweeps
    async def requeue_due_retries(self, limit: int) -> list[Row]:
        return self._all("requeue_due_retries", {"limit": limit})

    async def lock_expired(self, limit: int) -> list[ExpiredNode]:
        return cast(list[ExpiredNode], self._all("lock_expired", {"limit": limit}))

    async def stats(self, window: float) -> Row:
        return self._one_row("stats", {"window": _seconds(window)})

    async def queued_tasks(
        self, age: float, limit: int, after_at: datetime, after_id: int
    ) -> list[Row]:
        params = {"age": _seconds(age), "limit": limit, "after_at": after_at, "after_id": after_id}
        return self._all("queued_tasks", params)
