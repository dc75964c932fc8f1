"""The queue interface's conformance suite, run against every backend (Redis, in-process).

What only one backend can suffer is simulated through `QueueBackend`: losing the contents
(FLUSHALL or a restart of Redis; a restart of the process for the in-process queue) and junk
written behind the queue's back (Redis is shared; an in-process heap only ever holds refs).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest
import redis

from minitemporal.domain.model import TaskRef
from minitemporal.queue.base import TaskQueue
from minitemporal.queue.memory import MemoryQueue
from minitemporal.queue.redis import RedisQueue

pytestmark = pytest.mark.anyio


@dataclass
class QueueBackend:
    queue: TaskQueue
    lose_contents: Callable[[], Awaitable[TaskQueue]]  # returns the queue to use afterwards
    write_junk: Callable[[dict[str, float]], None]


@pytest.fixture(params=["redis", "memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    if request.param == "memory":
        queue = MemoryQueue()
        await queue.open()

        async def restart() -> TaskQueue:
            await queue.close()
            fresh = MemoryQueue()
            await fresh.open()
            return fresh

        yield QueueBackend(queue, restart, lambda members: None)
        await queue.close()
        return
    url = request.getfixturevalue("redis_server_url")
    prefix = request.getfixturevalue("redis_prefix")
    rqueue = RedisQueue(url, prefix=prefix)
    await rqueue.open()

    async def flush() -> TaskQueue:
        client = redis.Redis.from_url(url)
        client.delete(f"{prefix}:ready", f"{prefix}:epoch")  # what FLUSHALL does to our keys
        client.close()
        return rqueue

    def junk(members: dict[str, float]) -> None:
        client = redis.Redis.from_url(url)
        client.zadd(f"{prefix}:ready", members)
        client.close()

    yield QueueBackend(rqueue, flush, junk)
    await rqueue.close()


@pytest.fixture
def queue(backend: QueueBackend) -> TaskQueue:
    return backend.queue


async def test_push_is_idempotent_and_pop_is_ordered(queue: TaskQueue) -> None:
    refs = [TaskRef(i, 1) for i in range(5)]
    assert await queue.push([(r, float(10 - i)) for i, r in enumerate(refs)]) == 5
    assert await queue.push([(refs[0], 0.0)]) == 0, "already there: keeps its place"
    assert await queue.depth() == 5
    assert await queue.pop(2, 1.0) == [refs[4], refs[3]]
    assert await queue.pop(10, 1.0) == [refs[2], refs[1], refs[0]]
    assert await queue.pop(1, 0.1) == []


async def test_blocking_pop_wakes_on_push(queue: TaskQueue) -> None:
    got: list[TaskRef] = []

    async def consumer() -> None:
        got.extend(await queue.pop(4, 5.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.2)
        await queue.push([(TaskRef(7, 2), 1.0)])
    assert got == [TaskRef(7, 2)]


async def test_remove_and_junk_members(backend: QueueBackend, queue: TaskQueue) -> None:
    await queue.push([(TaskRef(1, 1), 1.0), (TaskRef(2, 1), 2.0)])
    await queue.remove([TaskRef(1, 1)])
    backend.write_junk({"rm -rf /": 0.5, "3:x": 0.6})
    assert await queue.pop(10, 1.0) == [TaskRef(2, 1)], "junk is dropped, never run"


async def test_epoch_marker_detects_a_flush(backend: QueueBackend, queue: TaskQueue) -> None:
    assert await queue.claim_epoch() is True, "first start: rebuild"
    assert await queue.claim_epoch() is False
    await queue.push([(TaskRef(1, 1), 1.0)])
    queue = await backend.lose_contents()
    assert await queue.claim_epoch() is True
    assert await queue.claim_epoch() is False
    assert await queue.depth() == 0
    assert await queue.push([(TaskRef(1, 1), 1.0)]) == 1, "rebuilt by pushing again"


# --- cases added with the second backend


async def test_push_nothing_and_remove_nothing(queue: TaskQueue) -> None:
    assert await queue.push([]) == 0
    await queue.remove([])
    await queue.remove([TaskRef(99, 1)])  # not there: no error
    assert await queue.depth() == 0


async def test_depth_follows_push_remove_and_pop(queue: TaskQueue) -> None:
    await queue.push([(TaskRef(i, 1), float(i)) for i in range(3)])
    await queue.remove([TaskRef(0, 1)])
    assert await queue.depth() == 2
    assert await queue.pop(1, 1.0) == [TaskRef(1, 1)]
    assert await queue.depth() == 1
    assert await queue.push([(TaskRef(1, 1), 5.0)]) == 1, "a popped ref may come back"


async def test_a_ref_pushed_again_after_removal_takes_its_new_place(queue: TaskQueue) -> None:
    await queue.push([(TaskRef(1, 1), 1.0), (TaskRef(2, 1), 2.0)])
    await queue.remove([TaskRef(1, 1)])
    assert await queue.push([(TaskRef(1, 1), 3.0)]) == 1
    assert await queue.pop(10, 1.0) == [TaskRef(2, 1), TaskRef(1, 1)]
    assert await queue.depth() == 0


async def test_attempts_of_one_node_are_distinct_members(queue: TaskQueue) -> None:
    assert await queue.push([(TaskRef(5, 1), 1.0), (TaskRef(5, 2), 2.0)]) == 2
    assert await queue.pop(10, 1.0) == [TaskRef(5, 1), TaskRef(5, 2)]


async def test_one_push_wakes_every_waiting_consumer(queue: TaskQueue) -> None:
    got: dict[int, tuple[list[TaskRef], float]] = {}

    async def consumer(name: int) -> None:
        start = time.monotonic()
        got[name] = (await queue.pop(1, 5.0), time.monotonic() - start)

    async with anyio.create_task_group() as tg:
        for name in range(2):
            tg.start_soon(consumer, name)
        await anyio.sleep(0.2)
        await queue.push([(TaskRef(1, 1), 1.0), (TaskRef(2, 1), 2.0)])
    assert sorted(ref for refs, _ in got.values() for ref in refs) == [TaskRef(1, 1), TaskRef(2, 1)]
    assert all(waited < 2.0 for _, waited in got.values()), got


async def test_pop_waits_no_longer_than_its_timeout(queue: TaskQueue) -> None:
    start = time.monotonic()
    assert await queue.pop(5, 0.3) == []
    assert 0.2 < time.monotonic() - start < 2.0


async def test_pop_with_no_timeout_takes_what_is_there(queue: TaskQueue) -> None:
    start = time.monotonic()
    assert await queue.pop(5, 0) == [], "timeout 0: do not wait (BZMPOP's 0 is forever)"
    await queue.push([(TaskRef(1, 1), 1.0), (TaskRef(2, 1), 2.0)])
    assert await queue.pop(1, 0) == [TaskRef(1, 1)]
    assert time.monotonic() - start < 1.0


async def test_every_backend_names_its_kind(queue: TaskQueue) -> None:
    assert queue.kind in ("redis", "in-process queue")


async def test_a_wake_ends_a_waiting_pop_early_and_empty(backend: QueueBackend) -> None:
    q = backend.queue
    async with anyio.create_task_group() as tg:
        got: list[list[TaskRef]] = []

        async def pop() -> None:
            got.append(await q.pop(3, 10.0, wake="w1"))

        start = time.monotonic()
        tg.start_soon(pop)
        await anyio.sleep(0.1)
        await q.wake("w2")  # someone else's alarm: not ours
        await anyio.sleep(0.1)
        assert got == []
        await q.wake("w1")
    assert got == [[]] and time.monotonic() - start < 5, "ended by the alarm, not the timeout"
    await q.wake("w1")  # an alarm with no pop waiting ends the next one at once
    start = time.monotonic()
    assert await q.pop(3, 10.0, wake="w1") == []
    assert time.monotonic() - start < 5
    await q.push([(TaskRef(1, 1), 1.0)])
    await q.wake("w1")
    assert await q.pop(3, 10.0, wake="w1") == [TaskRef(1, 1)], "queued work wins over an alarm"
    assert await q.pop(3, 10.0, wake="w1") == [], "the alarm is still there for the next pop"
    start = time.monotonic()
    assert await q.pop(3, 0.3, wake="w1") == []
    assert time.monotonic() - start > 0.2, "and then gone: this pop waits out its time"


async def test_an_alarm_no_pop_takes_expires(redis_server_url: str, redis_prefix: str) -> None:
    q = RedisQueue(redis_server_url, prefix=redis_prefix)
    await q.open()
    try:
        await q.wake("gone-worker")  # its worker stopped: nobody pops this alarm
        client = redis.Redis.from_url(redis_server_url)
        ttl = client.ttl(f"{redis_prefix}:wake:gone-worker")
        client.close()
        assert 0 < ttl <= 60, ttl
    finally:
        await q.close()
