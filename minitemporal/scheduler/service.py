"""The scheduler's operations, as the gRPC servicer calls them.

Every state change is the store's transaction; this layer validates, pushes what a commit made
ready to the queue (after the commit, never before), and counts. A failed push is harmless:
the node is durable as `queued` and the reconciler pushes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, datetime

from minitemporal.domain.changes import JobEvent
from minitemporal.domain.model import (
    Beat,
    ClaimedTask,
    FinishedJob,
    HeartbeatResult,
    JobPage,
    JobSpec,
    JobStatus,
    JobView,
    Outcome,
    Submission,
    SubmitResult,
    SweepResult,
    TaskRef,
    TaskResult,
)
from minitemporal.domain.validation import MAX_PAGE, Limits, parse_job
from minitemporal.errors import InvalidInput, MinitemporalError, Problem, Unavailable
from minitemporal.failpoints import Failpoints
from minitemporal.groupcommit import ALONE_NODES, BATCH_JOBS, BATCH_NODES, GroupCommit
from minitemporal.observability.metrics import SchedulerMetrics
from minitemporal.queue.base import TaskQueue
from minitemporal.scheduler.offers import Offers
from minitemporal.scheduler.watch import WatchHub
from minitemporal.store.base import Store

log = logging.getLogger("minitemporal.scheduler")


class SchedulerService:
    def __init__(
        self,
        store: Store,
        queue: TaskQueue,
        metrics: SchedulerMetrics,
        *,
        lease_seconds: float,
        limits: Limits,
        failpoints: Failpoints | None = None,
        watch: WatchHub | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.limits = limits
        self.failpoints = failpoints or Failpoints(None)
        # Told after every commit that may change a job (`poke`: O(1), no I/O).
        self.watch = watch or WatchHub(store)
        # Idle workers' offers of slots: new jobs' ready nodes go straight to them.
        self.offers = Offers()
        self._pushing: set[asyncio.Task[None]] = set()  # pushes that follow their reply
        # Group commit (see `groupcommit`): one batch in flight at a time, so that what arrives
        # meanwhile goes together; a submission that finds none in flight is stored at once. A
        # job of more than ALONE_NODES is stored on its own, beside the batches, so that it
        # holds up no small one.
        self._submit: GroupCommit[Submission, SubmitResult] = GroupCommit(
            self._store_submissions,
            max_items=BATCH_JOBS,
            max_weight=BATCH_NODES,
            weight=lambda s: len(s.spec.nodes),
        )

    def _push_later(self, refs: Sequence[TaskRef]) -> None:
        task = asyncio.get_running_loop().create_task(self.push(refs))
        self._pushing.add(task)
        task.add_done_callback(self._pushing.discard)

    async def push(self, refs: Sequence[TaskRef]) -> None:
        """Offer committed attempts to workers; on failure the reconciler will do it."""
        if not refs:
            return
        now = time.time()
        try:
            await self.queue.push([(r, now) for r in refs])
        except Unavailable as exc:
            log.warning("queue push failed, the reconciler will retry: %s", exc)

    # --- jobs
    async def submit_job(
        self, spec: JobSpec, *, idempotency_key: str | None, request_digest: str | None
    ) -> tuple[JobView, bool]:
        # The api validated already; validate again: gRPC callers are not all the api.
        spec = _revalidate(spec, self.limits)
        submission = Submission(spec, idempotency_key, request_digest)
        if len(spec.nodes) > ALONE_NODES:
            (result,) = await self._store_submissions([submission])
        else:
            result = await self._submit(submission)
        if isinstance(result, Exception):
            raise result
        return await self._answer(spec, result)

    async def submit_jobs(
        self, submissions: Sequence[Submission]
    ) -> list[tuple[JobView, bool] | Exception]:
        """Several submissions of one call (an api's batch): an answer per submission, as
        `submit_job` would give it (its view, or the error it would raise). The small ones
        wait together for the group commit, the large ones are stored beside them."""
        answers: list[tuple[JobView, bool] | Exception | None] = [None] * len(submissions)
        small: list[tuple[int, Submission]] = []
        large: list[tuple[int, Submission]] = []
        for i, s in enumerate(submissions):
            try:
                spec = _revalidate(s.spec, self.limits)
            except MinitemporalError as exc:
                answers[i] = exc
                continue
            lane = large if len(spec.nodes) > ALONE_NODES else small
            lane.append((i, Submission(spec, s.idempotency_key, s.request_digest)))
        stored: list[tuple[int, SubmitResult | BaseException]] = []
        if small:
            results = await self._submit.many([s for _, s in small])
            stored += zip([i for i, _ in small], results, strict=True)
        for i, s in large:
            stored += [(i, r) for r in await self._store_submissions([s])]
        for i, result in stored:
            if isinstance(result, SubmitResult):
                answers[i] = await self._answer(submissions[i].spec, result)
            elif isinstance(result, Exception):
                answers[i] = result
            else:  # cancelled: the caller is going away
                raise result
        return [a for a in answers if a is not None]

    async def _answer(self, spec: JobSpec, result: SubmitResult) -> tuple[JobView, bool]:
        if not result.created:
            return await self.store.get_job(result.job_id, include_nodes=False), False
        view = JobView(
            id=result.job_id,
            name=spec.name,
            status=JobStatus.RUNNING,
            created_at=result.created_at or datetime.now(UTC),
            finished_at=None,
            nodes_total=len(spec.nodes),
            node_counts=result.node_counts,
        )
        return view, True

    async def _store_submissions(self, batch: list[Submission]) -> list[SubmitResult | Exception]:
        """Store a batch in one transaction, hand the idle workers' offers what it claimed for
        them, push the rest."""
        ready = sum(n.ready_at_submission for s in batch for n in s.spec.nodes)
        offers = self.offers.take(ready)
        try:
            results = await self.store.submit_jobs(
                batch,
                assign=[(o.worker_id, o.slots) for o in offers],
                lease_seconds=self.lease_seconds,
            )
        except BaseException:
            self.offers.put_back(offers)
            raise
        self.metrics.submit_batch.observe(len(batch))
        created = [
            (s, r)
            for s, r in zip(batch, results, strict=True)
            if isinstance(r, SubmitResult) and r.created
        ]
        if not created:
            self.offers.put_back(offers)
            return results
        self.failpoints.hit("scheduler.after_submit_commit")
        # Answer the offers first: their workers start these while the rest is pushed.
        unused = []
        for k, offer in enumerate(offers):
            tasks = [t for _, r in created if k < len(r.claimed) for t in r.claimed[k]]
            if tasks:
                offer.answer(tasks)
                self.metrics.dispatched.labels("offer").inc(len(tasks))
            else:
                unused.append(offer)
        self.offers.put_back(unused)
        if len(unused) < len(offers):
            # Let the sessions send those answers before this one: a worker waits on them.
            await asyncio.sleep(0)
        self.watch.poke()
        self.metrics.jobs_submitted.inc(len(created))
        queued = [ref for _, r in created for ref in r.queued]
        self.metrics.dispatched.labels("queue").inc(len(queued))
        await self.push(queued)
        for s, r in created:
            log.info("job submitted", extra={"job_id": r.job_id, "nodes": len(s.spec.nodes)})
        return results

    async def get_job(self, job_id: str, *, include_nodes: bool = True) -> JobView:
        return await self.store.get_job(job_id, include_nodes=include_nodes)

    def watch_job(self, job_id: str) -> AsyncGenerator[JobEvent, None]:
        """The job, then its changes until it finished (`NotFound` first if there is none)."""
        return self.watch.watch(job_id)

    async def list_jobs(self, *, limit: int, cursor: str | None, status: str | None) -> JobPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(
                "bad limit", [Problem("/limit", f"must be between 1 and {MAX_PAGE}")]
            )
        try:
            wanted = JobStatus(status) if status else None
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise InvalidInput(
                "bad status", [Problem("/status", f"must be one of {choices}")]
            ) from None
        return await self.store.list_jobs(limit=limit, cursor=cursor, status=wanted)

    async def cancel_job(self, job_id: str) -> JobView:
        result = await self.store.cancel_job(job_id)
        self.watch.poke()
        # A stale queue entry is harmless (dropped at claim: the node is no longer queued).
        with contextlib.suppress(Unavailable):
            await self.queue.remove(result.withdrawn)
        await self.push(result.queued)
        self.record_finished(result.finished_jobs)
        log.info(
            "job cancel requested", extra={"job_id": job_id, "withdrawn": len(result.withdrawn)}
        )
        return result.job

    # --- attempts
    async def claim(self, worker_id: str, refs: Sequence[TaskRef]) -> list[ClaimedTask]:
        claimed = await self.store.claim(worker_id, refs, self.lease_seconds)
        if claimed:
            self.watch.poke()
        if len(claimed) < len(refs):
            self.metrics.claims_rejected.inc(len(refs) - len(claimed))
        return claimed

    async def offer(
        self,
        worker_id: str,
        slots: int,
        wait_seconds: float,
        deliver: Callable[[list[ClaimedTask]], None],
    ) -> None:
        """Stand an idle worker's offer of slots until it is answered through `deliver`
        (with the attempts a submission claimed for it, or empty)."""
        await self.offers.stand(worker_id, slots, wait_seconds, deliver)

    def withdraw_offer(self, worker_id: str) -> int:
        return self.offers.withdraw(worker_id)

    async def release(self, worker_id: str, refs: Sequence[TaskRef]) -> list[TaskRef]:
        """Queue again attempts a worker claimed ahead and did not start; they keep their
        place at the front of the queue (they were first in line when popped)."""
        released = await self.store.release(worker_id, refs)
        if released:
            self.watch.poke()
            with contextlib.suppress(Unavailable):  # the reconciler pushes them otherwise
                await self.queue.push([(r, 0.0) for r in released])
        return released

    async def heartbeat(self, worker_id: str, beats: Sequence[Beat]) -> HeartbeatResult:
        result = await self.store.heartbeat(worker_id, beats, self.lease_seconds)
        if beats or result.lost or result.queued or result.finished_jobs:  # start times, too
            self.watch.poke()
        if result.lost:
            self.metrics.reports_rejected.labels("heartbeat").inc(len(result.lost))
        await self.push(result.queued)
        self.record_finished(result.finished_jobs)
        return result

    async def complete(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        *,
        want: int = 0,
        claim: Sequence[TaskRef] = (),
    ) -> tuple[list[bool], list[ClaimedTask]]:
        outcome = await self.store.complete(
            worker_id, results, want=want, claim=claim, lease_seconds=self.lease_seconds
        )
        self.watch.poke()
        if claim:
            handed = {t.ref for t in outcome.claimed}
            lost = len(claim[:want]) - sum(r in handed for r in claim)
            if lost > 0:
                self.metrics.claims_rejected.inc(lost)
        if outcome.queued or outcome.claimed:
            self.failpoints.hit("scheduler.after_complete_commit")
        if outcome.claimed and outcome.queued:
            # The reporter waits on this reply to start what it was handed; the rest of a
            # fan-out (committed, a hint's worth to the queue) is pushed after it.
            self._push_later(outcome.queued)
        else:
            await self.push(outcome.queued)
        m = self.metrics
        accepted = outcome.accepted
        for result, enqueued_at, ok in zip(results, outcome.enqueued_at, accepted, strict=True):
            if enqueued_at is None:
                if not ok:
                    m.reports_rejected.labels("result").inc()
                continue  # stale, or a duplicate delivery already counted
            m.tasks_completed.labels(result.outcome.value).inc()
            if result.started_at is not None:
                latency = (result.started_at - enqueued_at).total_seconds()
                m.enqueue_to_start.observe(max(latency, 0.0))
                run = (result.finished_at - result.started_at).total_seconds()
                m.run_seconds.labels(result.outcome.value).observe(max(run, 0.0))
            if result.outcome in (Outcome.EXIT_CODE, Outcome.TIMEOUT, Outcome.LOST):
                m.failures.labels(result.outcome.value).inc()
        self.record_finished(outcome.finished_jobs)
        return list(accepted), list(outcome.claimed)

    async def record_lost(self, swept: SweepResult) -> None:
        """Count what the lease sweep gave up on and push what it made ready."""
        if swept.lost or swept.timed_out or swept.queued or swept.finished_jobs:
            self.watch.poke()
        m = self.metrics
        if swept.lost:
            m.failures.labels(Outcome.LOST.value).inc(len(swept.lost))
        if swept.timed_out:
            m.failures.labels(Outcome.TIMEOUT.value).inc(len(swept.timed_out))
        await self.push(swept.queued)
        self.record_finished(swept.finished_jobs)

    def record_finished(self, jobs: Sequence[FinishedJob]) -> None:
        for job in jobs:
            self.metrics.jobs_finished.labels(job.status.value).inc()
            self.metrics.job_duration.labels(job.status.value).observe(job.duration_seconds)
            log.info(
                "job finished",
                extra={
                    "job_id": job.job_id,
                    "status": job.status.value,
                    "seconds": round(job.duration_seconds, 3),
                },
            )


def _revalidate(spec: JobSpec, limits: Limits) -> JobSpec:
    raw = {
        "name": spec.name,
        "nodes": [
            {
                "id": n.id,
                "name": n.name,
                "command": n.command,
                "retries": n.retries,
                "timeout_seconds": n.timeout_seconds,
                "idempotency_key": n.idempotency_key,
                "depends_on": list(n.depends_on),
                "env": dict(n.env) or None,
                "retry_backoff": (
                    {
                        "base_seconds": n.backoff.base_seconds,
                        "factor": n.backoff.factor,
                        "max_seconds": n.backoff.max_seconds,
                    }
                    if n.backoff
                    else None
                ),
            }
            for n in spec.nodes
        ],
    }
    return parse_job(raw, limits)
