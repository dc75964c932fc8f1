"""The PostgreSQL store: every operation one transaction, every state change compare-and-set.

SQL lives in queries.sql; this module only sequences statements and applies the decisions of
`minitemporal.domain.states`. Driver errors become `Unavailable` here, at the boundary.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from minitemporal.domain.explain import NodeFacts, explain
from minitemporal.domain.model import (
    AttemptView,
    Beat,
    CancelResult,
    ClaimedTask,
    CompleteResult,
    FinishedJob,
    GivenUp,
    HeartbeatResult,
    JobPage,
    JobSpec,
    JobStatus,
    JobView,
    NodeState,
    NodeView,
    Outcome,
    Output,
    RetryPolicy,
    StoreStats,
    SubmitResult,
    SweepResult,
    TaskRef,
    TaskResult,
)
from minitemporal.domain.states import (
    ReadyKeyed,
    admit_keyed,
    after_attempt,
    job_status_when_done,
)
from minitemporal.errors import Conflict, InvalidInput, NotFound, Problem, Unavailable
from minitemporal.store.base import Store
from minitemporal.store.sqlfile import load_queries, load_text

T = TypeVar("T")
Conn = psycopg.AsyncConnection[dict[str, Any]]
SCHEMA_LOCK = 0x6D696E6974  # pg_advisory_xact_lock key: "minit"
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; command output can."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class PostgresStore(Store):
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
        self._url = url
        self._policy = retry_policy
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._q = load_queries("minitemporal.store.postgres", "queries.sql")
        self._succeed_running = self._q["succeed_running"] + "\n" + self._q["unblock_children"]
        self._succeed_cached = self._q["succeed_cached"] + "\n" + self._q["unblock_children"]
        self._pool: AsyncConnectionPool[Conn] | None = None

    # --- lifecycle
    async def open(self) -> None:
        self._pool = AsyncConnectionPool(
            self._url,
            min_size=min(2, self._pool_size),
            max_size=self._pool_size,
            open=False,
            timeout=self._acquire_timeout,
            kwargs={
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

        await self._tx(one)

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

    async def _tx(self, body: Callable[[Conn], Awaitable[T]], attempts: int = 3) -> T:
        """Run `body` in one transaction; retry it on deadlock or serialization failure."""
        for attempt in range(1, attempts + 1):
            try:
                async with self._connection() as conn, conn.transaction():
                    return await body(conn)
            except _RETRYABLE:
                if attempt == attempts:
                    raise Unavailable("PostgreSQL transaction kept conflicting") from None
        raise AssertionError("unreachable")

    async def _one(self, conn: Conn, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        cur = await conn.execute(self._q[name], params)
        return await cur.fetchone()

    async def _all(self, conn: Conn, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cur = await conn.execute(self._q[name], params)
        return await cur.fetchall()

    # --- jobs
    async def submit_job(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
    ) -> SubmitResult:
        job_id = uuid.uuid4()
        nodes = [
            {
                "id": n.id,
                "position": i,
                "name": n.name,
                "command": n.command,
                "retries": n.retries,
                "timeout_seconds": n.timeout_seconds,
                "idempotency_key": n.idempotency_key,
                "depends_on": list(n.depends_on),
                "env": [list(pair) for pair in n.env],
                "backoff_base": n.backoff.base_seconds if n.backoff else None,
                "backoff_factor": n.backoff.factor if n.backoff else None,
                "backoff_max": n.backoff.max_seconds if n.backoff else None,
                "queue": not n.depends_on and n.idempotency_key is None,
            }
            for i, n in enumerate(spec.nodes)
        ]

        async def body(conn: Conn) -> SubmitResult:
            row = await self._one(
                conn,
                "insert_job",
                {
                    "id": job_id,
                    "name": spec.name,
                    "n": len(spec.nodes),
                    "idempotency_key": idempotency_key,
                    "digest": request_digest if idempotency_key else None,
                },
            )
            if row is None:  # the idempotency key is taken
                existing = await self._one(conn, "job_by_idempotency_key", {"key": idempotency_key})
                if existing is None:  # pragma: no cover - the conflicting row is committed
                    raise Unavailable("idempotency key race, retry")
                if existing["request_digest"] != request_digest:
                    raise Conflict(
                        "this Idempotency-Key was used for a different request",
                        [Problem("/", f"job {existing['id']} was submitted with this key")],
                    )
                return SubmitResult(str(existing["id"]), created=False)
            inserted = await self._all(conn, "insert_nodes", {"job": job_id, "nodes": Jsonb(nodes)})
            key_of = {r["node_id"]: r["id"] for r in inserted}
            edges = [(key_of[d], key_of[n.id]) for n in spec.nodes for d in n.depends_on]
            if edges:
                await conn.execute(
                    self._q["insert_edges"],
                    {"parents": [p for p, _ in edges], "children": [c for _, c in edges]},
                )
            tx = _Changes(self, conn)
            tx.queued.extend(
                TaskRef(r["id"], r["attempt"]) for r in inserted if r["state"] == "queued"
            )
            await tx.admit_keyed(
                sorted(
                    r["id"] for r in inserted if r["state"] == "pending" and r["deps_pending"] == 0
                )
            )
            return SubmitResult(
                str(job_id),
                created=True,
                queued=tuple(sorted(tx.queued)),
                created_at=row["created_at"],
            )

        return await self._tx(body)

    async def get_job(self, job_id: str, *, include_nodes: bool = True) -> JobView:
        key = _job_uuid(job_id)

        async def body(conn: Conn) -> JobView:
            job = await self._one(conn, "get_job", {"job": key})
            if job is None:
                raise NotFound(f"no job {job_id}")
            counts = await self._node_counts(conn, [key])
            nodes: tuple[NodeView, ...] = ()
            if include_nodes:
                nodes = await self._job_nodes(conn, key)
            return _job_view(job, counts.get(key, {}), nodes)

        return await self._tx(body)

    async def _node_counts(
        self, conn: Conn, jobs: list[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, int]]:
        counts: dict[uuid.UUID, dict[str, int]] = {}
        for r in await self._all(conn, "job_node_counts", {"jobs": jobs}):
            counts.setdefault(r["job_id"], {})[r["state"]] = r["n"]
        return counts

    async def _job_nodes(self, conn: Conn, job: uuid.UUID) -> tuple[NodeView, ...]:
        rows = await self._all(conn, "job_nodes", {"job": job})
        attempts: dict[int, list[AttemptView]] = {}
        for a in await self._all(conn, "job_attempts", {"job": job}):
            attempts.setdefault(a["node_id"], []).append(_attempt_view(a))
        sources = [r["cached_from"] for r in rows if r["cached_from"] is not None]
        reused: dict[int, AttemptView] = {}
        if sources:
            for a in await self._all(conn, "source_attempts", {"ids": sources}):
                reused[a["node_id"]] = _attempt_view(a)
        ahead: dict[int, int] = {}
        if any(r["state"] == "queued" for r in rows):
            ahead = {
                r["id"]: r["ahead"] for r in await self._all(conn, "queue_positions", {"job": job})
            }
        states = {r["node_id"]: NodeState(r["state"]) for r in rows}
        views = []
        for r in rows:
            tries = tuple(attempts.get(r["id"], ()))
            current = tries[-1] if tries and tries[-1].attempt == r["attempt"] else None
            state = NodeState(r["state"])
            facts = NodeFacts(
                state=state,
                attempt=r["attempt"],
                max_attempts=r["retries"] + 1,
                dependency_states={d: states[d] for d in r["depends_on"] if d in states},
                queued_ahead=ahead.get(r["id"]),
                next_attempt_at=r["next_attempt_at"],
                worker_id=r["worker_id"],
                last_attempt=tries[-1] if tries else None,
                cached=r["cached"],
                key_wait=r["key_wait"],
                idempotency_key=r["idempotency_key"],
            )
            cached_result = reused.get(r["cached_from"]) if r["cached_from"] else None
            views.append(
                NodeView(
                    id=r["node_id"],
                    name=r["name"],
                    command=r["command"],
                    state=state,
                    retries=r["retries"],
                    timeout_seconds=r["timeout_seconds"],
                    idempotency_key=r["idempotency_key"],
                    depends_on=tuple(r["depends_on"]),
                    attempt=r["attempt"],
                    enqueued_at=r["enqueued_at"],
                    started_at=current.started_at if current else None,
                    finished_at=r["finished_at"],
                    next_attempt_at=r["next_attempt_at"],
                    worker_id=r["worker_id"] or (current.worker_id if current else None),
                    exit_code=(
                        tries[-1].exit_code
                        if tries
                        else (cached_result.exit_code if cached_result else None)
                    ),
                    cached=r["cached"],
                    attempts=tries,
                    explanation=explain(facts),
                    cached_result=cached_result,
                )
            )
        return tuple(views)

    async def list_jobs(
        self, *, limit: int, cursor: str | None = None, status: JobStatus | None = None
    ) -> JobPage:
        before_created, before_id = _decode_cursor(cursor) if cursor else (None, None)

        async def body(conn: Conn) -> JobPage:
            rows = await self._all(
                conn,
                "list_jobs",
                {
                    "status": status.value if status else None,
                    "before_created": before_created,
                    "before_id": before_id,
                    "limit": limit + 1,
                },
            )
            page, more = rows[:limit], len(rows) > limit
            counts = await self._node_counts(conn, [r["id"] for r in page]) if page else {}
            jobs = tuple(_job_view(r, counts.get(r["id"], {}), ()) for r in page)
            next_cursor = _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
            return JobPage(jobs, next_cursor)

        return await self._tx(body)

    async def cancel_job(self, job_id: str) -> CancelResult:
        key = _job_uuid(job_id)

        async def body(conn: Conn) -> tuple[tuple[TaskRef, ...], _Changes]:
            if await self._one(conn, "request_cancel", {"job": key}) is None:
                job = await self._one(conn, "job_status", {"job": key})
                if job is None:
                    raise NotFound(f"no job {job_id}")
                if job["status"] != JobStatus.RUNNING:
                    raise Conflict(f"job {job_id} already finished: {job['status']}")
                return (), _Changes(self, conn)  # cancel already requested: idempotent
            waiting = await self._all(conn, "cancel_waiting_nodes", {"job": key})
            tx = _Changes(self, conn)
            await tx.count_finished(key, finished=len(waiting), failed=0)
            for w in waiting:
                if w["idempotency_key"] is not None and w["state"] != "pending":
                    await tx.wake_key_waiters(w["idempotency_key"])
            withdrawn = tuple(
                TaskRef(w["id"], w["attempt"]) for w in waiting if w["state"] == "queued"
            )
            return withdrawn, tx

        withdrawn, tx = await self._tx(body)
        return CancelResult(
            job=await self.get_job(job_id),
            withdrawn=withdrawn,
            queued=tuple(tx.queued),
            finished_jobs=tuple(tx.finished),
        )

    # --- attempts
    async def claim(
        self, worker_id: str, refs: Sequence[TaskRef], lease_seconds: float
    ) -> list[ClaimedTask]:
        if not refs:
            return []
        return await self._tx(lambda conn: self._claim(conn, worker_id, refs, lease_seconds))

    async def _claim(
        self, conn: Conn, worker_id: str, refs: Sequence[TaskRef], lease_seconds: float
    ) -> list[ClaimedTask]:
        params = {
            "worker": worker_id,
            "lease": lease_seconds,
            "ids": [r.node for r in refs],
            "attempts": [r.attempt for r in refs],
        }
        return [
            ClaimedTask(
                ref=TaskRef(r["id"], r["attempt"]),
                job_id=str(r["job_id"]),
                node_id=r["node_id"],
                command=r["command"],
                timeout_seconds=r["timeout_seconds"],
                env=tuple((k, v) for k, v in r["env"]),
                has_dependents=r["has_dependents"],
            )
            for r in await self._all(conn, "claim", params)
        ]

    async def heartbeat(
        self, worker_id: str, beats: Sequence[Beat], lease_seconds: float
    ) -> HeartbeatResult:
        params = {
            "worker": worker_id,
            "lease": lease_seconds,
            "ids": [b.ref.node for b in beats],
            "attempts": [b.ref.attempt for b in beats],
            "started": [b.started_at for b in beats],
            # A claim reply may still be in flight when the worker lists what it holds.
            "grace": max(0.5, lease_seconds / 3),
        }

        async def body(conn: Conn) -> HeartbeatResult:
            rows = await self._all(conn, "heartbeat", params)
            tx = _Changes(self, conn)
            for node in await self._all(conn, "lock_unlisted", params):
                await self._one(conn, "record_attempt", _given_up(node, Outcome.INTERRUPTED))
                await tx.after_failure(node, Outcome.INTERRUPTED)
            held = {TaskRef(r["id"], r["attempt"]): r["cancel"] for r in rows}
            cancel = tuple(ref for ref, c in held.items() if c)
            lost = tuple(b.ref for b in beats if b.ref not in held)
            return HeartbeatResult(cancel=cancel, lost=lost)

        return await self._tx(body)

    async def complete(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        *,
        want: int = 0,
        claim: Sequence[TaskRef] = (),
        lease_seconds: float = 0.0,
    ) -> CompleteResult:
        async def body(conn: Conn) -> CompleteResult:
            tx = _Changes(self, conn)
            enqueued: list[datetime | None] = [None] * len(results)
            duplicate = [False] * len(results)
            wins = [i for i, r in enumerate(results) if r.outcome is Outcome.SUCCEEDED]
            if wins:
                recorded = await tx.succeed_running(worker_id, [results[i] for i in wins])
                for i in wins:
                    enqueued[i] = recorded.get(results[i].ref.node)
            for i, result in enumerate(results):
                params = _result_params(worker_id, result)
                if result.outcome is Outcome.SUCCEEDED:
                    if enqueued[i] is None:
                        duplicate[i] = await self._recorded(conn, params, result)
                    continue
                node = await self._one(conn, "lock_running", params)
                if node is None:
                    duplicate[i] = await self._recorded(conn, params, result)
                    continue
                row = await self._one(
                    conn, "record_attempt", {**params, "reason": result.outcome.value}
                )
                enqueued[i] = row["enqueued_at"] if row else None
                await tx.after_failure(node, result.outcome)
            claimed: list[ClaimedTask] = []
            if want > 0 and claim:  # first in line: what the worker popped from the queue
                claimed = await self._claim(conn, worker_id, claim[:want], lease_seconds)
            queued = sorted(tx.queued)
            room = want - len(claimed)
            if room > 0 and queued:
                # Hand the reporting worker what its results unblocked: same transaction,
                # same compare-and-set claim, no trip through the queue.
                handed = await self._claim(conn, worker_id, queued[:room], lease_seconds)
                taken = {c.ref for c in handed}
                queued = [r for r in queued if r not in taken]
                claimed += handed
            return CompleteResult(
                enqueued_at=tuple(enqueued),
                queued=tuple(queued),
                finished_jobs=tuple(tx.finished),
                claimed=tuple(claimed),
                duplicate=tuple(duplicate),
            )

        return await self._tx(body)

    async def _recorded(self, conn: Conn, params: dict[str, Any], result: TaskResult) -> bool:
        """The report was already recorded (a retried delivery), not stale."""
        row = await self._one(conn, "already_recorded", params)
        return row is not None and row["reason"] == result.outcome.value

    def _node_policy(self, node: dict[str, Any]) -> RetryPolicy:
        if node["backoff_base"] is None:
            return self._policy
        return RetryPolicy(
            base_seconds=node["backoff_base"],
            factor=node["backoff_factor"],
            max_seconds=node["backoff_max"],
            jitter=self._policy.jitter,
        )

    # --- sweeps
    async def requeue_due_retries(self, limit: int = 1000) -> list[TaskRef]:
        async def body(conn: Conn) -> list[TaskRef]:
            rows = await self._all(conn, "requeue_due_retries", {"limit": limit})
            return sorted(TaskRef(r["id"], r["attempt"]) for r in rows)

        return await self._tx(body)

    async def expire_leases(self, limit: int = 1000) -> SweepResult:
        async def body(conn: Conn) -> SweepResult:
            tx = _Changes(self, conn)
            gone: dict[Outcome, list[GivenUp]] = {Outcome.LOST: [], Outcome.TIMEOUT: []}
            for node in await self._all(conn, "lock_expired", {"limit": limit}):
                outcome = Outcome.TIMEOUT if node["overdue"] else Outcome.LOST
                await self._one(conn, "record_attempt", _given_up(node, outcome))
                await tx.after_failure(node, outcome)
                gone[outcome].append(
                    GivenUp(
                        TaskRef(node["id"], node["attempt"]),
                        str(node["job_id"]),
                        node["node_id"],
                        node["worker_id"],
                    )
                )
            return SweepResult(
                lost=tuple(gone[Outcome.LOST]),
                timed_out=tuple(gone[Outcome.TIMEOUT]),
                queued=tuple(tx.queued),
                finished_jobs=tuple(tx.finished),
            )

        return await self._tx(body)

    async def stats(self, *, worker_window_seconds: float) -> StoreStats:
        async def body(conn: Conn) -> StoreStats:
            r = await self._one(conn, "stats", {"window": worker_window_seconds})
            if r is None:  # pragma: no cover - a SELECT of scalars always has a row
                return StoreStats()
            return StoreStats(
                queued=r["queued"],
                running=r["running"],
                jobs_active=r["jobs_active"],
                workers_alive=r["workers_alive"],
                oldest_queued_age_seconds=max(0.0, r["oldest_queued_age"]),
            )

        return await self._tx(body)

    async def queued_tasks(
        self, *, min_age_seconds: float = 0.0, limit: int = 100_000
    ) -> list[tuple[TaskRef, datetime]]:
        async def body(conn: Conn) -> list[tuple[TaskRef, datetime]]:
            rows = await self._all(conn, "queued_tasks", {"age": min_age_seconds, "limit": limit})
            return [(TaskRef(r["id"], r["attempt"]), r["enqueued_at"]) for r in rows]

        return await self._tx(body)


class _Changes:
    """The write path of one transaction: applies the domain's decisions and collects what
    the scheduler must act on after the commit (attempts to push, jobs that finished)."""

    def __init__(self, store: PostgresStore, conn: Conn) -> None:
        self.store = store
        self.conn = conn
        self.queued: list[TaskRef] = []
        self.finished: list[FinishedJob] = []

    async def _one(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        return await self.store._one(self.conn, name, params)

    async def succeed_running(
        self, worker_id: str, results: Sequence[TaskResult]
    ) -> dict[int, datetime]:
        """Record reported successes in one statement; the enqueue time of each one recorded
        (a result missing from the answer was stale or a duplicate)."""
        r = [_result_params(worker_id, x) for x in results]
        row = await self._succeed(
            self.store._succeed_running,
            {
                "worker": worker_id,
                "ids": [p["id"] for p in r],
                "attempts": [p["attempt"] for p in r],
                "started": [p["started_at"] for p in r],
                "finished": [p["finished_at"] for p in r],
                "codes": [p["exit_code"] for p in r],
                "out": [p["stdout_tail"] for p in r],
                "out_bytes": [p["stdout_bytes"] for p in r],
                "err": [p["stderr_tail"] for p in r],
                "err_bytes": [p["stderr_bytes"] for p in r],
            },
        )
        return dict(zip(row["recorded_ids"], row["recorded_at"], strict=True)) if row else {}

    async def _succeed(self, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run a success head + `unblock_children`; follow up on what it unblocked."""
        cur = await self.conn.execute(query, params)
        row = await cur.fetchone()
        if row is None or not row["succeeded"]:
            return None
        self.queued.extend(
            TaskRef(i, a) for i, a in zip(row["ready_ids"], row["ready_attempts"], strict=True)
        )
        await self.admit_keyed(row["keyed_ids"])
        for key in row["keys"]:
            await self.wake_key_waiters(key)
        for job, failed, cancelled in zip(
            row["done_jobs"], row["done_failed"], row["done_cancelled"], strict=True
        ):
            await self.finish_job(job, cancelled=cancelled, failed=failed)
        return row

    async def admit_keyed(self, node_ids: Sequence[int]) -> None:
        """Ready nodes with an idempotency key: reuse a result, wait, or queue (domain rule)."""
        for node_id in node_ids:
            node = await self._one("keyed_node", {"id": node_id})
            if node is None:
                continue
            key = node["idempotency_key"]
            await self._one("lock_key", {"key": key})
            holders = await self._one("key_holders", {"key": key, "id": node_id})
            if holders is None:  # pragma: no cover - a SELECT of scalars always has a row
                continue
            decision = admit_keyed(
                key_succeeded=holders["succeeded"] is not None, key_in_flight=holders["in_flight"]
            )
            if decision == ReadyKeyed.CACHED:
                await self._succeed(
                    self.store._succeed_cached, {"id": node_id, "source": holders["succeeded"]}
                )
            elif decision == ReadyKeyed.WAIT:
                await self._one("wait_keyed", {"id": node_id})
            else:
                row = await self._one("queue_keyed", {"id": node_id})
                if row is not None:
                    self.queued.append(TaskRef(row["id"], row["attempt"]))

    async def wake_key_waiters(self, key: str) -> None:
        """A node with this key reached a final state: decide again for those waiting on it."""
        await self._one("lock_key", {"key": key})
        waiters = await self.store._all(self.conn, "key_waiters", {"key": key})
        await self.admit_keyed([w["id"] for w in waiters])

    async def after_failure(self, node: dict[str, Any], outcome: Outcome) -> None:
        """Apply the state machine's decision for a failed attempt of a locked node."""
        decision = after_attempt(
            outcome,
            node["attempt"] - node["givebacks"],
            node["retries"] + 1,
            self.store._node_policy(node),
            job_cancelled=node["cancelled"],
            rng=self.store._rng,
        )
        if decision.state is NodeState.RETRY_WAIT:
            await self.conn.execute(
                self.store._q["node_to_retry_wait"],
                {
                    "id": node["id"],
                    "delay": decision.retry_delay or 0.0,
                    "given_back": int(decision.given_back),
                },
            )
            return
        await self.conn.execute(
            self.store._q["node_to_final"], {"id": node["id"], "state": decision.state}
        )
        below: list[dict[str, Any]] = []
        if decision.state is NodeState.FAILED:
            below = await self.store._all(self.conn, "cascade_upstream_failed", {"id": node["id"]})
        await self.count_finished(
            node["job_id"],
            finished=1 + len(below),
            failed=1 if decision.state is NodeState.FAILED else 0,
        )
        if node["idempotency_key"] is not None:
            await self.wake_key_waiters(node["idempotency_key"])

    async def count_finished(self, job: uuid.UUID, *, finished: int, failed: int) -> None:
        if finished == 0:
            return
        row = await self._one(
            "count_finished", {"job": job, "finished": finished, "failed": failed}
        )
        if row is not None and row["nodes_unfinished"] == 0:
            await self.finish_job(row["id"], cancelled=row["cancelled"], failed=row["nodes_failed"])

    async def finish_job(self, job: uuid.UUID, *, cancelled: bool, failed: int) -> None:
        status = job_status_when_done(cancelled=cancelled, failed_nodes=failed)
        done = await self._one("finish_job", {"job": job, "status": status.value})
        if done is not None:
            self.finished.append(FinishedJob(str(job), status, done["duration"]))


# --- helpers
IDLE_CHECK_SECONDS = 1.0


async def _check_if_idle(conn: Conn) -> None:
    """Ping a pooled connection that sat idle, so that after a PostgreSQL restart the pool
    replaces dead connections instead of failing one request each; a connection in steady use
    is not pinged (no extra round trip on the hot path)."""
    now = time.monotonic()
    last = getattr(conn, "_minitemporal_last_checked", 0.0)
    conn._minitemporal_last_checked = now  # type: ignore[attr-defined]
    if now - last > IDLE_CHECK_SECONDS:
        await conn.execute("SELECT 1")
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.rollback()


def _attempt_view(a: dict[str, Any]) -> AttemptView:
    return AttemptView(
        attempt=a["attempt"],
        worker_id=a["worker_id"],
        enqueued_at=a["enqueued_at"],
        claimed_at=a["claimed_at"],
        started_at=a["started_at"],
        finished_at=a["finished_at"],
        exit_code=a["exit_code"],
        reason=a["reason"],
        stdout=Output(a["stdout_tail"], a["stdout_bytes"]),
        stderr=Output(a["stderr_tail"], a["stderr_bytes"]),
    )


def _given_up(node: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """record_attempt parameters for an attempt the scheduler gave up on (no worker report)."""
    return {
        "id": node["id"],
        "attempt": node["attempt"],
        "started_at": None,
        "finished_at": None,  # PostgreSQL's clock
        "exit_code": None,
        "reason": outcome.value,
        "stdout_tail": "",
        "stdout_bytes": 0,
        "stderr_tail": "",
        "stderr_bytes": 0,
    }


def _result_params(worker_id: str, r: TaskResult) -> dict[str, Any]:
    return {
        "id": r.ref.node,
        "attempt": r.ref.attempt,
        "worker": worker_id,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "exit_code": r.exit_code,
        "stdout_tail": _clean(r.stdout.tail),
        "stdout_bytes": r.stdout.total_bytes,
        "stderr_tail": _clean(r.stderr.tail),
        "stderr_bytes": r.stderr.total_bytes,
    }


def _job_uuid(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no job {job_id}") from None


def _job_view(row: dict[str, Any], counts: dict[str, int], nodes: tuple[NodeView, ...]) -> JobView:
    return JobView(
        id=str(row["id"]),
        name=row["name"],
        status=JobStatus(row["status"]),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        nodes_total=row["nodes_total"],
        node_counts=dict(sorted(counts.items())),
        nodes=nodes,
        cancel_requested=row["cancel_requested_at"] is not None,
    )


def _encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(job_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            "invalid cursor", [Problem("/cursor", "not a cursor we issued")]
        ) from exc
