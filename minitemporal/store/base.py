"""The store interface, at the level of domain operations.

A backend implements what an operation means (claim these attempts, record these results and
queue what they unblock), not SQL text, so the embedded backend is not a SQL emulator. Every
state change is one transaction fenced by the node's current attempt number. Backends take
their decisions about retries and job status from `minitemporal.domain.states`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from minitemporal.domain.model import (
    Beat,
    CancelResult,
    ClaimedTask,
    CompleteResult,
    HeartbeatResult,
    JobPage,
    JobSpec,
    JobStatus,
    JobView,
    StoreStats,
    Submission,
    SubmitResult,
    SweepResult,
    TaskRef,
    TaskResult,
)


class Store(abc.ABC):
    """Durable state of jobs, nodes and attempts."""

    kind = "store"  # what health checks and logs call it: "postgresql", "sqlite"

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or upgrade the schema (idempotent, safe to run concurrently)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise `Unavailable` unless the store answers a trivial query."""

    # --- jobs
    @abc.abstractmethod
    async def submit_job(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
        assign: Sequence[tuple[str, int]] = (),
        lease_seconds: float = 0.0,
    ) -> SubmitResult:
        """Store the job and its nodes, and queue its root nodes, in one transaction.

        With an idempotency key already used: the same digest returns the existing job
        (created=False); a different digest raises `Conflict`.

        `assign`: (worker, slots) pairs, idle workers' offers. In the same transaction the
        first ready roots are claimed for them, in order (as `claim` would); the rest queued.
        """

    @abc.abstractmethod
    async def submit_jobs(
        self,
        submissions: Sequence[Submission],
        *,
        assign: Sequence[tuple[str, int]] = (),
        lease_seconds: float = 0.0,
    ) -> list[SubmitResult | Exception]:
        """Several submissions, as `submit_job` would store each, committed together where
        they can be (group commit): one durable commit instead of one per job.

        A result per submission, in order: its `SubmitResult`, or the exception `submit_job`
        would have raised for it alone (`Conflict` for a reused key); one submission's error
        does not fail the others. `assign` is shared: the offers take the first ready roots of
        the jobs, in order. An outage raises `Unavailable` for all.
        """

    @abc.abstractmethod
    async def get_job(self, job_id: str, *, include_nodes: bool = True) -> JobView:
        """The job with every node and attempt; `NotFound` if there is none."""

    @abc.abstractmethod
    async def list_jobs(
        self, *, limit: int, cursor: str | None = None, status: JobStatus | None = None
    ) -> JobPage:
        """Newest first; `cursor` is opaque, from a previous page."""

    @abc.abstractmethod
    async def cancel_job(self, job_id: str) -> CancelResult:
        """Cancel waiting nodes now; running attempts are cancelled through heartbeats.

        Idempotent while the job runs; `Conflict` once it finished, `NotFound` if none.
        """

    # --- attempts
    @abc.abstractmethod
    async def claim(
        self, worker_id: str, refs: Sequence[TaskRef], lease_seconds: float
    ) -> list[ClaimedTask]:
        """queued -> running for each ref whose attempt is still current and queued.

        Refs that are stale, already claimed or cancelled are left out of the answer.
        """

    @abc.abstractmethod
    async def release(self, worker_id: str, refs: Sequence[TaskRef]) -> list[TaskRef]:
        """running -> queued, same attempt, as if never claimed: attempts this worker holds
        but never started (it prefetched them, then did not need them). Returns those
        released, to push to the queue again; an attempt that started is left alone."""

    @abc.abstractmethod
    async def heartbeat(
        self, worker_id: str, beats: Sequence[Beat], lease_seconds: float
    ) -> HeartbeatResult:
        """Extend the leases this worker still holds; say which to cancel or drop."""

    @abc.abstractmethod
    async def complete(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        *,
        want: int = 0,
        claim: Sequence[TaskRef] = (),
        lease_seconds: float = 0.0,
    ) -> CompleteResult:
        """Record finished attempts; queue the downstream nodes they unblock, atomically.

        A result whose attempt is not the node's current running attempt held by this worker
        is rejected (accepted=False) and changes nothing. In the same transaction, for this
        worker's `want` free slots: the refs of `claim` (popped from the queue) are claimed
        first, then attempts these results made ready (`claimed`); the rest of those are
        returned in `queued` for the queue.
        """

    # --- background sweeps (safe with several schedulers at once)
    @abc.abstractmethod
    async def requeue_due_retries(self, limit: int = 1000) -> list[TaskRef]:
        """retry_wait -> queued (next attempt number) for nodes whose backoff has passed."""

    @abc.abstractmethod
    async def expire_leases(self, limit: int = 1000) -> SweepResult:
        """Running attempts whose lease ran out are lost, and those past their deadline
        (timeout plus one lease) timed out: retry or fail them."""

    async def refresh_statistics(self) -> list[str]:
        """Bring the planner's statistics of tables that changed much since they were last
        analyzed up to date; the names of those refreshed. Nothing where the backend needs
        nothing."""
        return []

    @abc.abstractmethod
    async def stats(self, *, worker_window_seconds: float) -> StoreStats:
        """Counts for the gauges; a worker is alive if it heartbeated within the window."""

    @abc.abstractmethod
    async def queued_tasks(
        self,
        *,
        min_age_seconds: float = 0.0,
        limit: int = 100_000,
        after: tuple[datetime, int] | None = None,
    ) -> list[tuple[TaskRef, datetime]]:
        """Queued attempts at least this old (by the store's clock) with their enqueue times,
        oldest first (by enqueue time, then node): to rebuild the queue. `after`: the enqueue
        time and node of the last one of the previous page; this page starts past it."""
