"""The scheduler's queue reconciliation against PostgreSQL and Redis: a periodic pass reads
the oldest page and pages on only while it finds attempts missing from the queue; a rebuild
of a lost queue pushes every queued attempt, page after page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from minitemporal.domain.model import JobSpec, NodeSpec, RetryPolicy, TaskRef
from minitemporal.domain.validation import Limits
from minitemporal.observability.metrics import Metrics
from minitemporal.queue.redis import RedisQueue
from minitemporal.scheduler.maintenance import Maintenance
from minitemporal.scheduler.service import SchedulerService
from minitemporal.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio
PAGE = 3


@pytest.fixture
async def service(
    database_url: str, redis_server_url: str, redis_prefix: str
) -> AsyncIterator[SchedulerService]:
    store = PostgresStore(database_url, retry_policy=RetryPolicy())
    queue = RedisQueue(redis_server_url, prefix=redis_prefix)
    await store.open()
    await queue.open()
    yield SchedulerService(store, queue, Metrics().scheduler, lease_seconds=15, limits=Limits())
    await queue.close()
    await store.close()


@pytest.fixture
def maintenance(service: SchedulerService) -> Maintenance:
    return Maintenance(
        service, sweep_seconds=1, reconcile_seconds=5, reconcile_page=PAGE, rebuild_page=PAGE
    )


@pytest.fixture
def ready_key(redis_server_url: str, redis_prefix: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_server_url)
    yield client, f"{redis_prefix}:ready"
    client.close()


async def backlog(service: SchedulerService, jobs: int) -> list[TaskRef]:
    """`jobs` one-node jobs, queued and pushed as the scheduler does; oldest first."""
    for i in range(jobs):
        _, created = await service.submit_job(
            JobSpec(f"j{i}", (NodeSpec("a", "true", name="a"),)),
            idempotency_key=None,
            request_digest=None,
        )
        assert created
    queued = [ref for ref, _ in await service.store.queued_tasks()]
    assert len(queued) == jobs
    return queued


def in_queue(ready_key: tuple[redis.Redis, str], refs: list[TaskRef]) -> list[bool]:
    client, key = ready_key
    return [client.zscore(key, r.encode()) is not None for r in refs]


def drop(ready_key: tuple[redis.Redis, str], refs: list[TaskRef]) -> None:
    client, key = ready_key
    assert client.zrem(key, *(r.encode() for r in refs)) == len(refs)


async def test_periodic_pass_pages_on_while_it_finds_missing_attempts(
    service: SchedulerService, maintenance: Maintenance, ready_key: tuple[redis.Redis, str]
) -> None:
    refs = await backlog(service, 8)
    assert all(in_queue(ready_key, refs))
    assert await maintenance.reconcile(min_age=0, why="test") == 0

    # A worker popped the four oldest and died before claiming them: the first page is all
    # missing, the second holds the fourth, the third finds nothing.
    drop(ready_key, refs[:4])
    assert await maintenance.reconcile(min_age=0, why="test") == 4
    assert all(in_queue(ready_key, refs))


async def test_missing_attempt_behind_the_oldest_page_is_found_when_it_reaches_it(
    service: SchedulerService, maintenance: Maintenance, ready_key: tuple[redis.Redis, str]
) -> None:
    refs = await backlog(service, 8)
    drop(ready_key, [refs[6]])  # e.g. a scheduler killed between its commit and its push
    assert await maintenance.reconcile(min_age=0, why="test") == 0, "one page, none missing"
    assert in_queue(ready_key, refs) == [True] * 6 + [False, True]

    # The workers take the five oldest; the lost one is now in the oldest page.
    claimed = await service.store.claim("w", refs[:5], 30)
    assert [c.ref for c in claimed] == refs[:5]
    drop(ready_key, refs[:5])
    assert await maintenance.reconcile(min_age=0, why="test") == 1
    client, key = ready_key
    order = [m.decode() for m in client.zrange(key, 0, -1)]
    assert order == [r.encode() for r in refs[5:]], "back in its place: by its enqueue time"


async def test_rebuild_pushes_every_queued_attempt_page_after_page(
    service: SchedulerService, maintenance: Maintenance, ready_key: tuple[redis.Redis, str]
) -> None:
    refs = await backlog(service, 8)
    drop(ready_key, refs)  # what FLUSHALL does to the ready set
    assert await maintenance.reconcile(min_age=0, why="test", rebuild=True) == 8
    assert all(in_queue(ready_key, refs))
    # A periodic pass would not have: it stops after the oldest page, which is complete.
    drop(ready_key, refs[PAGE:])
    assert await maintenance.reconcile(min_age=0, why="test") == 0
    assert in_queue(ready_key, refs) == [True] * PAGE + [False] * (8 - PAGE)
