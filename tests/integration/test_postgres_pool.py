"""The scheduler's pool hands out the connection returned last (see store/postgres/pool.py)."""

from __future__ import annotations

import asyncio

import pytest

from minitemporal.domain.model import RetryPolicy
from minitemporal.store.postgres import PostgresStore
from minitemporal.store.postgres.pool import StackPool

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(base_seconds=0.0, factor=1.0, max_seconds=0.0, jitter=0.0)


async def _backend_pid(pool: StackPool) -> int:
    async with pool.connection() as conn:
        return conn.info.backend_pid


async def test_the_connection_returned_last_is_handed_out_next(database_url: str) -> None:
    async with StackPool(database_url, min_size=3, max_size=3, open=False) as pool:
        await pool.wait()
        a, b, c = [await pool.getconn() for _ in range(3)]
        order = [a, b, c]
        for conn in order:
            await pool.putconn(conn)
        # A queue would hand out `a` (idle longest); a stack hands out `c`, then `b`.
        first = await pool.getconn()
        second = await pool.getconn()
        assert (first, second) == (c, b)
        await pool.putconn(second)
        await pool.putconn(first)
        # Light load, one request after another, stays on one warm connection.
        pids = {await _backend_pid(pool) for _ in range(10)}
        assert pids == {first.info.backend_pid}


async def test_concurrent_requests_still_get_their_own_connections(database_url: str) -> None:
    async with StackPool(database_url, min_size=1, max_size=4, open=False) as pool:
        await pool.wait()
        inside: list[int] = []
        all_in, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                inside.append(conn.info.backend_pid)
                if len(inside) == 4:
                    all_in.set()
                await release.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(4)]
        await asyncio.wait_for(all_in.wait(), timeout=10)
        release.set()
        await asyncio.gather(*tasks)
        assert len(set(inside)) == 4


async def test_the_store_runs_on_the_stack_pool(database_url: str) -> None:
    store = PostgresStore(database_url, retry_policy=FAST, pool_size=4)
    await store.open()
    try:
        assert isinstance(store._pool, StackPool)
        await store.ping()
    finally:
        await store.close()
