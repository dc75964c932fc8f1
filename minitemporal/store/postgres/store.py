"""The PostgreSQL store: every operation one transaction, every state change compare-and-set.

SQL lives in queries.sql; the operations' flow is shared with the embedded backend
(`store.common`), and this module runs its steps as those statements. A report of successes
alone is one autocommitted statement (`succeed_and_hand`: record, unblock, claim the freed
children for the reporter, finish jobs); other reports record their successes in one
statement (`succeed_running` + `unblock_children`) inside the transaction. Driver errors
become `Unavailable` here, at the boundary.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from minitemporal.domain.model import (
    Beat,
    CompleteResult,
    FinishedJob,
    JobStatus,
    NodeState,
    RetryPolicy,
    TaskRef,
)
from minitemporal.errors import Unavailable
from minitemporal.store.common import (
    ExpiredNode,
    HeldNode,
    JobCount,
    JobKey,
    LockedNode,
    NewJob,
    Row,
    SqlStore,
    Succeeded,
    Tx,
    claimed_task,
)
from minitemporal.store.postgres.pool import StackPool
from minitemporal.store.sqlfile import load_queries, load_text, positional

T = TypeVar("T")
Conn = psycopg.AsyncConnection[dict[str, Any]]
SCHEMA_LOCK = 0x6D696E6974  # pg_advisory_xact_lock key: "minit"
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# A table is analyzed once it changed by this many rows plus this fraction of its size since
# it last was (autovacuum's defaults are 50 + 10%, looked at once a minute at best).
STALE_ROWS = 1000
STALE_FRACTION = 0.5


class PostgresStore(SqlStore):
    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        retry_policy: RetryPolicy,
        pool_size: int = 8,
        connect_timeout: float = 3.0,
        acquire_timeout: float = 3.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(retry_policy=retry_policy, rng=rng)
        self._url = url
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._q = load_queries("minitemporal.store.postgres", "queries.sql")
        self._q["succeed_running"] += "\n" + self._q["unblock_children"]
        self._q["succeed_cached"] += "\n" + self._q["unblock_children"]
        self._hand = positional(self._q["succeed_and_hand"])  # 8.6 KB: see `positional`
        self._pool: AsyncConnectionPool[Conn] | None = None

    # --- lifecycle
    async def open(self) -> None:
        self._pool = StackPool(
            self._url,
            min_size=min(2, self._pool_size),
            max_size=self._pool_size,
            open=False,
            timeout=self._acquire_timeout,
            kwargs={
                # Autocommit: a single-statement operation (a claim) is its own transaction,
                # one round trip instead of BEGIN, statement, COMMIT. Operations of several
                # statements open an explicit transaction (`_tx`).
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": max(1, round(self._connect_timeout)),
                "application_name": "minitemporal",
            },
            reconnect_timeout=float("inf"),  # never give up: the scheduler outlives outages
            check=_check_if_idle,
            name="minitemporal",
        )
        await self._pool.open(wait=False)
        await self.migrate()

    async def migrate(self) -> None:
        schema = load_text("minitemporal.store.postgres", "schema.sql")

        async def apply(conn: Conn) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(schema.encode())  # type: ignore[arg-type] (bytes: no params)

        await self._tx(apply)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        async def one(conn: Conn) -> None:
            await conn.execute("SELECT 1")

        await self._tx(one, single=True)

    async def refresh_statistics(self) -> list[str]:
        args = {"rows": STALE_ROWS, "fraction": STALE_FRACTION}

        async def run(conn: Conn) -> list[str]:
            cur = await conn.execute(self._q["stale_statistics"], args)
            tables = [str(r["relname"]) for r in await cur.fetchall()]
            for table in tables:  # a WARNING, not an error, if we do not own it
                await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
            return tables

        return await self._tx(run, single=True)

    # --- plumbing
    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise Unavailable("the store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable("PostgreSQL is unavailable (no connection)") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if isinstance(exc, _RETRYABLE):
                raise
            raise Unavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc

    async def _tx(
        self, body: Callable[[Conn], Awaitable[T]], attempts: int = 3, *, single: bool = False
    ) -> T:
        """Run `body` in one transaction; retry it on deadlock or serialization failure.

        `single`: `body` runs exactly one statement, which autocommit makes a transaction.
        """
        for attempt in range(1, attempts + 1):
            try:
                async with self._connection() as conn:
                    if single:
                        return await body(conn)
                    async with conn.transaction():
                        return await body(conn)
            except _RETRYABLE:
                if attempt == attempts:
                    raise Unavailable("PostgreSQL transaction kept conflicting") from None
        raise AssertionError("unreachable")

    async def _write(self, body: Callable[[Tx], Awaitable[T]], *, single: bool = False) -> T:
        return await self._tx(lambda conn: body(_PgTx(self._q, conn)), single=single)

    async def _succeed_and_hand(
        self, worker_id: str, params: list[Row], room: int, lease_seconds: float
    ) -> CompleteResult | None:
        """One autocommitted statement (no BEGIN, no separate claim, no COMMIT round trip)."""
        args = {"worker": worker_id, "room": room, "lease": lease_seconds, **_columns(params)}

        query, names = self._hand

        async def run(conn: Conn) -> Row | None:
            cur = psycopg.AsyncRawCursor(conn)
            # Prepared at its first use on a connection, not psycopg's fifth: each unprepared
            # execution is planned afresh (0.6-2.5 ms for this statement), and the pool
            # rotates through all its connections.
            await cur.execute(query, [args[n] for n in names], prepare=True)
            return await cur.fetchone()

        row = await self._tx(run, single=True)
        if row is None or not row["applied"]:
            return None
        recorded = dict(zip(row["recorded_ids"], row["recorded_at"], strict=True))
        return CompleteResult(
            enqueued_at=tuple(recorded.get(p["id"]) for p in params),
            queued=tuple(
                TaskRef(i, a) for i, a in zip(row["ready_ids"], row["ready_attempts"], strict=True)
            ),
            finished_jobs=tuple(
                FinishedJob(str(j), JobStatus(status), duration)
                for j, status, duration in zip(
                    row["done_jobs"], row["done_status"], row["done_duration"], strict=True
                )
            ),
            claimed=tuple(claimed_task(h) for h in row["handed"]),
            duplicate=(False,) * len(params),
        )

    async def _read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """One snapshot for all of `body`'s statements (READ COMMITTED would let a job's
        counts and nodes come from different commits)."""

        async def snapshot(conn: Conn) -> T:
            await conn.execute(self._q["read_snapshot"])
            return await body(_PgTx(self._q, conn))

        return await self._tx(snapshot)


class _PgTx(Tx):
    """The steps of one PostgreSQL transaction, each a statement of queries.sql."""

    def __init__(self, queries: dict[str, str], conn: Conn) -> None:
        self._q = queries
        self._conn = conn

    async def _one(self, name: str, params: dict[str, Any]) -> Row | None:
        cur = await self._conn.execute(self._q[name], params)
        return await cur.fetchone()

    async def _one_row(self, name: str, params: dict[str, Any]) -> Row:
        """A statement that always returns one row (a SELECT of scalars)."""
        row = await self._one(name, params)
        if row is None:  # pragma: no cover
            raise RuntimeError(f"{name} returned no row")
        return row

    async def _all(self, name: str, params: dict[str, Any]) -> list[Row]:
        cur = await self._conn.execute(self._q[name], params)
        return await cur.fetchall()

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
        edges = [(dep, n["id"]) for n in nodes for dep in n["depends_on"]]
        rows = await self._all(
            "insert_job",
            {
                "id": job,
                "name": name,
                "n": len(nodes),
                "idempotency_key": key,
                "digest": digest,
                "nodes": Jsonb(nodes),
                "parents": [p for p, _ in edges],
                "children": [c for _, c in edges],
                "lease": lease,
            },
        )
        if not rows:  # the key was taken: nothing inserted (a job has at least one node)
            return None
        return rows[0]["created_at"], rows

    async def insert_jobs(
        self, jobs: list[NewJob], lease: float = 0.0
    ) -> list[tuple[datetime, list[Row]] | None]:
        edges = [
            (str(job), dep, n["id"])
            for job, *_, nodes in jobs
            for n in nodes
            for dep in n["depends_on"]
        ]
        rows = await self._all(
            "insert_jobs",
            {
                "jobs": Jsonb(
                    [
                        {
                            "k": k,
                            "id": str(job),
                            "name": name,
                            "n": len(nodes),
                            "idempotency_key": key,
                            "digest": digest,
                        }
                        for k, (job, name, key, digest, nodes) in enumerate(jobs)
                    ]
                ),
                "nodes": Jsonb([{**n, "job": str(job)} for job, *_, nodes in jobs for n in nodes]),
                "edge_jobs": [j for j, _, _ in edges],
                "parents": [p for _, p, _ in edges],
                "children": [c for _, _, c in edges],
                "lease": lease,
            },
        )
        by_job: dict[uuid.UUID, list[Row]] = {}
        for row in rows:
            by_job.setdefault(row["job_id"], []).append(row)
        out: list[tuple[datetime, list[Row]] | None] = []
        for job, *_ in jobs:
            mine = by_job.get(job)
            if mine is None:  # its key was taken: nothing inserted (a job has a node)
                out.append(None)
                continue
            mine.sort(key=lambda r: r["position"])
            out.append((mine[0]["created_at"], mine))
        return out

    async def job_by_idempotency_key(self, key: str) -> Row | None:
        return await self._one("job_by_idempotency_key", {"key": key})

    async def get_job(self, job: JobKey) -> Row | None:
        return await self._one("get_job", {"job": job})

    async def job_status(self, job: JobKey) -> Row | None:
        return await self._one("job_status", {"job": job})

    async def node_counts(self, jobs: list[JobKey]) -> list[Row]:
        return await self._all("job_node_counts", {"jobs": jobs})

    async def job_nodes(self, job: JobKey) -> list[Row]:
        return await self._all("job_nodes", {"job": job})

    async def job_attempts(self, job: JobKey) -> list[Row]:
        return await self._all("job_attempts", {"job": job})

    async def source_attempts(self, nodes: list[int]) -> list[Row]:
        return await self._all("source_attempts", {"ids": nodes})

    async def queue_positions(self, job: JobKey) -> list[Row]:
        return await self._all("queue_positions", {"job": job})

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
        return await self._all("list_jobs", params)

    async def request_cancel(self, job: JobKey) -> bool:
        return await self._one("request_cancel", {"job": job}) is not None

    async def cancel_waiting_nodes(self, job: JobKey) -> list[Row]:
        return await self._all("cancel_waiting_nodes", {"job": job})

    # --- attempts
    async def claim(self, worker: str, refs: Sequence[TaskRef], lease: float) -> list[Row]:
        params = {
            "worker": worker,
            "lease": lease,
            "ids": [r.node for r in refs],
            "attempts": [r.attempt for r in refs],
        }
        return await self._all("claim", params)

    async def release(self, worker: str, refs: Sequence[TaskRef]) -> list[Row]:
        return await self._all(
            "release",
            {
                "worker": worker,
                "ids": [r.node for r in refs],
                "attempts": [r.attempt for r in refs],
            },
        )

    async def heartbeat(self, worker: str, beats: Sequence[Beat], lease: float) -> list[Row]:
        params = {
            "worker": worker,
            "lease": lease,
            "ids": [b.ref.node for b in beats],
            "attempts": [b.ref.attempt for b in beats],
            "started": [b.started_at for b in beats],
        }
        return await self._all("heartbeat", params)

    async def lock_unlisted(
        self, worker: str, beats: Sequence[Beat], lease: float, grace: float
    ) -> list[HeldNode]:
        params = {"worker": worker, "ids": [b.ref.node for b in beats], "lease": lease}
        rows = await self._all("lock_unlisted", {**params, "grace": grace})
        return cast(list[HeldNode], rows)

    async def _succeed(self, name: str, params: dict[str, Any]) -> Succeeded | None:
        row = await self._one(name, params)  # a head + `unblock_children`: one round trip
        if row is None or not row["succeeded"]:
            return None
        return cast(Succeeded, row)

    async def succeed_running(self, worker: str, params: list[Row]) -> Succeeded | None:
        """One statement for the whole batch, its columns as arrays."""
        return await self._succeed("succeed_running", {"worker": worker, **_columns(params)})

    async def succeed_cached(self, node: int, source: int) -> Succeeded | None:
        return await self._succeed("succeed_cached", {"id": node, "source": source})

    async def already_recorded(self, params: Row) -> str | None:
        row = await self._one("already_recorded", params)
        return row["reason"] if row is not None else None

    async def lock_running(self, params: Row) -> LockedNode | None:
        return cast(LockedNode | None, await self._one("lock_running", params))

    async def record_attempt(self, params: Row) -> datetime | None:
        row = await self._one("record_attempt", params)
        return row["enqueued_at"] if row is not None else None

    async def node_to_retry_wait(self, node: int, delay: float, given_back: bool) -> None:
        params = {"id": node, "delay": delay, "given_back": int(given_back)}
        await self._conn.execute(self._q["node_to_retry_wait"], params)

    async def node_to_final(self, node: int, state: NodeState) -> None:
        await self._conn.execute(self._q["node_to_final"], {"id": node, "state": state})

    async def cascade_upstream_failed(self, node: int) -> int:
        return len(await self._all("cascade_upstream_failed", {"id": node}))

    async def count_finished(self, job: JobKey, finished: int, failed: int) -> JobCount | None:
        params = {"job": job, "finished": finished, "failed": failed}
        return cast(JobCount | None, await self._one("count_finished", params))

    async def finish_job(self, job: JobKey, status: JobStatus) -> float | None:
        row = await self._one("finish_job", {"job": job, "status": status.value})
        return row["duration"] if row is not None else None

    async def finish_jobs(self, jobs: list[tuple[JobKey, JobStatus]]) -> list[float | None]:
        if len(jobs) == 1:
            return [await self.finish_job(*jobs[0])]
        params = {"jobs": [job for job, _ in jobs], "statuses": [st.value for _, st in jobs]}
        done = {r["id"]: r["duration"] for r in await self._all("finish_jobs", params)}
        return [done.get(job) for job, _ in jobs]  # job keys are the uuids PostgreSQL returned

    # --- idempotency keys
    async def keyed_node(self, node: int) -> str | None:
        row = await self._one("keyed_node", {"id": node})
        return row["idempotency_key"] if row is not None else None

    async def lock_key(self, key: str) -> None:
        await self._conn.execute(self._q["lock_key"], {"key": key})

    async def key_holders(self, key: str, node: int) -> Row:
        return await self._one_row("key_holders", {"key": key, "id": node})

    async def queue_keyed(self, node: int) -> Row | None:
        return await self._one("queue_keyed", {"id": node})

    async def wait_keyed(self, node: int) -> None:
        await self._conn.execute(self._q["wait_keyed"], {"id": node})

    async def key_waiters(self, key: str) -> list[int]:
        return [r["id"] for r in await self._all("key_waiters", {"key": key})]

    # --- sweeps
    async def requeue_due_retries(self, limit: int) -> list[Row]:
        return await self._all("requeue_due_retries", {"limit": limit})

    async def lock_expired(self, limit: int) -> list[ExpiredNode]:
        return cast(list[ExpiredNode], await self._all("lock_expired", {"limit": limit}))

    async def stats(self, window: float) -> Row:
        return await self._one_row("stats", {"window": window})

    async def queued_tasks(
        self, age: float, limit: int, after_at: datetime, after_id: int
    ) -> list[Row]:
        params = {"age": age, "limit": limit, "after_at": after_at, "after_id": after_id}
        return await self._all("queued_tasks", params)


def _columns(params: list[Row]) -> dict[str, list[Any]]:
    """Reported results as the arrays `succeed_running` and `succeed_and_hand` unnest."""
    columns = {
        "ids": "id",
        "attempts": "attempt",
        "started": "started_at",
        "finished": "finished_at",
        "codes": "exit_code",
        "out": "stdout_tail",
        "out_bytes": "stdout_bytes",
        "err": "stderr_tail",
        "err_bytes": "stderr_bytes",
    }
    return {name: [p[column] for p in params] for name, column in columns.items()}


IDLE_CHECK_SECONDS = 1.0


async def _check_if_idle(conn: Conn) -> None:
    """Ping a pooled connection that sat idle, so that after a PostgreSQL restart the pool
    replaces dead connections instead of failing one request each; a connection in steady use
    is not pinged (no extra round trip on the hot path)."""
    now = time.monotonic()
    last = getattr(conn, "_minitemporal_last_checked", 0.0)
    conn._minitemporal_last_checked = now  # type: ignore[attr-defined]
    if now - last > IDLE_CHECK_SECONDS:
        await conn.execute("SELECT 1")  # autocommit: leaves no transaction open
