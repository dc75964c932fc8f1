"""The PostgreSQL store against a real server: fencing, readiness, failures, sweeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from minitemporal.domain.model import (
    Beat,
    JobSpec,
    NodeSpec,
    NodeState,
    Outcome,
    Output,
    RetryPolicy,
    TaskRef,
    TaskResult,
)
from minitemporal.errors import Conflict, NotFound
from minitemporal.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(base_seconds=0.0, factor=1.0, max_seconds=0.0, jitter=0.0)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(database_url, retry_policy=FAST, pool_size=4)
    await s.open()
    yield s
    await s.close()


def spec(*nodes: NodeSpec, name: str = "j") -> JobSpec:
    return JobSpec(name=name, nodes=nodes)


def result(ref: TaskRef, outcome: Outcome = Outcome.SUCCEEDED, code: int | None = 0) -> TaskResult:
    now = datetime.now(UTC)
    return TaskResult(ref, outcome, code, now, now, Output("out\n", 4), Output())


async def states(store: PostgresStore, job_id: str) -> dict[str, NodeState]:
    job = await store.get_job(job_id)
    return {n.id: n.state for n in job.nodes}


async def test_submit_queues_roots_only(store: PostgresStore) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "true"),
            NodeSpec("b", "true"),
            NodeSpec("c", "true", depends_on=("a", "b")),
        )
    )
    assert res.created and len(res.queued) == 2
    assert all(r.attempt == 1 for r in res.queued)
    assert await states(store, res.job_id) == {
        "a": NodeState.QUEUED,
        "b": NodeState.QUEUED,
        "c": NodeState.PENDING,
    }


async def test_two_workers_claim_one_message_exactly_one_wins(database_url: str) -> None:
    stores = [PostgresStore(database_url, retry_policy=FAST, pool_size=2) for _ in range(2)]
    for s in stores:
        await s.open()
    try:
        res = await stores[0].submit_job(spec(NodeSpec("a", "echo hi")))
        ref = res.queued[0]
        for _ in range(20):  # many rounds: a race loses only sometimes
            won = await asyncio.gather(
                stores[0].claim("w1", [ref], 30), stores[1].claim("w2", [ref], 30)
            )
            assert sum(len(w) for w in won) <= 1
        claims = [c for c in (await stores[0].claim("w3", [ref], 30)) if c]
        assert claims == []
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute("SELECT count(*) FROM attempts")
            assert (await cur.fetchone()) == (1,)
    finally:
        for s in stores:
            await s.close()


async def test_claim_returns_the_command_and_rejects_stale_attempts(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "echo secret-command", timeout_seconds=5)))
    ref = res.queued[0]
    assert await store.claim("w", [TaskRef(ref.node, ref.attempt + 1)], 30) == []
    [task] = await store.claim("w", [ref], 30)
    assert task.command == "echo secret-command" and task.timeout_seconds == 5
    assert task.node_id == "a" and task.job_id == res.job_id


async def test_success_queues_children_in_the_same_transaction(store: PostgresStore) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "true"),
            NodeSpec("b", "true", depends_on=("a",)),
            NodeSpec("c", "true", depends_on=("a",)),
            NodeSpec("d", "true", depends_on=("b", "c")),
        )
    )
    [a] = await store.claim("w", res.queued, 30)
    done = await store.complete("w", [result(a.ref)])
    assert done.accepted == (True,)
    assert len(done.queued) == 2
    b_c = await store.claim("w", done.queued, 30)
    first = await store.complete("w", [result(b_c[0].ref)])
    assert first.queued == (), "the join waits for its second parent"
    second = await store.complete("w", [result(b_c[1].ref)])
    assert len(second.queued) == 1
    [d] = await store.claim("w", second.queued, 30)
    assert d.node_id == "d"
    final = await store.complete("w", [result(d.ref)])
    assert [(f.job_id, f.status.value) for f in final.finished_jobs] == [(res.job_id, "succeeded")]
    job = await store.get_job(res.job_id)
    assert job.status.value == "succeeded" and job.finished_at is not None


async def test_stale_or_foreign_results_change_nothing(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true")))
    [a] = await store.claim("w1", res.queued, 30)
    assert (await store.complete("w2", [result(a.ref)])).accepted == (False,), "not w2's attempt"
    stale = TaskRef(a.ref.node, a.ref.attempt + 5)
    assert (await store.complete("w1", [result(stale)])).accepted == (False,)
    assert await states(store, res.job_id) == {"a": NodeState.RUNNING}
    assert (await store.complete("w1", [result(a.ref)])).accepted == (True,)
    again = await store.complete("w1", [result(a.ref)])
    assert again.duplicate == (True,) and again.enqueued_at == (None,), "recorded only once"
    assert again.finished_jobs == () and again.queued == ()
    failed_instead = await store.complete("w1", [result(a.ref, Outcome.EXIT_CODE, 1)])
    assert failed_instead.accepted == (False,), "a different result for it is stale"


async def test_failure_without_retries_fails_everything_downstream(store: PostgresStore) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "false"),
            NodeSpec("b", "true", depends_on=("a",)),
            NodeSpec("c", "true", depends_on=("b",)),
            NodeSpec("x", "true"),
        )
    )
    claimed = {t.node_id: t for t in await store.claim("w", res.queued, 30)}
    out = await store.complete("w", [result(claimed["a"].ref, Outcome.EXIT_CODE, 1)])
    assert out.accepted == (True,) and out.queued == () and out.finished_jobs == ()
    assert await states(store, res.job_id) == {
        "a": NodeState.FAILED,
        "b": NodeState.UPSTREAM_FAILED,
        "c": NodeState.UPSTREAM_FAILED,
        "x": NodeState.RUNNING,
    }
    final = await store.complete("w", [result(claimed["x"].ref)])
    assert [f.status.value for f in final.finished_jobs] == ["failed"]


async def test_retry_then_requeue_with_the_next_attempt(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "false", retries=1)))
    [a] = await store.claim("w", res.queued, 30)
    await store.complete("w", [result(a.ref, Outcome.EXIT_CODE, 1)])
    assert await states(store, res.job_id) == {"a": NodeState.RETRY_WAIT}
    requeued = await store.requeue_due_retries()
    assert requeued == [TaskRef(a.ref.node, 2)]
    assert await store.claim("w", [a.ref], 30) == [], "the old attempt is fenced off"
    [again] = await store.claim("w", requeued, 30)
    await store.complete("w", [result(again.ref, Outcome.EXIT_CODE, 1)])
    job = await store.get_job(res.job_id)
    assert job.status.value == "failed"
    assert [a.reason for a in job.nodes[0].attempts] == ["exit_code", "exit_code"]


async def test_expired_lease_is_lost_then_retried(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "sleep 5", retries=1)))
    [a] = await store.claim("w", res.queued, 0.6)
    assert (await store.heartbeat("w", [Beat(a.ref)], 0.6)).lost == ()
    await asyncio.sleep(0.7)
    swept = await store.expire_leases()
    assert [g.ref for g in swept.lost] == [a.ref] and swept.timed_out == ()
    assert (swept.lost[0].node_id, swept.lost[0].worker_id) == ("a", "w")
    hb = await store.heartbeat("w", [Beat(a.ref)], 30)
    assert hb.lost == (a.ref,), "the worker is told to stop it"
    assert (await store.complete("w", [result(a.ref)])).accepted == (False,)
    assert await store.requeue_due_retries() == [TaskRef(a.ref.node, 2)]
    job = await store.get_job(res.job_id)
    assert job.nodes[0].attempts[0].reason == "lost"


async def test_cancel(store: PostgresStore) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "sleep 9"),
            NodeSpec("b", "true", depends_on=("a",)),
            NodeSpec("c", "true"),
        )
    )
    claimed = {t.node_id: t for t in await store.claim("w", res.queued[:1], 30)}
    cancelled = await store.cancel_job(res.job_id)
    assert cancelled.job.status.value == "running" and cancelled.job.cancel_requested
    assert len(cancelled.withdrawn) == 1, "c was queued"
    hb = await store.heartbeat("w", [Beat(claimed["a"].ref)], 30)
    assert hb.cancel == (claimed["a"].ref,)
    out = await store.complete("w", [result(claimed["a"].ref, Outcome.CANCELLED, -15)])
    assert [f.status.value for f in out.finished_jobs] == ["cancelled"]
    assert await states(store, res.job_id) == {
        "a": NodeState.CANCELLED,
        "b": NodeState.CANCELLED,
        "c": NodeState.CANCELLED,
    }
    with pytest.raises(Conflict):
        await store.cancel_job(res.job_id)
    with pytest.raises(NotFound):
        await store.cancel_job("00000000-0000-0000-0000-000000000000")


async def test_idempotency_key_on_submission(store: PostgresStore) -> None:
    first = await store.submit_job(
        spec(NodeSpec("a", "true")), idempotency_key="k", request_digest="d1"
    )
    again = await store.submit_job(
        spec(NodeSpec("a", "true")), idempotency_key="k", request_digest="d1"
    )
    assert again.job_id == first.job_id and not again.created and again.queued == ()
    with pytest.raises(Conflict):
        await store.submit_job(
            spec(NodeSpec("a", "false")), idempotency_key="k", request_digest="d2"
        )


async def test_queued_tasks_and_nul_output(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "true")))
    queued = await store.queued_tasks()
    assert [ref for ref, _ in queued] == list(res.queued)
    assert await store.queued_tasks(min_age_seconds=3600) == []
    [a, _b] = await store.claim("w", res.queued, 30)
    now = datetime.now(UTC)
    out = await store.complete(
        "w", [TaskResult(a.ref, Outcome.SUCCEEDED, 0, now, now, Output("a\x00b", 3))]
    )
    assert out.accepted == (True,)
    job = await store.get_job(res.job_id)
    assert job.nodes[0].attempts[0].stdout.tail == "a\ufffdb"


async def test_schema_applies_twice_concurrently(database_url: str) -> None:
    stores = [PostgresStore(database_url, retry_policy=FAST, pool_size=1) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.migrate() for s in stores))
    for s in stores:
        await s.close()


async def test_overdue_attempt_times_out_even_while_heartbeating(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "sleep 60", timeout_seconds=0.3)))
    [a] = await store.claim("w", res.queued, 0.4)  # deadline = timeout + one lease = 0.7 s
    for _ in range(4):
        await asyncio.sleep(0.25)
        await store.heartbeat("w", [Beat(a.ref)], 0.4)  # keeps the lease, not the deadline
    swept = await store.expire_leases()
    assert [g.ref for g in swept.timed_out] == [a.ref] and swept.lost == ()
    assert [f.status.value for f in swept.finished_jobs] == ["failed"]
    job = await store.get_job(res.job_id)
    assert job.nodes[0].attempts[0].reason == "timeout"


async def test_given_back_attempts_do_not_use_up_retries(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true", retries=0)))
    ref = res.queued[0]
    for _ in range(3):  # three workers shut down in a row, each giving the attempt back
        [task] = await store.claim("w", [ref], 30)
        out = await store.complete("w", [result(task.ref, Outcome.INTERRUPTED, None)])
        assert out.accepted == (True,)
        [ref] = await store.requeue_due_retries()
    [task] = await store.claim("w", [ref], 30)
    assert task.ref.attempt == 4
    final = await store.complete("w", [result(task.ref)])
    assert [f.status.value for f in final.finished_jobs] == ["succeeded"]
    job = await store.get_job(res.job_id)
    assert [a.reason for a in job.nodes[0].attempts] == ["interrupted"] * 3 + ["succeeded"]


async def run_all(store: PostgresStore, refs: tuple[TaskRef, ...] | list[TaskRef]) -> list[str]:
    """Claim and succeed everything that becomes ready; return node ids in run order."""
    ran: list[str] = []
    todo = list(refs)
    while todo:
        tasks = await store.claim("w", todo, 30)
        todo = []
        for t in tasks:
            ran.append(t.node_id)
            todo.extend((await store.complete("w", [result(t.ref)])).queued)
    return ran


async def test_idempotency_key_reuses_a_result_across_jobs(store: PostgresStore) -> None:
    first = await store.submit_job(
        spec(
            NodeSpec("a", "echo A", idempotency_key="k-a"),
            NodeSpec("b", "echo B", depends_on=("a",), idempotency_key="k-b"),
        )
    )
    assert await run_all(store, first.queued) == ["a", "b"]
    again = await store.submit_job(
        spec(
            NodeSpec("x", "echo A", idempotency_key="k-a"),
            NodeSpec("y", "echo new", depends_on=("x",)),
            NodeSpec("z", "echo B", depends_on=("y",), idempotency_key="k-b"),
        )
    )
    assert [await run_all(store, again.queued)] == [["y"]], "x and z come from the cache"
    job = await store.get_job(again.job_id)
    nodes = {n.id: n for n in job.nodes}
    assert job.status.value == "succeeded"
    assert nodes["x"].cached and nodes["z"].cached and not nodes["y"].cached
    assert nodes["x"].attempts == (), "it did not run"
    reused = nodes["x"].cached_result
    assert reused is not None and reused.stdout.tail == "out\n", "the recorded result is shown"
    assert nodes["x"].exit_code == 0
    assert "idempotency key" in nodes["x"].explanation


async def test_one_key_never_runs_twice_at_once(store: PostgresStore) -> None:
    j1 = await store.submit_job(spec(NodeSpec("a", "false", idempotency_key="shared", retries=0)))
    j2 = await store.submit_job(spec(NodeSpec("a", "true", idempotency_key="shared")))
    assert len(j1.queued) == 1 and j2.queued == (), "the second waits for the first"
    waiting = (await store.get_job(j2.job_id)).nodes[0]
    assert waiting.state is NodeState.PENDING and "idempotency key" in waiting.explanation
    [t1] = await store.claim("w", j1.queued, 30)
    out = await store.complete("w", [result(t1.ref, Outcome.EXIT_CODE, 1)])
    assert len(out.queued) == 1, "the first failed: the second may run now"
    assert await run_all(store, out.queued) == ["a"]
    assert (await store.get_job(j2.job_id)).status.value == "succeeded"
    j3 = await store.submit_job(spec(NodeSpec("a", "true", idempotency_key="shared")))
    assert j3.queued == () and (await store.get_job(j3.job_id)).nodes[0].cached


async def test_a_waiter_is_completed_from_its_twins_success(store: PostgresStore) -> None:
    j1 = await store.submit_job(spec(NodeSpec("a", "true", idempotency_key="twin")))
    j2 = await store.submit_job(
        spec(
            NodeSpec("a", "true", idempotency_key="twin"), NodeSpec("b", "true", depends_on=("a",))
        )
    )
    [t1] = await store.claim("w", j1.queued, 30)
    out = await store.complete("w", [result(t1.ref)])
    assert len(out.queued) == 1, "j2.a is cached, so j2.b is ready"
    assert await run_all(store, out.queued) == ["b"]
    assert (await store.get_job(j2.job_id)).status.value == "succeeded"


async def test_stats(store: PostgresStore) -> None:
    assert (await store.stats(worker_window_seconds=10)).queued == 0
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "true")))
    [a] = await store.claim("w1", res.queued[:1], 30)
    await store.heartbeat("w1", [Beat(a.ref)], 30)
    await asyncio.sleep(0.05)
    stats = await store.stats(worker_window_seconds=10)
    assert (stats.queued, stats.running, stats.jobs_active, stats.workers_alive) == (1, 1, 1, 1)
    assert 0.04 < stats.oldest_queued_age_seconds < 10


async def test_complete_hands_unblocked_children_to_the_reporting_worker(
    store: PostgresStore,
) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "true"),
            NodeSpec("b", "echo b", depends_on=("a",)),
            NodeSpec("c", "echo c", depends_on=("a",)),
            NodeSpec("d", "true", depends_on=("b", "c")),
        )
    )
    [a] = await store.claim("w", res.queued, 30)
    assert a.has_dependents
    out = await store.complete("w", [result(a.ref)], want=1, lease_seconds=30)
    assert len(out.claimed) == 1 and len(out.queued) == 1, "one handed over, one to the queue"
    handed = out.claimed[0]
    assert handed.node_id == "b" and handed.command == "echo b" and handed.has_dependents
    assert await store.claim("w2", [handed.ref], 30) == [], "it is claimed: nobody else gets it"
    [c] = await store.claim("w2", out.queued, 30)
    await store.complete("w2", [result(c.ref)], want=4, lease_seconds=30)
    last = await store.complete("w", [result(handed.ref)], want=4, lease_seconds=30)
    assert [t.node_id for t in last.claimed] == ["d"] and last.queued == ()
    assert not last.claimed[0].has_dependents
    done = await store.complete("w", [result(last.claimed[0].ref)], want=4, lease_seconds=30)
    assert done.claimed == () and [f.status.value for f in done.finished_jobs] == ["succeeded"]


async def test_heartbeat_releases_attempts_the_worker_does_not_hold(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "true")))
    granted = await store.claim("w", res.queued, 6.0)  # grace = max(0.5, lease/3) = 2 s
    held = [t for t in granted if t.node_id == "b"]
    lost_reply = next(t for t in granted if t.node_id == "a")  # the worker never saw this one
    assert (await store.heartbeat("w", [Beat(held[0].ref)], 6.0)).lost == ()
    assert (await store.expire_leases()).lost == (), "within the grace: a reply may be in flight"
    await asyncio.sleep(2.1)
    await store.heartbeat("w", [Beat(held[0].ref)], 6.0)
    assert await store.requeue_due_retries() == [TaskRef(lost_reply.ref.node, 2)], (
        "given back well before its lease would expire"
    )
    job = await store.get_job(res.job_id)
    a = {n.id: n for n in job.nodes}["a"]
    assert [x.reason for x in a.attempts] == ["interrupted"], "not counted against retries"


async def test_a_retried_report_is_acknowledged_not_rejected(store: PostgresStore) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "false", retries=1)))
    a, b = await store.claim("w", res.queued, 30)
    reports = [result(a.ref), result(b.ref, Outcome.EXIT_CODE, 1)]
    first = await store.complete("w", reports)
    again = await store.complete("w", reports)  # the first reply was lost; the worker retries
    assert first.accepted == again.accepted == (True, True)
    assert again.enqueued_at == (None, None) and again.duplicate == (True, True)
    other = await store.complete("w2", reports)
    assert other.accepted == (False, False), "someone else's report is still stale"


async def test_one_batch_of_results_across_parents_and_jobs(store: PostgresStore) -> None:
    diamond = await store.submit_job(
        spec(
            NodeSpec("b", "true"),
            NodeSpec("c", "true"),
            NodeSpec("d", "true", depends_on=("b", "c")),
        )
    )
    single = await store.submit_job(spec(NodeSpec("x", "true")))
    tasks = await store.claim("w", [*diamond.queued, *single.queued], 30)
    out = await store.complete("w", [result(t.ref) for t in tasks])
    assert out.accepted == (True, True, True)
    assert all(at is not None for at in out.enqueued_at)
    assert len(out.queued) == 1, "the join is queued once, by both parents at once"
    assert [(f.job_id, f.status.value) for f in out.finished_jobs] == [(single.job_id, "succeeded")]
    [d] = await store.claim("w", out.queued, 30)
    assert d.node_id == "d" and d.ref.attempt == 1
    final = await store.complete("w", [result(d.ref)])
    assert [f.job_id for f in final.finished_jobs] == [diamond.job_id]


async def test_complete_claims_popped_refs_first_then_unblocked_children(
    store: PostgresStore,
) -> None:
    chain = await store.submit_job(
        spec(NodeSpec("a", "true"), NodeSpec("b", "true", depends_on=("a",)))
    )
    waiting = await store.submit_job(spec(NodeSpec("x", "echo x"), NodeSpec("y", "echo y")))
    [a] = await store.claim("w", chain.queued, 30)
    x_ref, y_ref = waiting.queued
    stale = TaskRef(x_ref.node, 9)
    out = await store.complete("w", [result(a.ref)], want=2, claim=[x_ref, stale], lease_seconds=30)
    assert [t.node_id for t in out.claimed] == ["x", "b"], "queue first, then the child"
    assert out.queued == ()
    out = await store.complete("w", [], want=1, claim=[y_ref, x_ref], lease_seconds=30)
    assert [t.node_id for t in out.claimed] == ["y"], "never more than `want`"
