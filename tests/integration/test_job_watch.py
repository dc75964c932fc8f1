"""Watching a job over real gRPC, on both stores: the snapshot, each committed change pushed
at once (not at the poll interval), changes of another scheduler seen by polling, one re-read
shared by several watchers, NotFound before any message, and a stopping scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import grpc
import pytest
from grpc_health.v1._async import HealthServicer

from minitemporal.domain.changes import JobEvent
from minitemporal.domain.model import (
    JobSpec,
    JobStatus,
    NodeSpec,
    NodeState,
    Outcome,
    Output,
    RetryPolicy,
    TaskRef,
    TaskResult,
)
from minitemporal.domain.validation import Limits
from minitemporal.errors import NotFound, Unavailable
from minitemporal.observability.metrics import Metrics
from minitemporal.queue.memory import MemoryQueue
from minitemporal.rpc.client import JobWatch, SchedulerClient
from minitemporal.rpc.server import build_server
from minitemporal.scheduler.service import SchedulerService
from minitemporal.scheduler.watch import WatchHub
from minitemporal.store.base import Store
from tests.support.services import free_port

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(base_seconds=0.0, factor=1.0, max_seconds=0.0, jitter=0.0)
SLOW_POLL = 60.0  # far beyond any wait below: what arrives sooner was pushed by a poke


@dataclass
class Scheduler:
    service: SchedulerService
    hub: WatchHub
    client: SchedulerClient
    server: grpc.aio.Server


@pytest.fixture(params=["postgres", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    if request.param == "postgres":
        from minitemporal.store.postgres import PostgresStore

        url = request.getfixturevalue("database_url")
        return lambda: PostgresStore(url, retry_policy=FAST, pool_size=4)
    from minitemporal.store.sqlite import SqliteStore

    path = str(tmp_path / "store.db")
    return lambda: SqliteStore(path, retry_policy=FAST)


@pytest.fixture
async def scheduler(make_store: Callable[[], Store]) -> AsyncIterator[Scheduler]:
    store = make_store()
    await store.open()
    hub = WatchHub(store, poll_seconds=SLOW_POLL)
    service = SchedulerService(
        store, MemoryQueue(), Metrics().scheduler, lease_seconds=15, limits=Limits(), watch=hub
    )
    port = free_port()
    server, _ = build_server(
        service, Metrics().grpc, HealthServicer(), secret="s", address=f"127.0.0.1:{port}"
    )
    await server.start()
    client = SchedulerClient(f"127.0.0.1:{port}", metrics=Metrics().grpc, secret="s", timeout=5)
    yield Scheduler(service, hub, client, server)
    await client.close()
    await hub.close()
    await server.stop(grace=None)
    await store.close()


def done(ref: TaskRef) -> TaskResult:
    now = datetime.now(UTC)
    return TaskResult(ref, Outcome.SUCCEEDED, 0, now, now, Output("ok\n", 3), Output())


async def next_event(watch: JobWatch, seconds: float = 10.0) -> JobEvent:
    with anyio.fail_after(seconds):
        return await anext(watch)


async def until(watch: JobWatch, check: Callable[[JobEvent], bool]) -> list[JobEvent]:
    """Events up to and including the first that passes `check` (fails after 10 s)."""
    seen = []
    while True:
        event = await next_event(watch)
        seen.append(event)
        if check(event):
            return seen


async def watched(hub: WatchHub, jobs: int) -> None:
    """Wait until the hub re-reads this many jobs (fails after 10 s)."""
    deadline = anyio.current_time() + 10
    while hub.watched != jobs:
        assert anyio.current_time() < deadline, f"{hub.watched} jobs watched, not {jobs}"
        await anyio.sleep(0.02)


def state_of(event: JobEvent, node_id: str) -> NodeState | None:
    return next((n.state for n in event.nodes if n.id == node_id), None)


async def test_snapshot_then_every_committed_change(scheduler: Scheduler) -> None:
    s = scheduler.service
    res = await s.store.submit_job(
        JobSpec("w", (NodeSpec("a", "true"), NodeSpec("b", "true", depends_on=("a",))))
    )
    first, watch = await scheduler.client.watch_job(res.job_id)
    assert first.snapshot and first.job.id == res.job_id and not first.finished
    assert [(n.id, n.state) for n in first.job.nodes] == [
        ("a", NodeState.QUEUED),
        ("b", NodeState.PENDING),
    ]

    [a] = await s.claim("w1", res.queued)
    events = await until(watch, lambda e: state_of(e, "a") is NodeState.RUNNING)
    assert not any(e.snapshot for e in events)
    assert events[-1].summary_changed and events[-1].job.node_counts["running"] == 1
    assert events[-1].job.nodes == (), "a change carries the summary, not every node"

    _, claimed = await s.complete("w1", [done(a.ref)], want=1)
    events = await until(watch, lambda e: state_of(e, "b") is NodeState.RUNNING)
    assert NodeState.SUCCEEDED in {state_of(e, "a") for e in events}
    [b] = claimed
    await s.complete("w1", [done(b.ref)])
    events = await until(watch, lambda e: e.finished)
    last = events[-1]
    assert last.job.status is JobStatus.SUCCEEDED and state_of(last, "b") is NodeState.SUCCEEDED
    assert [n.attempts[0].stdout.tail for n in last.nodes] == ["ok\n"]
    with anyio.fail_after(10):
        assert [e async for e in watch] == [], "the stream ends after the job finished"
    await watched(scheduler.hub, 0)


async def test_a_finished_job_is_a_snapshot_and_the_end(scheduler: Scheduler) -> None:
    s = scheduler.service
    res = await s.store.submit_job(JobSpec("f", (NodeSpec("a", "true"),)))
    [a] = await s.claim("w1", res.queued)
    await s.complete("w1", [done(a.ref)])
    first, watch = await scheduler.client.watch_job(res.job_id)
    assert first.snapshot and first.finished and first.job.status is JobStatus.SUCCEEDED
    with anyio.fail_after(10):
        assert [e async for e in watch] == []
    assert scheduler.hub.watched == 0


@pytest.mark.parametrize("job_id", ["3f8e4b8a-1d2c-4e5f-8a9b-0c1d2e3f4a5b", "not-a-uuid", ""])
async def test_no_such_job_fails_before_any_message(scheduler: Scheduler, job_id: str) -> None:
    with pytest.raises(NotFound):
        await scheduler.client.watch_job(job_id)
    assert scheduler.hub.watched == 0


async def test_watchers_share_one_reread_and_see_the_same_changes(scheduler: Scheduler) -> None:
    s = scheduler.service
    res = await s.store.submit_job(JobSpec("shared", (NodeSpec("a", "true"),)))
    watches = [(await scheduler.client.watch_job(res.job_id))[1] for _ in range(3)]
    [a] = await s.claim("w1", res.queued)
    for watch in watches:
        await until(watch, lambda e: state_of(e, "a") is NodeState.RUNNING)
    assert scheduler.hub.watched == 1
    await s.complete("w1", [done(a.ref)])
    for watch in watches:
        assert (await until(watch, lambda e: e.finished))[-1].job.status is JobStatus.SUCCEEDED


async def test_a_watcher_that_leaves_stops_the_rereads(scheduler: Scheduler) -> None:
    res = await scheduler.service.store.submit_job(JobSpec("gone", (NodeSpec("a", "true"),)))
    _, watch = await scheduler.client.watch_job(res.job_id)
    await watched(scheduler.hub, 1)
    watch.cancel()
    await watched(scheduler.hub, 0)


async def test_changes_of_another_scheduler_are_seen_by_polling(
    make_store: Callable[[], Store], scheduler: Scheduler
) -> None:
    """Another scheduler commits on the same database: no poke reaches this one's hub."""
    scheduler.hub.poll_seconds = 0.2
    other = make_store()
    await other.open()
    try:
        res = await other.submit_job(JobSpec("elsewhere", (NodeSpec("a", "true"),)))
        _, watch = await scheduler.client.watch_job(res.job_id)
        [a] = await other.claim("w9", res.queued, 15)
        await until(watch, lambda e: state_of(e, "a") is NodeState.RUNNING)
        await other.complete("w9", [done(a.ref)])
        assert (await until(watch, lambda e: e.finished))[-1].job.status is JobStatus.SUCCEEDED
    finally:
        await other.close()


async def test_a_stopping_scheduler_ends_its_watches_unavailable(scheduler: Scheduler) -> None:
    res = await scheduler.service.store.submit_job(JobSpec("stop", (NodeSpec("a", "true"),)))
    _, watch = await scheduler.client.watch_job(res.job_id)
    await watched(scheduler.hub, 1)
    with anyio.fail_after(10):
        await scheduler.hub.close()
    with pytest.raises(Unavailable):
        await next_event(watch)
    with pytest.raises(Unavailable):
        await scheduler.client.watch_job(res.job_id)


async def test_no_watcher_costs_nothing(scheduler: Scheduler) -> None:
    s = scheduler.service
    res = await s.store.submit_job(JobSpec("quiet", (NodeSpec("a", "true"),)))
    [a] = await s.claim("w1", res.queued)
    await s.complete("w1", [done(a.ref)])
    assert scheduler.hub.watched == 0
