"""Redis backend: one sorted set (member "node:attempt", score = enqueue time) and a marker key.

BZMPOP takes up to N members in one blocking round trip. The marker key disappears with
FLUSHALL or a restart of a Redis that keeps nothing, which tells the scheduler to rebuild.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from minitemporal.domain.model import TaskRef
from minitemporal.errors import Unavailable
from minitemporal.queue.base import TaskQueue

ALARM_TTL = 60  # seconds an alarm no pop took stays in Redis


class RedisQueue(TaskQueue):
    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "minitemporal", op_timeout: float = 2.0) -> None:
        self._url = url
        self._prefix = prefix
        self._ready = f"{prefix}:ready"
        self._marker = f"{prefix}:epoch"
        self._op_timeout = op_timeout
        self._redis: aioredis.Redis | None = None
        self._blocking: aioredis.Redis | None = None

    async def open(self) -> None:
        common = {
            "socket_connect_timeout": self._op_timeout,
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
            "retry_on_error": [RedisConnectionError],
            "health_check_interval": 15,
        }
        self._redis = aioredis.Redis.from_url(self._url, socket_timeout=self._op_timeout, **common)
        # Blocking pops hold a connection for their whole wait: give them their own client,
        # with no socket timeout (the command's own timeout bounds the wait).
        self._blocking = aioredis.Redis.from_url(self._url, socket_timeout=None, **common)

    async def close(self) -> None:
        for client in (self._redis, self._blocking):
            if client is not None:
                await client.aclose()
        self._redis = self._blocking = None

    def _client(self, blocking: bool = False) -> aioredis.Redis:
        client = self._blocking if blocking else self._redis
        if client is None:
            raise Unavailable("the queue is not open")
        return client

    async def ping(self) -> None:
        try:
            await self._client().ping()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc

    async def push(self, items: Sequence[tuple[TaskRef, float]]) -> int:
        if not items:
            return 0
        mapping = {ref.encode(): score for ref, score in items}
        try:
            return int(await self._client().zadd(self._ready, mapping, nx=True))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc

    def _alarm(self, name: str) -> str:
        return f"{self._prefix}:wake:{name}"

    async def pop(
        self, max_items: int, timeout: float, *, wake: str | None = None
    ) -> list[TaskRef]:
        try:
            if timeout <= 0:  # BZMPOP's 0 would mean "forever"
                members = await self._client().zpopmin(self._ready, max_items)
            else:
                # The alarm is a second sorted set: BZMPOP takes from the first non-empty key,
                # so work already queued wins over an alarm (which then ends the next wait).
                keys = [self._ready] if wake is None else [self._ready, self._alarm(wake)]
                reply = await self._client(blocking=True).bzmpop(
                    timeout, len(keys), keys, min=True, count=max_items
                )
                members = reply[1] if reply and _text(reply[0]) == self._ready else []
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        except RedisError as exc:
            raise Unavailable(f"Redis error: {exc}") from exc
        refs = []
        for member, _score in members:
            try:
                refs.append(TaskRef.decode(member))
            except ValueError:
                continue  # not ours: whoever writes junk into Redis cannot make us crash
        return refs

    async def wake(self, name: str) -> None:
        key = self._alarm(name)
        try:
            # An alarm no pop takes (its worker stopped) must not stay in Redis for ever.
            async with self._client().pipeline(transaction=False) as pipe:
                await pipe.zadd(key, {"wake": 0}).expire(key, ALARM_TTL).execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc

    async def remove(self, refs: Sequence[TaskRef]) -> None:
        if not refs:
            return
        try:
            await self._client().zrem(self._ready, *(r.encode() for r in refs))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc

    async def depth(self) -> int:
        try:
            return int(await self._client().zcard(self._ready))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc

    async def claim_epoch(self) -> bool:
        try:
            created = await self._client().set(self._marker, uuid.uuid4().hex, nx=True)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        return bool(created)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
