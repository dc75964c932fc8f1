"""The scheduler's PostgreSQL connection pool: psycopg's, handing out the connection that came
back last (a stack) instead of the one idle longest (its queue).

A queue rotates light load through every connection, and each one warms up on its own:
PostgreSQL plans a prepared statement afresh for its first five executions on a connection
(1.2-2.6 ms each for the chain step's statement, against 0.06-0.1 ms for its cached plan
after) and plans it once more after each ANALYZE of its tables; each backend's caches go
cold between its turns. A stack keeps light load on the connection it used last. Measured on
2 cores (the suite, interleaved pairs): a fan-in (last child done to sink started) 3.1-4.4 ms
against 4.0-5.3 ms; the store's first 50 chain steps alone 1.0-1.2 ms each against 1.4-1.6.
Under load every connection is in use either way.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool


class StackPool(AsyncConnectionPool[Any]):
    """`AsyncConnectionPool`, most recently returned connection first.

    psycopg_pool takes a ready connection in `_get_ready_connection` (under the pool's lock)
    from the left of its deque and returns connections to the right; this takes from the
    right. The idle connections it leaves at the left are the ones the pool's shrinking
    closes first, as before. A psycopg_pool that renames that method falls back to its own
    order, which `tests/integration/test_postgres_pool.py` catches.
    """

    async def _get_ready_connection(self, timeout: float | None) -> Any:
        if self._pool and (timeout is None or timeout > 0.0):
            conn = self._pool.pop()
            self._nconns_min = min(self._nconns_min, len(self._pool))
            return conn
        # Nothing ready (or no time left): the library's own answer (wait, or fail).
        return await super()._get_ready_connection(timeout)
