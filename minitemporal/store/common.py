"""What the SQL backends share: every operation's flow, the write path, and the views.

A backend supplies transactions (`SqlStore._write`, `SqlStore._read`) and the steps of one
transaction (`Tx`): a statement or two that each mean one thing, such as "lock this running
attempt" or "record this success and unblock its children". Everything that decides (which
step follows which, what `domain.states` says about retries, idempotency keys and job status)
lives here once, so PostgreSQL and SQLite cannot drift apart. Steps are coroutines: PostgreSQL
awaits its driver, SQLite runs them on its writer thread (see `store.sqlite`).
"""

from __future__ import annotations

import abc
import base64
import collections
import dataclasses
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar

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
    Submission,
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

log = logging.getLogger("minitemporal.store")

T = TypeVar("T")
Row = dict[str, Any]
# `Tx.insert_job`'s arguments but the lease: id, name, idempotency key, digest, node rows.
NewJob = tuple[uuid.UUID, str, "str | None", "str | None", list[Row]]
# A job's key as the backend stores it (uuid.UUID in PostgreSQL, its text in SQLite). Flows pass
# it through untouched: what a step returned is what the next step gets.
JobKey = Any
BEFORE_ALL = datetime(1, 1, 1, tzinfo=UTC)  # earlier than any enqueue time, in both stores


class Succeeded(TypedDict):
    """What recording successes did, in the transaction that recorded them."""

    recorded_ids: list[int]  # nodes whose reported success was recorded now, ascending
    recorded_at: list[datetime]  # the enqueue time of each one's attempt, in that order
    keys: list[str]  # the idempotency keys of the nodes that succeeded
    ready_ids: list[int]  # children now queued (attempt 1), ascending
    ready_attempts: list[int]
    keyed_ids: list[int]  # children now ready but holding an idempotency key, ascending
    done_jobs: list[JobKey]  # jobs left with no unfinished node, ascending
    done_failed: list[int]  # their failed nodes
    done_cancelled: list[bool]  # whether their cancel was requested
    succeeded: int  # how many nodes succeeded


class LockedNode(TypedDict):
    """A running node whose current attempt ended (reported or given up), locked."""

    id: int
    job_id: JobKey
    attempt: int
    givebacks: int
    retries: int
    idempotency_key: str | None
    backoff_base: float | None
    backoff_factor: float | None
    backoff_max: float | None
    cancelled: bool  # its job's cancel was requested


class HeldNode(LockedNode):
    """A locked running node, with what a log line about giving it up needs."""

    node_id: str
    worker_id: str | None


class ExpiredNode(HeldNode):
    overdue: bool  # past its deadline (timeout plus one lease), not just its lease


class JobCount(TypedDict):
    """A job's counters after nodes reached a final state."""

    id: JobKey
    nodes_unfinished: int
    nodes_failed: int
    cancelled: bool


class Tx(abc.ABC):
    """The steps of one transaction as one backend runs them. None decides anything.

    Steps that take `params` take the dicts built by `result_params` and `given_up`. Steps that
    return rows name their columns in the docstring; timestamps are timezone-aware datetimes.
    """

    # --- jobs
    @abc.abstractmethod
    async def insert_job(
        self,
        job: uuid.UUID,
        name: str,
        key: str | None,
        digest: str | None,
        nodes: list[Row],
        lease: float = 0.0,
    ) -> tuple[datetime, list[Row]] | None:
        """Insert a running job, its nodes (see `node_rows`) and their edges: nodes with
        `queue` are queued as attempt 1, the others pending; a queued node with a `worker` is
        claimed for that worker at once (running, leased for `lease` s, its attempt row). The
        job's created_at and the node rows (id, attempt, state, deps_pending), or None if the
        idempotency key is taken (then nothing is inserted)."""

    async def insert_jobs(
        self, jobs: list[NewJob], lease: float = 0.0
    ) -> list[tuple[datetime, list[Row]] | None]:
        """`insert_job` for each job, in order; a backend may do them in one statement."""
        return [await self.insert_job(*job, lease) for job in jobs]

    @abc.abstractmethod
    async def job_by_idempotency_key(self, key: str) -> Row | None:
        """id, request_digest."""

    @abc.abstractmethod
    async def get_job(self, job: JobKey) -> Row | None:
        """id, name, status, created_at, finished_at, nodes_total, cancel_requested_at."""

    @abc.abstractmethod
    async def job_status(self, job: JobKey) -> Row | None:
        """id, status."""

    @abc.abstractmethod
    async def node_counts(self, jobs: list[JobKey]) -> list[Row]:
        """job_id, state, n: how many nodes of each job are in each state."""

    @abc.abstractmethod
    async def job_nodes(self, job: JobKey) -> list[Row]:
        """The nodes in submission order, with the columns `node_views` reads."""

    @abc.abstractmethod
    async def job_attempts(self, job: JobKey) -> list[Row]:
        """Every attempt of the job's nodes, by node then attempt (see `attempt_view`)."""

    @abc.abstractmethod
    async def source_attempts(self, nodes: list[int]) -> list[Row]:
        """The successful attempts of these nodes (the results cached nodes reuse)."""

    @abc.abstractmethod
    async def queue_positions(self, job: JobKey) -> list[Row]:
        """id, ahead: for each queued node of the job, how many queued attempts precede it."""

    @abc.abstractmethod
    async def list_jobs(
        self,
        status: str | None,
        before_created: datetime | None,
        before_id: uuid.UUID | None,
        limit: int,
    ) -> list[Row]:
        """Jobs (columns of `get_job`) newest first, strictly before the cursor if any."""

    @abc.abstractmethod
    async def request_cancel(self, job: JobKey) -> bool:
        """Mark a running job's cancel as requested; False if finished or already requested."""

    @abc.abstractmethod
    async def cancel_waiting_nodes(self, job: JobKey) -> list[Row]:
        """Pending, queued and backing-off nodes become cancelled. Rows, with the state each
        had before: id, attempt, state, idempotency_key."""

    # --- attempts
    @abc.abstractmethod
    async def claim(self, worker: str, refs: Sequence[TaskRef], lease: float) -> list[Row]:
        """queued -> running for refs that are current; one attempt row each. Rows: id,
        attempt, job_id, node_id, command, timeout_seconds, env, has_dependents."""

    @abc.abstractmethod
    async def release(self, worker: str, refs: Sequence[TaskRef]) -> list[Row]:
        """Held, never-started attempts back to queued (same attempt), their attempt rows
        deleted. Rows: id, attempt."""

    @abc.abstractmethod
    async def heartbeat(self, worker: str, beats: Sequence[Beat], lease: float) -> list[Row]:
        """Extend the leases the worker holds, record start times, note the worker as seen.
        Rows, one per lease still held: id, attempt, cancel."""

    @abc.abstractmethod
    async def lock_unlisted(
        self, worker: str, beats: Sequence[Beat], lease: float, grace: float
    ) -> list[HeldNode]:
        """Running attempts granted to the worker over `grace` seconds ago that its heartbeat
        does not list (the claim reply was lost, or it restarted under the same id), locked."""

    @abc.abstractmethod
    async def succeed_running(self, worker: str, params: list[Row]) -> Succeeded | None:
        """Record the successes of running attempts held by the worker, unblock children whose
        last pending dependencies these were, count the nodes on their jobs; None if no
        attempt was current."""

    @abc.abstractmethod
    async def succeed_cached(self, node: int, source: int) -> Succeeded | None:
        """Succeed a ready keyed node from `source`'s recorded result, as above."""

    @abc.abstractmethod
    async def already_recorded(self, params: Row) -> str | None:
        """The reason recorded for this attempt of params' worker, if it finished already."""

    @abc.abstractmethod
    async def lock_running(self, params: Row) -> LockedNode | None:
        """The node of a running attempt held by params' worker, or None."""

    @abc.abstractmethod
    async def record_attempt(self, params: Row) -> datetime | None:
        """Record how an attempt ended; its enqueue time."""

    @abc.abstractmethod
    async def node_to_retry_wait(self, node: int, delay: float, given_back: bool) -> None: ...

    @abc.abstractmethod
    async def node_to_final(self, node: int, state: NodeState) -> None: ...

    @abc.abstractmethod
    async def cascade_upstream_failed(self, node: int) -> int:
        """Pending nodes below a failed node become upstream_failed; how many."""

    @abc.abstractmethod
    async def count_finished(self, job: JobKey, finished: int, failed: int) -> JobCount | None:
        """Count nodes that reached a final state on their job."""

    @abc.abstractmethod
    async def finish_job(self, job: JobKey, status: JobStatus) -> float | None:
        """Give a job with no unfinished node its final status; its duration in seconds, or
        None if it had finished already."""

    async def finish_jobs(self, jobs: list[tuple[JobKey, JobStatus]]) -> list[float | None]:
        """`finish_job` for each (job, status), in order; a backend may do them in one
        statement."""
        return [await self.finish_job(job, status) for job, status in jobs]

    # --- idempotency keys
    @abc.abstractmethod
    async def keyed_node(self, node: int) -> str | None:
        """The idempotency key of a node still pending, or None."""

    @abc.abstractmethod
    async def lock_key(self, key: str) -> None:
        """Serialise decisions about one key until the transaction ends."""

    @abc.abstractmethod
    async def key_holders(self, key: str, node: int) -> Row:
        """Among other nodes with the key: `succeeded`, one that succeeded by running (the
        node whose result is reusable, or None), and `in_flight`, whether one is queued,
        running or backing off."""

    @abc.abstractmethod
    async def queue_keyed(self, node: int) -> Row | None:
        """A ready keyed node becomes queued (attempt 1): id, attempt."""

    @abc.abstractmethod
    async def wait_keyed(self, node: int) -> None:
        """A ready keyed node waits for its key's holder (key_wait)."""

    @abc.abstractmethod
    async def key_waiters(self, key: str) -> list[int]:
        """Nodes waiting on the key, ascending."""

    # --- sweeps
    @abc.abstractmethod
    async def requeue_due_retries(self, limit: int) -> list[Row]:
        """retry_wait -> queued, next attempt, for nodes whose backoff passed: id, attempt."""

    @abc.abstractmethod
    async def lock_expired(self, limit: int) -> list[ExpiredNode]:
        """Running nodes whose lease expired or whose deadline passed, locked."""

    @abc.abstractmethod
    async def stats(self, window: float) -> Row:
        """queued, running, jobs_active, workers_alive (heartbeated within `window` seconds),
        oldest_queued_age (seconds)."""

    @abc.abstractmethod
    async def queued_tasks(
        self, age: float, limit: int, after_at: datetime, after_id: int
    ) -> list[Row]:
        """Queued attempts enqueued at least `age` seconds ago, oldest first, past
        (`after_at`, `after_id`) in (enqueued_at, id) order: id, attempt, enqueued_at."""


class SqlStore(Store):
    """The store interface over `Tx` steps: one implementation of every operation."""

    def __init__(self, *, retry_policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self._policy = retry_policy
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)

    @abc.abstractmethod
    async def _write(self, body: Callable[[Tx], Awaitable[T]], *, single: bool = False) -> T:
        """Run `body` in one write transaction; it commits only if `body` returns.

        `single`: `body` runs exactly one statement, so a backend whose statements commit on
        their own may skip BEGIN and COMMIT.
        """

    @abc.abstractmethod
    async def _read(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `body` in one read-only transaction, after every commit that preceded it."""

    def node_policy(self, node: LockedNode) -> RetryPolicy:
        """The node's own backoff (its three columns are set together), else the global one."""
        if node["backoff_base"] is None:
            return self._policy
        return RetryPolicy(
            base_seconds=node["backoff_base"],
            factor=node["backoff_factor"],  # type: ignore[arg-type]
            max_seconds=node["backoff_max"],  # type: ignore[arg-type]
            jitter=self._policy.jitter,
        )

    # --- jobs
    async def submit_job(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
        assign: Sequence[tuple[str, int]] = (),
        lease_seconds: float = 0.0,
    ) -> SubmitResult:
        job_id = uuid.uuid4()
        nodes = node_rows(spec)
        owners = give_roots(nodes, offer_slots(assign), assign)

        async def body(tx: Tx) -> SubmitResult:
            digest = request_digest if idempotency_key else None
            done = await tx.insert_job(
                job_id, spec.name, idempotency_key, digest, nodes, lease_seconds
            )
            if done is None:  # the idempotency key is taken
                existing = await tx.job_by_idempotency_key(idempotency_key or "")
                if existing is None:  # pragma: no cover - the conflicting row is committed
                    raise Unavailable("idempotency key race, retry")
                if existing["request_digest"] != request_digest:
                    raise Conflict(
                        "this Idempotency-Key was used for a different request",
                        [Problem("/", f"job {existing['id']} was submitted with this key")],
                    )
                return SubmitResult(str(existing["id"]), created=False)
            created_at, inserted = done
            claimed = claimed_roots(spec, str(job_id), inserted, owners, len(assign))
            changes = Changes(self, tx)
            changes.queued.extend(queued_refs(inserted))
            keyed = sorted(
                r["id"] for r in inserted if r["state"] == "pending" and r["deps_pending"] == 0
            )
            await changes.admit_keyed(keyed)
            if keyed:  # cached roots may have unblocked more: count what really happened
                counts = {r["state"]: r["n"] for r in await tx.node_counts([job_id])}
            else:
                counts = collections.Counter(r["state"] for r in inserted)
            return SubmitResult(
                str(job_id),
                created=True,
                queued=tuple(sorted(changes.queued)),
                created_at=created_at,
                node_counts=dict(sorted(counts.items())),
                claimed=tuple(claimed),
            )

        # Without keyed roots (their admission takes more statements) a submission is one
        # statement in PostgreSQL: job, nodes and edges. A key conflict inserts nothing.
        return await self._write(body, single=not _keyed_roots(spec))

    async def submit_jobs(
        self,
        submissions: Sequence[Submission],
        *,
        assign: Sequence[tuple[str, int]] = (),
        lease_seconds: float = 0.0,
    ) -> list[SubmitResult | Exception]:
        results: list[SubmitResult | Exception | None] = [None] * len(submissions)
        # Keyed roots take more statements (their admission by key): those jobs go alone.
        together = [i for i, s in enumerate(submissions) if not _keyed_roots(s.spec)]
        if len(together) < 2:
            together = []
        if together:
            slots = offer_slots(assign)  # shared: the first jobs' roots take them first
            planned: list[tuple[int, uuid.UUID, list[Row], list[int | None]]] = []
            for i in together:
                nodes = node_rows(submissions[i].spec)
                planned.append((i, uuid.uuid4(), nodes, give_roots(nodes, slots, assign)))

            async def body(tx: Tx) -> list[tuple[datetime, list[Row]] | None]:
                jobs: list[NewJob] = []
                for i, job_id, nodes, _ in planned:
                    s = submissions[i]
                    digest = s.request_digest if s.idempotency_key else None
                    jobs.append((job_id, s.spec.name, s.idempotency_key, digest, nodes))
                return await tx.insert_jobs(jobs, lease_seconds)

            try:
                done = await self._write(body, single=True)
            except Unavailable:
                raise
            except Exception:
                log.warning(
                    "a batch of %d submissions failed; storing each alone",
                    len(planned),
                    exc_info=True,
                )
                done = [None] * len(planned)
            for (i, job_id, _, owners), inserted in zip(planned, done, strict=True):
                if inserted is None:  # its key was taken (or the batch failed): alone
                    continue
                spec = submissions[i].spec
                created_at, rows = inserted
                results[i] = SubmitResult(
                    str(job_id),
                    created=True,
                    queued=tuple(sorted(queued_refs(rows))),
                    created_at=created_at,
                    node_counts=dict(sorted(collections.Counter(r["state"] for r in rows).items())),
                    claimed=claimed_roots(spec, str(job_id), rows, owners, len(assign)),
                )
        # Alone: keyed roots, taken keys, or every job of a failed batch (so that only the
        # faulty one fails). The offers go to the first of them if no batch took them.
        offers = () if together else assign
        for i, s in enumerate(submissions):
            if results[i] is not None:
                continue
            try:
                results[i] = await self.submit_job(
                    s.spec,
                    idempotency_key=s.idempotency_key,
                    request_digest=s.request_digest,
                    assign=offers,
                    lease_seconds=lease_seconds,
                )
            except Unavailable:
                raise
            except Exception as exc:  # its own fault, whatever it is: the others stand
                results[i] = exc
            finally:
                offers = ()
        return [r for r in results if r is not None]

    async def get_job(self, job_id: str, *, include_nodes: bool = True) -> JobView:
        key = job_uuid(job_id)

        async def body(tx: Tx) -> JobView:
            job = await tx.get_job(key)
            if job is None:
                raise NotFound(f"no job {job_id}")
            counts = await _node_counts(tx, [job["id"]])
            nodes = await _job_nodes(tx, job["id"]) if include_nodes else ()
            return job_view(job, counts.get(job["id"], {}), nodes)

        return await self._read(body)

    async def list_jobs(
        self, *, limit: int, cursor: str | None = None, status: JobStatus | None = None
    ) -> JobPage:
        before_created, before_id = decode_cursor(cursor) if cursor else (None, None)

        async def body(tx: Tx) -> JobPage:
            rows = await tx.list_jobs(
                status.value if status else None, before_created, before_id, limit + 1
            )
            page, more = rows[:limit], len(rows) > limit
            counts = await _node_counts(tx, [r["id"] for r in page]) if page else {}
            jobs = tuple(job_view(r, counts.get(r["id"], {}), ()) for r in page)
            next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
            return JobPage(jobs, next_cursor)

        return await self._read(body)

    async def cancel_job(self, job_id: str) -> CancelResult:
        key = job_uuid(job_id)

        async def body(tx: Tx) -> tuple[tuple[TaskRef, ...], Changes]:
            changes = Changes(self, tx)
            if not await tx.request_cancel(key):
                job = await tx.job_status(key)
                if job is None:
                    raise NotFound(f"no job {job_id}")
                if job["status"] != JobStatus.RUNNING:
                    raise Conflict(f"job {job_id} already finished: {job['status']}")
                return (), changes  # cancel already requested: idempotent
            waiting = await tx.cancel_waiting_nodes(key)
            await changes.count_finished(key, finished=len(waiting), failed=0)
            for w in waiting:
                if w["idempotency_key"] is not None and w["state"] != "pending":
                    await changes.wake_key_waiters(w["idempotency_key"])
            withdrawn = tuple(
                TaskRef(w["id"], w["attempt"]) for w in waiting if w["state"] == "queued"
            )
            return withdrawn, changes

        withdrawn, changes = await self._write(body)
        return CancelResult(
            job=await self.get_job(job_id),
            withdrawn=withdrawn,
            queued=tuple(changes.queued),
            finished_jobs=tuple(changes.finished),
        )

    # --- attempts
    async def claim(
        self, worker_id: str, refs: Sequence[TaskRef], lease_seconds: float
    ) -> list[ClaimedTask]:
        if not refs:
            return []

        async def body(tx: Tx) -> list[ClaimedTask]:
            return await _claim(tx, worker_id, refs, lease_seconds)

        return await self._write(body, single=True)  # one statement in PostgreSQL

    async def release(self, worker_id: str, refs: Sequence[TaskRef]) -> list[TaskRef]:
        if not refs:
            return []

        async def body(tx: Tx) -> list[TaskRef]:
            return sorted(TaskRef(r["id"], r["attempt"]) for r in await tx.release(worker_id, refs))

        return await self._write(body, single=True)  # one statement in PostgreSQL

    async def heartbeat(
        self, worker_id: str, beats: Sequence[Beat], lease_seconds: float
    ) -> HeartbeatResult:
        grace = max(0.5, lease_seconds / 3)  # a claim reply may still be on its way

        async def body(tx: Tx) -> HeartbeatResult:
            rows = await tx.heartbeat(worker_id, beats, lease_seconds)
            changes = Changes(self, tx)
            for node in await tx.lock_unlisted(worker_id, beats, lease_seconds, grace):
                # Not the worker's any more: given back at once, not a whole lease later.
                await tx.record_attempt(given_up(node, Outcome.INTERRUPTED))
                await changes.after_failure(node, Outcome.INTERRUPTED)
            held = {TaskRef(r["id"], r["attempt"]): r["cancel"] for r in rows}
            cancel = tuple(ref for ref, c in held.items() if c)
            lost = tuple(b.ref for b in beats if b.ref not in held)
            return HeartbeatResult(
                cancel=cancel,
                lost=lost,
                queued=tuple(changes.queued),
                finished_jobs=tuple(changes.finished),
            )

        return await self._write(body)

    async def _succeed_and_hand(
        self, worker_id: str, params: list[Row], room: int, lease_seconds: float
    ) -> CompleteResult | None:
        """A report of successes alone in one round trip, where the backend has one (a chain
        step): record them, claim up to `room` of the children they unblock for the worker,
        finish jobs. None when it applied nothing: `complete`'s general path follows."""
        return None

    async def complete(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        *,
        want: int = 0,
        claim: Sequence[TaskRef] = (),
        lease_seconds: float = 0.0,
    ) -> CompleteResult:
        params = [result_params(worker_id, r) for r in results]
        if results and not claim and all(r.outcome is Outcome.SUCCEEDED for r in results):
            fast = await self._succeed_and_hand(worker_id, params, max(want, 0), lease_seconds)
            if fast is not None:
                return await self._complete_rest(worker_id, results, params, fast)
        return await self._complete(worker_id, results, params, want, claim, lease_seconds)

    async def _complete(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        params: list[Row],
        want: int,
        claim: Sequence[TaskRef],
        lease_seconds: float,
    ) -> CompleteResult:
        async def body(tx: Tx) -> CompleteResult:
            changes = Changes(self, tx)
            enqueued: list[datetime | None] = [None] * len(results)
            duplicate = [False] * len(results)
            wins = [i for i, r in enumerate(results) if r.outcome is Outcome.SUCCEEDED]
            if wins:
                recorded = await changes.succeed_running(worker_id, [params[i] for i in wins])
                for i in wins:
                    enqueued[i] = recorded.get(results[i].ref.node)
            for i, result in enumerate(results):
                if result.outcome is Outcome.SUCCEEDED:
                    if enqueued[i] is None:
                        duplicate[i] = await _recorded(tx, params[i], result)
                    continue
                node = await tx.lock_running(params[i])
                if node is None:
                    duplicate[i] = await _recorded(tx, params[i], result)
                    continue
                enqueued[i] = await tx.record_attempt({**params[i], "reason": result.outcome.value})
                await changes.after_failure(node, result.outcome)
            claimed: list[ClaimedTask] = []
            if want > 0 and claim:  # first in line: what the worker popped from the queue
                claimed = await _claim(tx, worker_id, claim[:want], lease_seconds)
            queued = sorted(changes.queued)
            room = want - len(claimed)
            if room > 0 and queued:
                # Hand the reporting worker what its results unblocked: same transaction,
                # same compare-and-set claim, no trip through the queue.
                handed = await _claim(tx, worker_id, queued[:room], lease_seconds)
                taken = {c.ref for c in handed}
                queued = [r for r in queued if r not in taken]
                claimed += handed
            return CompleteResult(
                enqueued_at=tuple(enqueued),
                queued=tuple(queued),
                finished_jobs=tuple(changes.finished),
                claimed=tuple(claimed),
                duplicate=tuple(duplicate),
            )

        return await self._write(body)

    async def _complete_rest(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        params: list[Row],
        done: CompleteResult,
    ) -> CompleteResult:
        """Results the one-statement path did not record (another transaction changed their
        node between its check and its update): the general path tells stale from duplicate."""
        rest = [i for i, e in enumerate(done.enqueued_at) if e is None]
        if not rest:
            return done
        more = await self._complete(
            worker_id, [results[i] for i in rest], [params[i] for i in rest], 0, (), 0.0
        )
        enqueued = list(done.enqueued_at)
        duplicate = [False] * len(results)
        for i, e, d in zip(rest, more.enqueued_at, more.duplicate, strict=True):
            enqueued[i], duplicate[i] = e, d
        return dataclasses.replace(
            done,
            enqueued_at=tuple(enqueued),
            duplicate=tuple(duplicate),
            queued=tuple(sorted((*done.queued, *more.queued))),
            finished_jobs=(*done.finished_jobs, *more.finished_jobs),
        )

    # --- sweeps
    async def requeue_due_retries(self, limit: int = 1000) -> list[TaskRef]:
        async def body(tx: Tx) -> list[TaskRef]:
            return sorted(
                TaskRef(r["id"], r["attempt"]) for r in await tx.requeue_due_retries(limit)
            )

        return await self._write(body)

    async def expire_leases(self, limit: int = 1000) -> SweepResult:
        async def body(tx: Tx) -> SweepResult:
            changes = Changes(self, tx)
            gone: dict[Outcome, list[GivenUp]] = {Outcome.LOST: [], Outcome.TIMEOUT: []}
            for node in await tx.lock_expired(limit):
                outcome = Outcome.TIMEOUT if node["overdue"] else Outcome.LOST
                await tx.record_attempt(given_up(node, outcome))
                await changes.after_failure(node, outcome)
                ref = TaskRef(node["id"], node["attempt"])
                gone[outcome].append(
                    GivenUp(ref, str(node["job_id"]), node["node_id"], node["worker_id"])
                )
            return SweepResult(
                lost=tuple(gone[Outcome.LOST]),
                timed_out=tuple(gone[Outcome.TIMEOUT]),
                queued=tuple(changes.queued),
                finished_jobs=tuple(changes.finished),
            )

        return await self._write(body)

    async def stats(self, *, worker_window_seconds: float) -> StoreStats:
        async def body(tx: Tx) -> StoreStats:
            r = await tx.stats(worker_window_seconds)
            return StoreStats(
                queued=r["queued"],
                running=r["running"],
                jobs_active=r["jobs_active"],
                workers_alive=r["workers_alive"],
                oldest_queued_age_seconds=max(0.0, r["oldest_queued_age"]),
            )

        return await self._read(body)

    async def queued_tasks(
        self,
        *,
        min_age_seconds: float = 0.0,
        limit: int = 100_000,
        after: tuple[datetime, int] | None = None,
    ) -> list[tuple[TaskRef, datetime]]:
        # A key before every row (not an optional condition): the page is then an index
        # range scan from `after` on, whatever page it is.
        after_at, after_id = after or (BEFORE_ALL, 0)

        async def body(tx: Tx) -> list[tuple[TaskRef, datetime]]:
            rows = await tx.queued_tasks(min_age_seconds, limit, after_at, after_id)
            return [(TaskRef(r["id"], r["attempt"]), r["enqueued_at"]) for r in rows]

        return await self._read(body)


class Changes:
    """The write path of one transaction: applies the domain's decisions and collects what
    the scheduler must act on after the commit (attempts to push, jobs that finished)."""

    def __init__(self, store: SqlStore, tx: Tx) -> None:
        self.store = store
        self.tx = tx
        self.queued: list[TaskRef] = []
        self.finished: list[FinishedJob] = []

    async def succeed_running(self, worker_id: str, params: list[Row]) -> dict[int, datetime]:
        """Record reported successes; the enqueue time of each one recorded (a result missing
        from the answer was stale or a duplicate)."""
        done = await self.tx.succeed_running(worker_id, params)
        if done is None:
            return {}
        await self._after_success(done)
        return dict(zip(done["recorded_ids"], done["recorded_at"], strict=True))

    async def _after_success(self, done: Succeeded) -> None:
        """Follow up on what successes unblocked, released and finished."""
        self.queued.extend(
            TaskRef(i, a) for i, a in zip(done["ready_ids"], done["ready_attempts"], strict=True)
        )
        await self.admit_keyed(done["keyed_ids"])
        for key in done["keys"]:
            await self.wake_key_waiters(key)
        await self.finish_jobs(
            zip(done["done_jobs"], done["done_failed"], done["done_cancelled"], strict=True)
        )

    async def admit_keyed(self, node_ids: Sequence[int]) -> None:
        """Ready nodes with an idempotency key: reuse a result, wait, or queue (domain rule)."""
        for node_id in node_ids:
            key = await self.tx.keyed_node(node_id)
            if key is None:
                continue
            await self.tx.lock_key(key)
            holders = await self.tx.key_holders(key, node_id)
            succeeded: int | None = holders["succeeded"]
            decision = admit_keyed(
                key_succeeded=succeeded is not None, key_in_flight=holders["in_flight"]
            )
            if decision == ReadyKeyed.CACHED and succeeded is not None:
                done = await self.tx.succeed_cached(node_id, succeeded)
                if done is not None:
                    await self._after_success(done)
            elif decision == ReadyKeyed.WAIT:
                await self.tx.wait_keyed(node_id)
            else:
                row = await self.tx.queue_keyed(node_id)
                if row is not None:
                    self.queued.append(TaskRef(row["id"], row["attempt"]))

    async def wake_key_waiters(self, key: str) -> None:
        """A node with this key reached a final state: decide again for those waiting on it."""
        await self.tx.lock_key(key)
        await self.admit_keyed(await self.tx.key_waiters(key))

    async def after_failure(self, node: LockedNode, outcome: Outcome) -> None:
        """Apply the state machine's decision for a failed attempt of a locked node."""
        decision = after_attempt(
            outcome,
            node["attempt"] - node["givebacks"],
            node["retries"] + 1,
            self.store.node_policy(node),
            job_cancelled=node["cancelled"],
            rng=self.store._rng,
        )
        if decision.state is NodeState.RETRY_WAIT:
            await self.tx.node_to_retry_wait(
                node["id"], decision.retry_delay or 0.0, decision.given_back
            )
            return
        await self.tx.node_to_final(node["id"], decision.state)
        below = 0
        if decision.state is NodeState.FAILED:
            below = await self.tx.cascade_upstream_failed(node["id"])
        await self.count_finished(
            node["job_id"],
            finished=1 + below,
            failed=1 if decision.state is NodeState.FAILED else 0,
        )
        if node["idempotency_key"] is not None:
            await self.wake_key_waiters(node["idempotency_key"])

    async def count_finished(self, job: JobKey, *, finished: int, failed: int) -> None:
        if finished == 0:
            return
        row = await self.tx.count_finished(job, finished, failed)
        if row is not None and row["nodes_unfinished"] == 0:
            await self.finish_job(row["id"], cancelled=row["cancelled"], failed=row["nodes_failed"])

    async def finish_job(self, job: JobKey, *, cancelled: bool, failed: int) -> None:
        await self.finish_jobs([(job, failed, cancelled)])

    async def finish_jobs(self, jobs: Iterable[tuple[JobKey, int, bool]]) -> None:
        """Final status for jobs left with no unfinished node, given as (job, failed nodes,
        cancel requested): one statement for the jobs a report's successes finished."""
        statuses = [
            (job, job_status_when_done(cancelled=cancelled, failed_nodes=failed))
            for job, failed, cancelled in jobs
        ]
        if not statuses:
            return
        durations = await self.tx.finish_jobs(statuses)
        for (job, status), duration in zip(statuses, durations, strict=True):
            if duration is not None:
                self.finished.append(FinishedJob(str(job), status, duration))


# --- steps used by several operations
async def _claim(
    tx: Tx, worker_id: str, refs: Sequence[TaskRef], lease_seconds: float
) -> list[ClaimedTask]:
    return [claimed_task(r) for r in await tx.claim(worker_id, refs, lease_seconds)]


def claimed_task(r: Row) -> ClaimedTask:
    """A claimed attempt as the store's claim statements return it."""
    return ClaimedTask(
        ref=TaskRef(r["id"], r["attempt"]),
        job_id=str(r["job_id"]),
        node_id=r["node_id"],
        command=r["command"],
        timeout_seconds=r["timeout_seconds"],
        env=tuple((k, v) for k, v in r["env"]),
        has_dependents=r["has_dependents"],
    )


async def _recorded(tx: Tx, params: Row, result: TaskResult) -> bool:
    """The report was already recorded (a retried delivery), not stale."""
    return await tx.already_recorded(params) == result.outcome.value


# --- reads
async def _node_counts(tx: Tx, jobs: list[JobKey]) -> dict[JobKey, dict[str, int]]:
    counts: dict[JobKey, dict[str, int]] = {}
    for r in await tx.node_counts(jobs):
        counts.setdefault(r["job_id"], {})[r["state"]] = r["n"]
    return counts


async def _job_nodes(tx: Tx, job: JobKey) -> tuple[NodeView, ...]:
    rows = await tx.job_nodes(job)
    attempts = await tx.job_attempts(job)
    sources = [r["cached_from"] for r in rows if r["cached_from"] is not None]
    reused = await tx.source_attempts(sources) if sources else []
    ahead: dict[int, int] = {}
    if any(r["state"] == "queued" for r in rows):
        ahead = {r["id"]: r["ahead"] for r in await tx.queue_positions(job)}
    return node_views(rows, attempts, reused, ahead)


def node_views(
    rows: list[Row], attempt_rows: list[Row], source_rows: list[Row], ahead: dict[int, int]
) -> tuple[NodeView, ...]:
    """Views of a job's nodes (rows of `Tx.job_nodes`) with their attempts and explanations."""
    attempts: dict[int, list[AttemptView]] = {}
    for a in attempt_rows:
        attempts.setdefault(a["node_id"], []).append(attempt_view(a))
    reused = {a["node_id"]: attempt_view(a) for a in source_rows}
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


def attempt_view(a: Row) -> AttemptView:
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


def job_view(row: Row, counts: dict[str, int], nodes: tuple[NodeView, ...]) -> JobView:
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


# --- parameters
def queued_refs(rows: list[Row]) -> list[TaskRef]:
    return [TaskRef(r["id"], r["attempt"]) for r in rows if r["state"] == "queued"]


def _keyed_roots(spec: JobSpec) -> bool:
    return any(n.idempotency_key and not n.depends_on for n in spec.nodes)


def node_rows(spec: JobSpec) -> list[Row]:
    """The nodes of a submission as `Tx.insert_job` takes them. Roots without an
    idempotency key are queued at once; keyed roots wait for admission by key."""
    return [
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
            "queue": n.ready_at_submission,
            "worker": None,  # set by `submit_job` for roots going to an idle worker's offer
        }
        for i, n in enumerate(spec.nodes)
    ]


def offer_slots(assign: Sequence[tuple[str, int]]) -> Iterator[int]:
    """Every slot of the offers, oldest offer first, as the index of its `assign` entry."""
    return iter([k for k, (_, n) in enumerate(assign) for _ in range(n)])


def give_roots(
    nodes: list[Row], slots: Iterator[int], assign: Sequence[tuple[str, int]]
) -> list[int | None]:
    """Idle workers' offers take the first ready roots, in order: sets each row's `worker`
    and returns `owners` (`owners[i]`: the `assign` entry node i goes to, if any)."""
    owners = [next(slots, None) if row["queue"] else None for row in nodes]
    for row, owner in zip(nodes, owners, strict=True):
        row["worker"] = assign[owner][0] if owner is not None else None
    return owners


def claimed_roots(
    spec: JobSpec, job_id: str, inserted: list[Row], owners: list[int | None], offers: int
) -> tuple[tuple[ClaimedTask, ...], ...]:
    """The roots `insert_job` claimed, per offer (`owners[i]`: node i's offer): built from the
    spec, which holds all a claim reply carries."""
    parents = {dep for n in spec.nodes for dep in n.depends_on}
    claimed: list[list[ClaimedTask]] = [[] for _ in range(offers)]
    for node, spec_node, owner in zip(inserted, spec.nodes, owners, strict=True):
        if owner is not None and node["state"] == "running":
            claimed[owner].append(
                ClaimedTask(
                    ref=TaskRef(node["id"], node["attempt"]),
                    job_id=job_id,
                    node_id=spec_node.id,
                    command=spec_node.command,
                    timeout_seconds=spec_node.timeout_seconds,
                    env=tuple(spec_node.env),
                    has_dependents=spec_node.id in parents,
                )
            )
    return tuple(tuple(c) for c in claimed)


def clean_text(text: str) -> str:
    """Output is stored as text, which cannot hold NUL in PostgreSQL; command output can."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def result_params(worker_id: str, r: TaskResult) -> Row:
    """Parameters of a reported result (`Tx.succeed_running`, `lock_running`, ...)."""
    return {
        "id": r.ref.node,
        "attempt": r.ref.attempt,
        "worker": worker_id,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "exit_code": r.exit_code,
        "stdout_tail": clean_text(r.stdout.tail),
        "stdout_bytes": r.stdout.total_bytes,
        "stderr_tail": clean_text(r.stderr.tail),
        "stderr_bytes": r.stderr.total_bytes,
    }


def given_up(node: LockedNode, outcome: Outcome) -> Row:
    """`Tx.record_attempt` parameters for an attempt the scheduler gave up on (no report)."""
    return {
        "id": node["id"],
        "attempt": node["attempt"],
        "started_at": None,
        "finished_at": None,  # the store's clock
        "exit_code": None,
        "reason": outcome.value,
        "stdout_tail": "",
        "stdout_bytes": 0,
        "stderr_tail": "",
        "stderr_bytes": 0,
    }


def job_uuid(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no job {job_id}") from None


def encode_cursor(created_at: datetime, job_id: JobKey) -> str:
    raw = json.dumps([created_at.isoformat(), str(job_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            "invalid cursor", [Problem("/cursor", "not a cursor we issued")]
        ) from exc
