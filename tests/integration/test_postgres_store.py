"""What only the PostgreSQL backend has: writers that run at once and meet on a row. Its
semantics are the conformance suite's (test_store_conformance.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from minitemporal.domain.model import (
    JobSpec,
    NodeSpec,
    NodeState,
    Outcome,
    Output,
    RetryPolicy,
    Submission,
    SubmitResult,
    TaskRef,
    TaskResult,
)
from minitemporal.store.postgres import PostgresStore
from minitemporal.store.postgres.store import STALE_ROWS

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
            await _until_waiting_on_a_lock(other, report)  # b's report waits for a's
            await other.commit()
        out = await report
        assert out.accepted == (True,)
        assert [t.node_id for t in out.claimed] == ["sink"], "handed to the reporting worker"
        assert out.queued == (), "not through the queue"
        job = await store.get_job(res.job_id)
        assert {n.id: n.state for n in job.nodes}["sink"] is NodeState.RUNNING
    finally:
        await store.close()


async def test_a_success_whose_node_a_heartbeat_touched_meanwhile_is_still_recorded(
    database_url: str,
) -> None:
    """A heartbeat renews the node's lease while its success is being recorded (the report
    waits on the row): the success still counts and frees the child. (The one-statement
    path finds the node by its row version, which the heartbeat replaced, so it declines and
    the transaction path records it: the child is queued rather than handed over, a push and
    a pop more in a rare race, for a report whose cost does not grow with the attempts
    running elsewhere.)"""
    store = PostgresStore(database_url, retry_policy=FAST, pool_size=2)
    await store.open()
    try:
        res = await store.submit_job(
            JobSpec("beat", (NodeSpec("a", "true"), NodeSpec("b", "true", depends_on=("a",))))
        )
        [a] = await store.claim("w", res.queued, 30)
        async with await psycopg.AsyncConnection.connect(database_url) as other:
            await other.execute(  # the heartbeat, not yet committed
                "UPDATE nodes SET lease_until = now() + interval '60 seconds' WHERE id = %s",
                (a.ref.node,),
            )
            report = asyncio.create_task(
                store.complete("w", [success(a.ref)], want=1, lease_seconds=30)
            )
            await _until_waiting_on_a_lock(other, report)
            await other.commit()
        out = await report
        assert out.accepted == (True,) and out.duplicate == (False,)
        assert out.enqueued_at[0] is not None, "recorded now, not judged a duplicate"
        job = await store.get_job(res.job_id)
        states = {n.id: n.state for n in job.nodes}
        assert states["a"] is NodeState.SUCCEEDED
        # b is freed: handed to the reporter, or queued for the scheduler to push.
        handed = [t.node_id for t in out.claimed]
        queued = [r.node for r in out.queued]
        assert (handed, states["b"]) == (["b"], NodeState.RUNNING) or (
            handed == [] and states["b"] is NodeState.QUEUED and len(queued) == 1
        )
    finally:
        await store.close()


async def _until_waiting_on_a_lock(
    conn: psycopg.AsyncConnection[tuple[object, ...]], task: asyncio.Task[object]
) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        row = await cur.fetchone()
        if row is not None and row[0] > 0:
            return
        assert not task.done(), "the report did not wait for the other transaction"
        assert asyncio.get_running_loop().time() < deadline, "the report never waited"
        await asyncio.sleep(0.01)


async def test_tables_that_grew_much_since_last_analyzed_are_analyzed_again(
    database_url: str,
) -> None:
    """A young table grows faster than autovacuum looks at it; the scheduler's sweep asks the
    store to analyze what changed by more than STALE_ROWS + STALE_FRACTION of its size."""
    store = PostgresStore(database_url, retry_policy=FAST, pool_size=2)
    await store.open()
    try:
        assert await store.refresh_statistics() == [], "nothing changed yet"
        nodes = tuple(NodeSpec(f"n{i}", "true") for i in range(STALE_ROWS + 200))
        await store.submit_job(JobSpec("big", nodes))
        refreshed: list[str] = []
        deadline = asyncio.get_running_loop().time() + 15
        while "nodes" not in refreshed:  # activity counts reach the statistics within a second
            assert asyncio.get_running_loop().time() < deadline, "nodes never analyzed"
            refreshed += await store.refresh_statistics()
            await asyncio.sleep(0.1)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'nodes'::regclass")
            row = await cur.fetchone()
            assert row is not None and row[0] >= len(nodes), "the planner now knows its size"
        assert "nodes" not in await store.refresh_statistics(), "not again until it changes"
    finally:
        await store.close()


async def test_a_batch_that_fails_stores_its_jobs_one_by_one(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One job PostgreSQL refuses (a NUL in its name, which text cannot hold; the api would
    have refused it) fails the batch's statement: the others are then stored alone, and only
    that job gets the error."""
    store = PostgresStore(database_url, retry_policy=FAST, pool_size=2)
    await store.open()
    try:
        results = await store.submit_jobs(
            [
                Submission(JobSpec("fine", (NodeSpec("a", "true"),))),
                Submission(JobSpec("bad\x00name", (NodeSpec("a", "true"),))),
                Submission(JobSpec("also fine", (NodeSpec("a", "true"),))),
            ]
        )
        fine, bad, also = results
        assert isinstance(bad, psycopg.DataError)
        for r, name in ((fine, "fine"), (also, "also fine")):
            assert isinstance(r, SubmitResult) and r.created
            assert (await store.get_job(r.job_id)).name == name
        assert "storing each alone" in caplog.text
    finally:
        await store.close()


async def test_a_read_is_one_read_only_snapshot_and_leaves_its_connection_as_it_was(
    database_url: str,
) -> None:
    """A read's statements see one snapshot (REPEATABLE READ) and cannot write (READ ONLY);
    the connection (one in this pool, so the same one every time) then writes as before, after
    a read that failed too."""
    store = PostgresStore(database_url, retry_policy=FAST, pool_size=1)
    await store.open()

    async def settings(conn: psycopg.AsyncConnection[Any]) -> tuple[str, str]:
        iso = await (await conn.execute("SHOW transaction_isolation")).fetchone()
        ro = await (await conn.execute("SHOW transaction_read_only")).fetchone()
        assert iso is not None and ro is not None
        return next(iter(iso.values())), next(iter(ro.values()))

    async def in_read(tx: Any) -> tuple[str, str]:
        return await settings(tx._conn)

    async def failing_read(tx: Any) -> None:
        raise LookupError("a read that fails")

    try:
        assert await store._read(in_read) == ("repeatable read", "on")
        with pytest.raises(LookupError):
            await store._read(failing_read)
        assert await store._tx(settings) == ("read committed", "off"), "a write transaction"
        res = await store.submit_job(JobSpec("after reads", (NodeSpec("a", "true"),)))
        assert (await store.get_job(res.job_id)).name == "after reads"
    finally:
        await store.close()
