"""The store interface's conformance suite, run against every backend (PostgreSQL, SQLite):
fencing, readiness, failures, idempotency keys, sweeps, reads. Nothing here knows which
backend it talks to; `Backend` opens stores on one database however the backend does it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from minitemporal.domain.model import (
    Beat,
    HeartbeatResult,
    JobSpec,
    JobStatus,
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
from minitemporal.errors import Conflict, InvalidInput, NotFound
from minitemporal.store.base import Store

pytestmark = pytest.mark.anyio
FAST = RetryPolicy(base_seconds=0.0, factor=1.0, max_seconds=0.0, jitter=0.0)


@dataclass
class Backend:
    name: str
    make: Callable[[], Store]  # a new, unopened store on this test's database


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgres":
        from minitemporal.store.postgres import PostgresStore

        url = request.getfixturevalue("database_url")
        return Backend("postgres", lambda: PostgresStore(url, retry_policy=FAST, pool_size=4))
    from minitemporal.store.sqlite import SqliteStore

    path = str(tmp_path / "store.db")
    return Backend("sqlite", lambda: SqliteStore(path, retry_policy=FAST))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.make()
    await s.open()
    yield s
    await s.close()


def spec(*nodes: NodeSpec, name: str = "j") -> JobSpec:
    return JobSpec(name=name, nodes=nodes)


def result(ref: TaskRef, outcome: Outcome = Outcome.SUCCEEDED, code: int | None = 0) -> TaskResult:
    now = datetime.now(UTC)
    return TaskResult(ref, outcome, code, now, now, Output("out\n", 4), Output())


async def states(store: Store, job_id: str) -> dict[str, NodeState]:
    job = await store.get_job(job_id)
    return {n.id: n.state for n in job.nodes}


async def test_submit_queues_roots_only(store: Store) -> None:
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


async def test_two_workers_claim_one_message_exactly_one_wins(backend: Backend) -> None:
    stores = [backend.make() for _ in range(2)]
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
        [node] = (await stores[1].get_job(res.job_id)).nodes
        assert len(node.attempts) == 1, "one attempt row: exactly one claim won"
    finally:
        for s in stores:
            await s.close()


async def test_claim_returns_the_command_and_rejects_stale_attempts(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "echo secret-command", timeout_seconds=5)))
    ref = res.queued[0]
    assert await store.claim("w", [TaskRef(ref.node, ref.attempt + 1)], 30) == []
    [task] = await store.claim("w", [ref], 30)
    assert task.command == "echo secret-command" and task.timeout_seconds == 5
    assert task.node_id == "a" and task.job_id == res.job_id


async def test_success_queues_children_in_the_same_transaction(store: Store) -> None:
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


async def test_stale_or_foreign_results_change_nothing(store: Store) -> None:
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


async def test_failure_without_retries_fails_everything_downstream(store: Store) -> None:
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


async def test_retry_then_requeue_with_the_next_attempt(store: Store) -> None:
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


async def test_expired_lease_is_lost_then_retried(store: Store) -> None:
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


async def test_cancel(store: Store) -> None:
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


async def test_idempotency_key_on_submission(store: Store) -> None:
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


async def test_queued_tasks_page_through_ties_in_order(store: Store) -> None:
    """Pages of a rebuild: each starts past the last one's (enqueued_at, node), so roots of
    one statement (their enqueue times may tie) come out once each, in order."""
    await store.submit_job(spec(*(NodeSpec(f"n{i}", "true") for i in range(7))))
    await store.submit_job(spec(NodeSpec("x", "true")))
    everything = await store.queued_tasks()
    assert len(everything) == 8
    assert everything == sorted(everything, key=lambda q: (q[1], q[0].node))
    pages, after = [], None
    while page := await store.queued_tasks(limit=3, after=after):
        assert len(page) <= 3
        pages.append(page)
        after = page[-1][1], page[-1][0].node
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [q for p in pages for q in p] == everything


async def test_queued_tasks_and_nul_output(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "true")))
    queued = await store.queued_tasks()
    assert [ref for ref, _ in queued] == list(res.queued)
    assert await store.queued_tasks(min_age_seconds=3600) == []
    after = queued[0][1], queued[0][0].node
    assert await store.queued_tasks(after=after) == queued[1:], "the page past the first one"
    [a, _b] = await store.claim("w", res.queued, 30)
    now = datetime.now(UTC)
    out = await store.complete(
        "w", [TaskResult(a.ref, Outcome.SUCCEEDED, 0, now, now, Output("a\x00b", 3))]
    )
    assert out.accepted == (True,)
    job = await store.get_job(res.job_id)
    assert job.nodes[0].attempts[0].stdout.tail == "a\ufffdb"


async def test_schema_applies_twice_concurrently(backend: Backend) -> None:
    stores = [backend.make() for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        await s.close()
    await asyncio.gather(*(s.open() for s in stores))  # again, on an existing schema
    res = await stores[0].submit_job(spec(NodeSpec("a", "true")))
    assert (await stores[2].get_job(res.job_id)).nodes[0].state is NodeState.QUEUED
    for s in stores:
        await s.close()


async def test_overdue_attempt_times_out_even_while_heartbeating(store: Store) -> None:
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


async def test_given_back_attempts_do_not_use_up_retries(store: Store) -> None:
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


async def run_all(store: Store, refs: tuple[TaskRef, ...] | list[TaskRef]) -> list[str]:
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


async def test_idempotency_key_reuses_a_result_across_jobs(store: Store) -> None:
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


async def test_one_key_never_runs_twice_at_once(store: Store) -> None:
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


async def test_a_waiter_is_completed_from_its_twins_success(store: Store) -> None:
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


async def test_stats(store: Store) -> None:
    assert (await store.stats(worker_window_seconds=10)).queued == 0
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "true")))
    [a] = await store.claim("w1", res.queued[:1], 30)
    await store.heartbeat("w1", [Beat(a.ref)], 30)
    await asyncio.sleep(0.05)
    stats = await store.stats(worker_window_seconds=10)
    assert (stats.queued, stats.running, stats.jobs_active, stats.workers_alive) == (1, 1, 1, 1)
    assert 0.04 < stats.oldest_queued_age_seconds < 10


# --- cases of the failures work (handoff, duplicates, give-backs, batches)


async def test_complete_hands_unblocked_children_to_the_reporting_worker(
    store: Store,
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


async def test_heartbeat_releases_attempts_the_worker_does_not_hold(store: Store) -> None:
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


async def test_a_retried_report_is_acknowledged_not_rejected(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "false", retries=1)))
    a, b = await store.claim("w", res.queued, 30)
    reports = [result(a.ref), result(b.ref, Outcome.EXIT_CODE, 1)]
    first = await store.complete("w", reports)
    again = await store.complete("w", reports)  # the first reply was lost; the worker retries
    assert first.accepted == again.accepted == (True, True)
    assert again.enqueued_at == (None, None) and again.duplicate == (True, True)
    other = await store.complete("w2", reports)
    assert other.accepted == (False, False), "someone else's report is still stale"


async def test_one_batch_of_results_across_parents_and_jobs(store: Store) -> None:
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
    store: Store,
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


async def test_one_report_finishes_several_jobs_each_with_its_own_status(store: Store) -> None:
    """The transaction path (a report that also claims popped refs) finishes every job its
    successes leave done, in one step, each with the status its own nodes decide."""
    plain = await store.submit_job(spec(NodeSpec("a", "true"), name="plain"))
    failing = await store.submit_job(
        spec(NodeSpec("f", "false"), NodeSpec("s", "true"), name="failing")
    )
    cancelled = await store.submit_job(spec(NodeSpec("c", "true"), name="cancelled"))
    popped = await store.submit_job(spec(NodeSpec("p", "true"), name="popped"))
    tasks = await store.claim("w", [*plain.queued, *failing.queued, *cancelled.queued], 30)
    by_node = {t.node_id: t.ref for t in tasks}
    await store.complete("w", [result(by_node["f"], Outcome.EXIT_CODE, 1)])
    await store.cancel_job(cancelled.job_id)
    out = await store.complete(
        "w",
        [result(by_node[n]) for n in ("a", "s", "c")],
        want=1,
        claim=popped.queued,
        lease_seconds=30,
    )
    assert [t.node_id for t in out.claimed] == ["p"], "the transaction path ran"
    finished = {f.job_id: f for f in out.finished_jobs}
    assert {k: f.status for k, f in finished.items()} == {
        plain.job_id: JobStatus.SUCCEEDED,
        failing.job_id: JobStatus.FAILED,
        cancelled.job_id: JobStatus.CANCELLED,
    }
    assert all(f.duration_seconds >= 0 for f in finished.values())
    for job_id, f in finished.items():
        job = await store.get_job(job_id, include_nodes=False)
        assert job.status is f.status and job.finished_at is not None
    assert (await store.get_job(popped.job_id)).status is JobStatus.RUNNING


# --- cases added with the second backend


async def test_times_are_utc_aware_and_round_trip_exactly(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true")))
    [a] = await store.claim("w", res.queued, 30)
    started = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    await store.heartbeat("w", [Beat(a.ref, started)], 30)
    finished = started + timedelta(seconds=1, microseconds=1)
    out = await store.complete(
        "w", [TaskResult(a.ref, Outcome.SUCCEEDED, 0, None, finished, Output("héllo ✓\n", 10))]
    )
    [enqueued_at] = out.enqueued_at
    assert enqueued_at is not None and enqueued_at.utcoffset() == timedelta(0)
    job = await store.get_job(res.job_id)
    [node] = job.nodes
    [attempt] = node.attempts
    assert attempt.started_at == started, "the worker's start time, to the microsecond"
    assert attempt.finished_at == node.finished_at == finished
    assert attempt.stdout == Output("héllo ✓\n", 10)
    for t in (job.created_at, job.finished_at, node.enqueued_at, attempt.claimed_at):
        assert t is not None and t.utcoffset() == timedelta(0)
    assert node.enqueued_at == attempt.enqueued_at == enqueued_at
    assert job.created_at <= node.enqueued_at <= attempt.claimed_at  # type: ignore[operator]
    assert abs(datetime.now(UTC) - job.created_at) < timedelta(minutes=1), "UTC, not local time"


async def test_unknown_and_malformed_job_ids_are_not_found(store: Store) -> None:
    for job_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", ""):
        with pytest.raises(NotFound):
            await store.get_job(job_id)
        with pytest.raises(NotFound):
            await store.cancel_job(job_id)


async def test_list_jobs_pages_newest_first_and_filters(store: Store) -> None:
    ids = []
    for i in range(5):
        res = await store.submit_job(spec(NodeSpec("a", "true"), name=f"j{i}"))
        ids.append(res.job_id)
        if i % 2 == 0:
            await run_all(store, res.queued)
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_jobs(limit=2, cursor=cursor)
        seen.extend(j.id for j in page.jobs)
        assert len(page.jobs) <= 2
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    done = await store.list_jobs(limit=10, status=JobStatus.SUCCEEDED)
    assert [j.id for j in done.jobs] == [ids[4], ids[2], ids[0]]
    assert all(j.node_counts == {"succeeded": 1} for j in done.jobs)
    running = await store.list_jobs(limit=10, status=JobStatus.RUNNING)
    assert [j.id for j in running.jobs] == [ids[3], ids[1]] and running.next_cursor is None
    with pytest.raises(InvalidInput):
        await store.list_jobs(limit=2, cursor="garbage!")


async def test_heartbeat_extends_the_lease(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "sleep 5")))
    [a] = await store.claim("w", res.queued, 0.6)
    assert await store.heartbeat("w", [Beat(a.ref)], 30) == HeartbeatResult()
    await asyncio.sleep(0.7)
    swept = await store.expire_leases()
    assert swept.lost == () and swept.timed_out == ()
    assert (await store.heartbeat("other", [Beat(a.ref)], 30)).lost == (a.ref,), "not yours"


async def test_lost_attempt_without_retries_fails_the_job(store: Store) -> None:
    res = await store.submit_job(
        spec(NodeSpec("a", "sleep 9"), NodeSpec("b", "true", depends_on=("a",)))
    )
    [a] = await store.claim("w", res.queued, 0.6)
    await asyncio.sleep(0.7)
    swept = await store.expire_leases()
    assert [g.ref for g in swept.lost] == [a.ref] and swept.queued == ()
    assert swept.lost[0].job_id == res.job_id
    assert [(f.job_id, f.status) for f in swept.finished_jobs] == [(res.job_id, JobStatus.FAILED)]
    assert swept.finished_jobs[0].duration_seconds > 0
    job = await store.get_job(res.job_id)
    nodes = {n.id: n for n in job.nodes}
    assert nodes["a"].state is NodeState.FAILED and "lost its worker (w)" in nodes["a"].explanation
    assert nodes["b"].state is NodeState.UPSTREAM_FAILED
    assert job.node_counts == {"failed": 1, "upstream_failed": 1}


async def test_cancel_a_job_backing_off(store: Store) -> None:
    slow = RetryPolicy(base_seconds=3600, factor=1.0, max_seconds=3600)
    res = await store.submit_job(spec(NodeSpec("a", "false", retries=3, backoff=slow)))
    [a] = await store.claim("w", res.queued, 30)
    await store.complete("w", [result(a.ref, Outcome.EXIT_CODE, 1)])
    cancelled = await store.cancel_job(res.job_id)
    assert cancelled.withdrawn == () and cancelled.job.status is JobStatus.CANCELLED
    assert [f.status for f in cancelled.finished_jobs] == [JobStatus.CANCELLED]
    node = (await store.get_job(res.job_id)).nodes[0]
    assert node.state is NodeState.CANCELLED and node.next_attempt_at is None
    assert await store.requeue_due_retries() == []


async def test_cancelling_a_key_holder_releases_its_waiters(store: Store) -> None:
    j1 = await store.submit_job(spec(NodeSpec("a", "true", idempotency_key="held")))
    j2 = await store.submit_job(spec(NodeSpec("a", "true", idempotency_key="held")))
    assert len(j1.queued) == 1 and j2.queued == ()
    cancelled = await store.cancel_job(j1.job_id)
    assert cancelled.withdrawn == j1.queued
    assert len(cancelled.queued) == 1, "j2's node may run now"
    assert await run_all(store, cancelled.queued) == ["a"]
    assert (await store.get_job(j2.job_id)).status is JobStatus.SUCCEEDED
    with pytest.raises(Conflict):
        await store.cancel_job(j2.job_id)


async def test_a_second_cancel_while_running_is_idempotent(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "sleep 9")))
    await store.claim("w", res.queued, 30)
    first = await store.cancel_job(res.job_id)
    second = await store.cancel_job(res.job_id)
    assert first.job.cancel_requested and second.job.cancel_requested
    assert second.withdrawn == () and second.finished_jobs == ()
    assert second.job.status is JobStatus.RUNNING, "the running attempt ends through heartbeats"


async def test_explanations(store: Store) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "false"),
            NodeSpec("b", "true"),
            NodeSpec("c", "true", depends_on=("a",)),
            NodeSpec("r", "false", retries=2),
        )
    )
    views = {n.id: n for n in (await store.get_job(res.job_id)).nodes}
    assert views["a"].explanation == "queued (attempt 1 of 1), waiting behind 0 queued attempt(s)"
    assert views["b"].explanation.endswith("behind 1 queued attempt(s)")
    assert views["c"].explanation == "waiting for a"
    claimed = {t.node_id: t for t in await store.claim("w", res.queued, 30)}
    views = {n.id: n for n in (await store.get_job(res.job_id)).nodes}
    assert views["a"].explanation == "running attempt 1 of 1 on w"
    assert views["a"].worker_id == "w"
    await store.complete(
        "w",
        [
            result(claimed["a"].ref, Outcome.EXIT_CODE, 1),
            result(claimed["r"].ref, Outcome.EXIT_CODE, 2),
        ],
    )
    views = {n.id: n for n in (await store.get_job(res.job_id)).nodes}
    assert views["a"].explanation == "failed: attempt 1 of 1 exit code 1"
    assert views["c"].explanation == "not run: upstream a failed"
    assert views["r"].explanation.startswith("attempt 1 of 3 exit code 2; backing off until ")


async def test_per_node_backoff_overrides_the_global_policy(store: Store) -> None:
    hour = RetryPolicy(base_seconds=3600, factor=2.0, max_seconds=3600)
    res = await store.submit_job(
        spec(
            NodeSpec("slow", "false", retries=1, backoff=hour), NodeSpec("fast", "false", retries=1)
        )
    )
    claimed = await store.claim("w", res.queued, 30)
    before = datetime.now(UTC)
    await store.complete("w", [result(t.ref, Outcome.EXIT_CODE, 1) for t in claimed])
    views = {n.id: n for n in (await store.get_job(res.job_id)).nodes}
    wait = views["slow"].next_attempt_at
    assert wait is not None and timedelta(minutes=59) < wait - before < timedelta(minutes=61)
    requeued = await store.requeue_due_retries()
    assert [r.node for r in requeued] == [next(t.ref.node for t in claimed if t.node_id == "fast")]


async def test_state_survives_reopening(backend: Backend) -> None:
    first = backend.make()
    await first.open()
    res = await first.submit_job(
        spec(NodeSpec("a", "true"), NodeSpec("b", "true", depends_on=("a",)))
    )
    [a] = await first.claim("w", res.queued, 30)
    await first.complete("w", [result(a.ref)])
    await first.close()
    second = backend.make()
    await second.open()
    try:
        job = await second.get_job(res.job_id)
        assert {n.id: n.state for n in job.nodes} == {
            "a": NodeState.SUCCEEDED,
            "b": NodeState.QUEUED,
        }
        [(ref, _)] = await second.queued_tasks()
        assert await run_all(second, [ref]) == ["b"]
        assert (await second.get_job(res.job_id)).status is JobStatus.SUCCEEDED
    finally:
        await second.close()


async def test_concurrent_operations_each_commit_or_fail_alone(store: Store) -> None:
    same_key = [
        store.submit_job(spec(NodeSpec("a", cmd)), idempotency_key="k", request_digest=cmd)
        for cmd in ("true", "false")
    ]
    plain = [store.submit_job(spec(NodeSpec("a", "true"), name=f"p{i}")) for i in range(40)]
    outcomes = await asyncio.gather(*same_key, *plain, return_exceptions=True)
    conflicts = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(conflicts) == 1, outcomes[:2]
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(created) == 41 and len({o.job_id for o in created}) == 41
    listed = await store.list_jobs(limit=100)
    assert len(listed.jobs) == 41, "the refused submission left nothing behind"
    refs = [r for o in created for r in o.queued]
    claims = await asyncio.gather(*(store.claim(f"w{i % 3}", [r], 30) for i, r in enumerate(refs)))
    assert sum(len(c) for c in claims) == 41


async def test_a_report_batch_is_judged_result_by_result(store: Store) -> None:
    res = await store.submit_job(
        spec(NodeSpec("ok", "true"), NodeSpec("bad", "false"), NodeSpec("gone", "true"))
    )
    claimed = {t.node_id: t for t in await store.claim("w", res.queued, 30)}
    stale = TaskRef(claimed["gone"].ref.node, 9)
    out = await store.complete(
        "w",
        [
            result(claimed["ok"].ref),
            result(claimed["bad"].ref, Outcome.EXIT_CODE, 1),
            result(stale),
        ],
    )
    assert out.accepted == (True, True, False)
    assert await states(store, res.job_id) == {
        "ok": NodeState.SUCCEEDED,
        "bad": NodeState.FAILED,
        "gone": NodeState.RUNNING,
    }


async def test_a_large_layered_dag_runs_in_dependency_order(store: Store) -> None:
    width, depth = 40, 8
    nodes = [
        NodeSpec(
            f"n{layer}_{i}",
            "true",
            depends_on=tuple(f"n{layer - 1}_{j}" for j in {i, (i + 1) % width}) if layer else (),
        )
        for layer in range(depth)
        for i in range(width)
    ]
    res = await store.submit_job(spec(*nodes))
    assert len(res.queued) == width
    ran = await run_all(store, res.queued)
    assert sorted(ran) == sorted(n.id for n in nodes), "each node ran exactly once"
    position = {node_id: i for i, node_id in enumerate(ran)}
    for n in nodes:
        assert all(position[d] < position[n.id] for d in n.depends_on)
    job = await store.get_job(res.job_id)
    assert job.status is JobStatus.SUCCEEDED and job.node_counts == {"succeeded": width * depth}


async def test_workers_alive_counts_recent_heartbeats(store: Store) -> None:
    await store.heartbeat("w1", [], 30)
    await store.heartbeat("w2", [], 30)
    assert (await store.stats(worker_window_seconds=10)).workers_alive == 2
    await asyncio.sleep(0.2)
    await store.heartbeat("w2", [], 30)
    assert (await store.stats(worker_window_seconds=0.1)).workers_alive == 1


async def test_submission_counts_what_really_happened(store: Store) -> None:
    plain = await store.submit_job(
        spec(NodeSpec("a", "true"), NodeSpec("b", "true", depends_on=("a",)))
    )
    assert plain.node_counts == {"pending": 1, "queued": 1}
    first = await store.submit_job(spec(NodeSpec("k", "true", idempotency_key="counted")))
    [k] = await store.claim("w", first.queued, 30)
    await store.complete("w", [result(k.ref)])
    again = await store.submit_job(
        spec(
            NodeSpec("k", "true", idempotency_key="counted"),
            NodeSpec("after", "true", depends_on=("k",)),
        )
    )
    assert again.node_counts == {"queued": 1, "succeeded": 1}, "the cached root unblocked after"


async def test_a_heartbeat_give_back_reports_what_it_caused(store: Store) -> None:
    holder = await store.submit_job(spec(NodeSpec("h", "true", idempotency_key="gb")))
    waiter = await store.submit_job(spec(NodeSpec("w", "true", idempotency_key="gb")))
    assert waiter.queued == (), "w waits for its twin h"
    await store.claim("w1", holder.queued, 1.5)  # grace: max(0.5, 1.5/3) = 0.5 s
    cancelling = await store.cancel_job(holder.job_id)
    assert cancelling.job.status.value == "running", "h still runs: it is killed via heartbeat"
    await asyncio.sleep(0.6)
    # w1 lost the claim reply and lists nothing: h is given back, and since its job was
    # cancelled it ends cancelled, which finishes that job and lets its twin w run.
    beat = await store.heartbeat("w1", [], 1.5)
    assert [(f.job_id, f.status.value) for f in beat.finished_jobs] == [
        (holder.job_id, "cancelled")
    ]
    [w] = await store.claim("w2", beat.queued, 30)
    assert w.job_id == waiter.job_id and w.node_id == "w"


async def test_release_puts_unstarted_attempts_back_as_if_never_claimed(store: Store) -> None:
    res = await store.submit_job(spec(NodeSpec("a", "true"), NodeSpec("b", "true")))
    a, b = await store.claim("w", res.queued, 30)
    await store.heartbeat("w", [Beat(b.ref, datetime.now(UTC))], 30)  # b has started
    assert await store.release("other", [a.ref]) == [], "only the holder can release"
    assert await store.release("w", [a.ref, b.ref]) == [a.ref], "a started attempt stays"
    job = await store.get_job(res.job_id)
    nodes = {n.id: n for n in job.nodes}
    assert nodes["a"].state is NodeState.QUEUED and nodes["a"].attempt == 1
    assert nodes["a"].attempts == (), "no trace of the claim"
    assert [r for r, _ in await store.queued_tasks()] == [a.ref]
    [again] = await store.claim("w2", [a.ref], 30)
    assert again.ref == a.ref, "claimed again under the same attempt number"


async def test_submit_claims_ready_roots_for_offers_in_its_transaction(store: Store) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "echo a", timeout_seconds=9, env=(("K", "v"),)),
            NodeSpec("b", "echo b"),
            NodeSpec("c", "true", depends_on=("a",)),
            NodeSpec("d", "echo d"),
            NodeSpec("e", "echo e"),
        ),
        assign=[("w1", 1), ("w2", 2), ("w3", 4)],
        lease_seconds=30,
    )
    mine = [[t.node_id for t in tasks] for tasks in res.claimed]
    assert mine == [["a"], ["b", "d"], ["e"]], "oldest offer first, in node order"
    a = res.claimed[0][0]
    assert (a.command, a.timeout_seconds, a.env, a.has_dependents) == (
        "echo a",
        9,
        (("K", "v"),),
        True,
    ), "what a claim reply carries"
    assert not res.claimed[1][0].has_dependents
    assert res.queued == (), "nothing left for the queue"
    assert res.node_counts == {"pending": 1, "running": 4}
    job = await store.get_job(res.job_id)
    assert job.node_counts == res.node_counts
    assert {n.id: n.state for n in job.nodes}["c"] is NodeState.PENDING
    # Fenced like any claim: nobody else gets these attempts, and each has its record.
    assert await store.claim("w9", [t.ref for ts in res.claimed for t in ts], 30) == []
    assert [x.worker_id for x in {n.id: n for n in job.nodes}["a"].attempts] == ["w1"]
    out = await store.complete("w1", [result(a.ref)], want=1, lease_seconds=30)
    assert out.duplicate == (False,) and [t.node_id for t in out.claimed] == ["c"]


async def test_offers_take_only_what_is_ready_and_the_rest_is_queued(store: Store) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "true"), NodeSpec("b", "true"), NodeSpec("k", "true", idempotency_key="K")
        ),
        assign=[("w1", 1)],
        lease_seconds=30,
    )
    assert [[t.node_id for t in ts] for ts in res.claimed] == [["a"]]
    assert len(res.queued) == 2, "b, and k once admitted by its key, go to the queue"
    none = await store.submit_job(
        spec(NodeSpec("x", "true", idempotency_key="K2")), assign=[("w1", 3)], lease_seconds=30
    )
    assert none.claimed == ((),) and len(none.queued) == 1, "keyed roots are admitted, not offered"


async def test_an_offered_attempt_its_worker_never_saw_is_given_back(store: Store) -> None:
    res = await store.submit_job(
        spec(NodeSpec("a", "true")), assign=[("w", 1)], lease_seconds=6.0
    )  # grace = max(0.5, lease/3) = 2 s
    [[lost]] = res.claimed
    await asyncio.sleep(2.1)
    await store.heartbeat("w", [], 6.0)  # the answer to the offer never reached the worker
    assert await store.requeue_due_retries() == [TaskRef(lost.ref.node, 2)]
    a = (await store.get_job(res.job_id)).nodes[0]
    assert [x.reason for x in a.attempts] == ["interrupted"], "not counted against retries"


# --- reports of successes alone (PostgreSQL records them in one statement)


async def test_a_last_success_finishes_its_job_by_the_job_rule(store: Store) -> None:
    failed = await store.submit_job(spec(NodeSpec("a", "false"), NodeSpec("b", "true")))
    a, b = await store.claim("w", failed.queued, 30)
    await store.complete("w", [result(a.ref, Outcome.EXIT_CODE, 1)])
    out = await store.complete("w", [result(b.ref)], want=1, lease_seconds=30)
    assert [(f.job_id, f.status) for f in out.finished_jobs] == [(failed.job_id, JobStatus.FAILED)]
    assert out.finished_jobs[0].duration_seconds >= 0

    cancelled = await store.submit_job(spec(NodeSpec("c", "true")))
    [c] = await store.claim("w", cancelled.queued, 30)
    await store.cancel_job(cancelled.job_id)
    out = await store.complete("w", [result(c.ref)], want=1, lease_seconds=30)
    assert [f.status for f in out.finished_jobs] == [JobStatus.CANCELLED], "cancel asked first"
    assert await states(store, cancelled.job_id) == {"c": NodeState.SUCCEEDED}

    ok = await store.submit_job(spec(NodeSpec("d", "true")))
    [d] = await store.claim("w", ok.queued, 30)
    out = await store.complete("w", [result(d.ref)], want=1, lease_seconds=30)
    assert [f.status for f in out.finished_jobs] == [JobStatus.SUCCEEDED]
    job = await store.get_job(ok.job_id)
    assert job.status is JobStatus.SUCCEEDED and job.finished_at is not None


async def test_successes_alone_hand_children_up_to_want_and_queue_the_rest(store: Store) -> None:
    res = await store.submit_job(
        spec(
            NodeSpec("a", "true"),
            *(
                NodeSpec(f"m{i}", f"echo {i}", depends_on=("a",), env=(("K", "v"),))
                for i in range(3)
            ),
        )
    )
    [a] = await store.claim("w", res.queued, 30)
    out = await store.complete("w", [result(a.ref)], want=2, lease_seconds=30)
    assert [t.node_id for t in out.claimed] == ["m0", "m1"] and len(out.queued) == 1
    assert out.claimed[0].env == (("K", "v"),) and out.claimed[0].command == "echo 0"
    assert not out.claimed[0].has_dependents and out.claimed[0].job_id == res.job_id
    assert await store.claim("w2", [t.ref for t in out.claimed], 30) == []
    hb = await store.heartbeat("w", [Beat(t.ref) for t in out.claimed], 30)
    assert hb.lost == () and hb.cancel == (), "claimed for w: leased, with attempt rows"
    [m2] = await store.claim("w2", out.queued, 30)
    assert m2.node_id == "m2"
    drained = await store.complete("w", [result(t.ref) for t in out.claimed], want=0)
    assert drained.claimed == () and drained.finished_jobs == ()
    last = await store.complete("w2", [result(m2.ref)])
    assert [f.status for f in last.finished_jobs] == [JobStatus.SUCCEEDED]


async def test_a_repeated_or_partly_stale_success_report_is_judged_per_result(
    store: Store,
) -> None:
    res = await store.submit_job(
        spec(NodeSpec("a", "true"), NodeSpec("b", "true"), NodeSpec("c", "true"))
    )
    a, b = await store.claim("w", res.queued[:2], 30)
    first = await store.complete("w", [result(a.ref)], want=1, lease_seconds=30)
    again = await store.complete("w", [result(a.ref)], want=1, lease_seconds=30)
    assert first.accepted == again.accepted == (True,)
    assert first.duplicate == (False,) and again.duplicate == (True,)
    assert again.enqueued_at == (None,) and again.claimed == ()
    mixed = await store.complete("w", [result(res.queued[2]), result(b.ref)])  # c: not ours
    assert mixed.accepted == (False, True) and mixed.enqueued_at[1] is not None
    assert await states(store, res.job_id) == {
        "a": NodeState.SUCCEEDED,
        "b": NodeState.SUCCEEDED,
        "c": NodeState.QUEUED,
    }


# --- submit_jobs: several submissions in one transaction (group commit)


def diamond(command: str = "true") -> JobSpec:
    return spec(
        NodeSpec("a", command),
        NodeSpec("b", command, depends_on=("a",)),
        NodeSpec("c", command, depends_on=("a",)),
        NodeSpec("d", command, depends_on=("b", "c")),
        name="diamond",
    )


async def test_submit_jobs_stores_each_job_with_its_own_edges(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # The same node ids in every job: an edge must join the nodes of its own job only.
    results = await store.submit_jobs([Submission(diamond()) for _ in range(3)])
    assert "storing each alone" not in caplog.text, "stored together, not after a failure"
    assert all(isinstance(r, SubmitResult) and r.created for r in results)
    jobs = [r for r in results if isinstance(r, SubmitResult)]
    assert len({r.job_id for r in jobs}) == 3
    for r in jobs:
        assert r.node_counts == {"pending": 3, "queued": 1}
        assert len(r.queued) == 1
        job = await store.get_job(r.job_id)
        assert [(n.id, n.depends_on) for n in job.nodes] == [
            ("a", ()),
            ("b", ("a",)),
            ("c", ("a",)),
            ("d", ("b", "c")),
        ]
    # Run the middle job's root: its own children become ready, and no one else's.
    middle = jobs[1]
    [task] = await store.claim("w", middle.queued, 30)
    assert task.job_id == middle.job_id and task.node_id == "a" and task.has_dependents
    done = await store.complete("w", [result(task.ref)])
    assert len(done.queued) == 2
    assert await states(store, middle.job_id) == {
        "a": NodeState.SUCCEEDED,
        "b": NodeState.QUEUED,
        "c": NodeState.QUEUED,
        "d": NodeState.PENDING,
    }
    for other in (jobs[0], jobs[2]):
        assert (await states(store, other.job_id))["b"] == NodeState.PENDING


async def test_submit_jobs_settles_idempotency_keys_job_by_job(store: Store) -> None:
    first = await store.submit_job(
        spec(NodeSpec("a", "true")), idempotency_key="taken", request_digest="d1"
    )
    results = await store.submit_jobs(
        [
            Submission(spec(NodeSpec("a", "true")), "taken", "d1"),  # a retry: the same job
            Submission(spec(NodeSpec("a", "true")), "fresh", "d2"),
            Submission(spec(NodeSpec("a", "false")), "taken", "other"),  # another request
            Submission(spec(NodeSpec("a", "true")), "fresh", "d2"),  # twice in one batch
            Submission(spec(NodeSpec("a", "true")), "fresh", "d3"),
            Submission(spec(NodeSpec("a", "true"))),
        ]
    )
    retry, fresh, reused, twice, clash, plain = results
    assert isinstance(retry, SubmitResult) and not retry.created
    assert retry.job_id == first.job_id
    assert isinstance(fresh, SubmitResult) and fresh.created
    assert isinstance(reused, Conflict)
    assert isinstance(twice, SubmitResult) and not twice.created
    assert twice.job_id == fresh.job_id
    assert isinstance(clash, Conflict)
    assert isinstance(plain, SubmitResult) and plain.created
    page = await store.list_jobs(limit=50)
    assert len(page.jobs) == 3, "the first job, `fresh` once and the one without a key"


async def test_submit_jobs_gives_offers_the_first_ready_roots_in_order(store: Store) -> None:
    results = await store.submit_jobs(
        [
            Submission(spec(NodeSpec("a", "true"), NodeSpec("b", "true"))),
            Submission(spec(NodeSpec("a", "true"), NodeSpec("z", "true", depends_on=("a",)))),
            Submission(spec(NodeSpec("a", "true"))),
        ],
        assign=[("w1", 2), ("w2", 2)],
        lease_seconds=30,
    )
    one, two, three = (r for r in results if isinstance(r, SubmitResult))
    # w1 takes the first job's two roots, w2 the second's root and the third's.
    assert [[t.node_id for t in c] for c in one.claimed] == [["a", "b"], []]
    assert [[t.node_id for t in c] for c in two.claimed] == [[], ["a"]]
    assert [[t.node_id for t in c] for c in three.claimed] == [[], ["a"]]
    assert two.claimed[1][0].has_dependents and not three.claimed[1][0].has_dependents
    assert one.queued == two.queued == three.queued == ()
    for r, worker in ((one, "w1"), (two, "w2"), (three, "w2")):
        job = await store.get_job(r.job_id)
        roots = [n for n in job.nodes if not n.depends_on]
        assert all(n.state == NodeState.RUNNING for n in roots)
        assert all(n.attempts[-1].worker_id == worker for n in roots)
    # The claims are real: a result from the worker they went to is recorded.
    done = await store.complete("w2", [result(two.claimed[1][0].ref)])
    assert done.enqueued_at[0] is not None and len(done.queued) == 1


async def test_submit_jobs_sends_keyed_roots_alone(store: Store) -> None:
    results = await store.submit_jobs(
        [
            Submission(spec(NodeSpec("a", "true"))),
            Submission(spec(NodeSpec("a", "true", idempotency_key="root-key"))),
            Submission(spec(NodeSpec("a", "true"))),
        ]
    )
    assert all(isinstance(r, SubmitResult) and r.created for r in results)
    keyed = results[1]
    assert isinstance(keyed, SubmitResult)
    assert await states(store, keyed.job_id) == {"a": NodeState.QUEUED}, "admitted by its key"
