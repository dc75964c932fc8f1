"""The Redis queue against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis

from minitemporal.domain.model import TaskRef
from minitemporal.queue.redis import RedisQueue

pytestmark = pytest.mark.anyio


@pytest.fixture
async def queue(redis_server_url: str, redis_prefix: str) -> AsyncIterator[RedisQueue]:
    q = RedisQueue(redis_server_url, prefix=redis_prefix)
    await q.open()
    yield q
    await q.close()


async def test_push_is_idempotent_and_pop_is_ordered(queue: RedisQueue) -> None:
    refs = [TaskRef(i, 1) for i in range(5)]
    assert await queue.push([(r, float(10 - i)) for i, r in enumerate(refs)]) == 5
    assert await queue.push([(refs[0], 0.0)]) == 0, "already there: keeps its place"
    assert await queue.depth() == 5
    assert await queue.pop(2, 1.0) == [refs[4], refs[3]]
    assert await queue.pop(10, 1.0) == [refs[2], refs[1], refs[0]]
    assert await queue.pop(1, 0.1) == []


async def test_blocking_pop_wakes_on_push(queue: RedisQueue) -> None:
    got: list[TaskRef] = []

    async def consumer() -> None:
        got.extend(await queue.pop(4, 5.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer)
        await anyio.sleep(0.2)
        await queue.push([(TaskRef(7, 2), 1.0)])
    assert got == [TaskRef(7, 2)]


async def test_remove_and_junk_members(
    queue: RedisQueue, redis_server_url: str, redis_prefix: str
) -> None:
    await queue.push([(TaskRef(1, 1), 1.0), (TaskRef(2, 1), 2.0)])
    await queue.remove([TaskRef(1, 1)])
    client = redis.Redis.from_url(redis_server_url)
    client.zadd(f"{redis_prefix}:ready", {"rm -rf /": 0.5, "3:x": 0.6})
    client.close()
    assert await queue.pop(10, 1.0) == [TaskRef(2, 1)], "junk is dropped, never run"


async def test_epoch_marker_detects_a_flush(
    queue: RedisQueue, redis_server_url: str, redis_prefix: str
) -> None:
    assert await queue.claim_epoch() is True, "first start: rebuild"
    assert await queue.claim_epoch() is False
    client = redis.Redis.from_url(redis_server_url)
    client.delete(f"{redis_prefix}:epoch")  # what FLUSHALL does to our keys
    client.close()
    assert await queue.claim_epoch() is True
