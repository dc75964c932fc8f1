"""What only the PostgreSQL backend has: writers that run at once and meet on a row. Its
semantics are the conformance suite's (test_store_conformance.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest

from minitemporal.domain.model import (
    JobSpec,
    NodeSpec,
    NodeState,
    Outcome,
    Output,
    RetryPolicy,
    TaskRef,
    TaskResult,
)
from minitemporal.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(base_seconds=0.0, factor=1.0, max_seconds=0.0, jitter=0.0)


def success(ref: TaskRef) -> TaskResult:
    now = datetime.now(UTC)
    return TaskResult(ref, Outcome.SUCCEEDED, 0, now, now, Output(), Output())


async def test_a_sink_freed_by_a_concurrent_parent_is_handed_not_queued(database_url: str) -> None:
    """Two parents of one sink reported at once (a fan-in): the report that waits on the
    sink's row sees it freed only when the other commits, and still hands it over, not
    through the queue."""
    store = PostgresStore(database_url, retry_policy=FAST, pool_size=2)
    await store.open()
    try:
        res = await store.submit_job(
            JobSpec(
                "fan-in",
                (
                    NodeSpec("a", "true"),
                    NodeSpec("b", "true"),
                    NodeSpec("sink", "echo sink", depends_on=("a", "b")),
                ),
            )
        )
        a, b = await store.claim("w", res.queued, 30)
        async with await psycopg.AsyncConnection.connect(database_url) as other:
            # a's report, in flight: it has counted a on the sink and holds its row.
            await other.execute(
                "UPDATE nodes SET state = 'succeeded', finished_at = now(), lease_until = NULL,"
                " deadline_at = NULL WHERE id = %s",
                (a.ref.node,),
            )
            await other.execute(
                "UPDATE nodes SET deps_pending = deps_pending - 1"
                " WHERE job_id = %s AND node_id = 'sink'",
                (res.job_id,),
            )
            report = asyncio.create_task(
                store.complete("w", [success(b.ref)], want=1, lease_seconds=30)
            )
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # b's report is waiting for the sink's row
                cur = await other.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                row = await cur.fetchone()
                if row is not None and row[0] > 0:
                    break
                assert not report.done(), "b's report did not wait for a's"
                assert asyncio.get_running_loop().time() < deadline, "b's report never waited"
                await asyncio.sleep(0.01)
            await other.commit()
        out = await report
        assert out.accepted == (True,)
        assert [t.node_id for t in out.claimed] == ["sink"], "handed to the reporting worker"
        assert out.queued == (), "not through the queue"
        job = await store.get_job(res.job_id)
        assert {n.id: n.state for n in job.nodes}["sink"] is NodeState.RUNNING
    finally:
        await store.close()
