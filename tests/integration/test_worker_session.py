"""The worker's session stream against a real scheduler: answers, in-band errors, a broken
stream failing calls as Unavailable, and reconnection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import pytest
from grpc_health.v1._async import HealthServicer

from minitemporal.domain.model import (
    ClaimedTask,
    JobSpec,
    NodeSpec,
    Outcome,
    Output,
    RetryPolicy,
    TaskRef,
    TaskResult,
)
from minitemporal.domain.validation import Limits
from minitemporal.errors import CredentialsRejected, Unavailable
from minitemporal.observability.metrics import Metrics
from minitemporal.queue.memory import MemoryQueue
from minitemporal.rpc.client import SchedulerClient
from minitemporal.rpc.server import SchedulerServicer, build_server
from minitemporal.scheduler.service import SchedulerService
from minitemporal.store.postgres import PostgresStore
from tests.support.procs import wait_until
from tests.support.services import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[SchedulerService]:
    store = PostgresStore(database_url, retry_policy=RetryPolicy())
    await store.open()
    yield SchedulerService(
        store, MemoryQueue(), Metrics().scheduler, lease_seconds=15, limits=Limits()
    )
    await store.close()


@pytest.fixture
async def client(service: SchedulerService) -> AsyncIterator[SchedulerClient]:
    """A worker's session client of a scheduler serving `service`."""
    port = free_port()
    server = await serve(service, port)
    client = SchedulerClient(
        f"127.0.0.1:{port}", metrics=Metrics().grpc, secret="s3cret", tasks=True, timeout=3
    )
    yield client
    await client.close()
    await server.stop(grace=None)


async def serve(service: SchedulerService, port: int, secret: str = "s3cret"):
    server, _ = build_server(
        service, Metrics().grpc, HealthServicer(), secret=secret, address=f"127.0.0.1:{port}"
    )
    await server.start()
    return server


async def test_session_calls_errors_and_reconnection(service: SchedulerService) -> None:
    port = free_port()
    server = await serve(service, port)
    client = SchedulerClient(
        f"127.0.0.1:{port}", metrics=Metrics().grpc, secret="s3cret", tasks=True, timeout=3
    )
    try:
        res = await service.store.submit_job(JobSpec("j", (NodeSpec("a", "echo a"),)))
        [task] = await client.claim("w", res.queued)
        assert task.command == "echo a"
        beat = await client.heartbeat("w", [])
        assert beat.lost == ()
        now = datetime.now(UTC)
        stale = TaskResult(
            TaskRef(task.ref.node, 9), Outcome.SUCCEEDED, 0, now, now, Output(), Output()
        )
        accepted, _ = await client.complete("w", [stale])
        assert accepted == [False], "answered in-band, the stream stays up"

        await server.stop(grace=None)
        with pytest.raises(Unavailable):
            await client.heartbeat("w", [])
        server = await serve(service, port)  # the scheduler is back on the same address
        ok = TaskResult(task.ref, Outcome.SUCCEEDED, 0, now, now, Output("a\n", 2), Output())
        deadline = anyio.current_time() + 10
        while True:  # the channel reconnects with backoff
            try:
                accepted, _ = await client.complete("w", [ok])
                break
            except Unavailable:
                assert anyio.current_time() < deadline, "never reconnected"
                await anyio.sleep(0.05)
        assert accepted == [True], "a new stream after the old one broke"
    finally:
        await client.close()
        await server.stop(grace=None)


async def test_a_wrong_secret_is_refused_on_the_session(service: SchedulerService) -> None:
    port = free_port()
    server = await serve(service, port)
    client = SchedulerClient(
        f"127.0.0.1:{port}", metrics=Metrics().grpc, secret="wrong", tasks=True, timeout=3
    )
    try:
        with pytest.raises(CredentialsRejected):
            await client.claim("w", [TaskRef(1, 1)])
        assert client.refused is not None
    finally:
        await client.close()
        await server.stop(grace=None)


async def test_a_new_jobs_root_goes_straight_to_an_idle_workers_offer(
    service: SchedulerService, client: SchedulerClient
) -> None:
    got: list[list[ClaimedTask]] = []
    async with anyio.create_task_group() as tg:

        async def offer() -> None:
            got.append(await client.offer("w", 2, 10.0))

        tg.start_soon(offer)
        await wait_until(lambda: len(service.offers) == 1, "the offer")
        spec = JobSpec(
            "j", (NodeSpec("a", "echo a", "a"), NodeSpec("b", "echo b", "b", depends_on=("a",)))
        )
        view, created = await service.submit_job(spec, idempotency_key=None, request_digest=None)
    assert created and [[t.node_id for t in ts] for ts in got] == [["a"]]
    assert got[0][0].command == "echo a" and got[0][0].has_dependents
    assert view.node_counts == {"pending": 1, "running": 1}
    job = await service.get_job(view.id)
    assert [x.worker_id for x in job.nodes[0].attempts] == ["w"], "claimed, in the store"
    assert await service.queue.depth() == 0, "nothing went through the queue"
    assert service.metrics.dispatched.labels("offer")._value.get() == 1

    # Withdrawn: answered at once, empty; the next job goes to the queue.
    async with anyio.create_task_group() as tg:
        tg.start_soon(offer)
        await wait_until(lambda: len(service.offers) == 1, "the second offer")
        with anyio.fail_after(5):
            await client.withdraw_offer("w")
    assert got[1] == [] and len(service.offers) == 0
    res, _ = await service.submit_job(
        JobSpec("q", (NodeSpec("x", "true", "x"),)), idempotency_key=None, request_digest=None
    )
    assert await service.queue.depth() == 1 and res.node_counts == {"queued": 1}

    # A session that ends takes its standing offer with it.
    broken: list[Exception] = []

    async def doomed_offer() -> None:
        try:
            await client.offer("w", 2, 10.0)
        except Unavailable as exc:
            broken.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed_offer)
        await wait_until(lambda: len(service.offers) == 1, "the third offer")
        with anyio.fail_after(5):
            await client.end_session()
    assert len(broken) == 1, "the call in flight fails at once, it does not wait out its time"
    await wait_until(lambda: len(service.offers) == 0, "the offer to lapse with its session")


async def test_a_report_hands_part_of_a_fan_out_and_the_rest_reaches_the_queue(
    service: SchedulerService, client: SchedulerClient
) -> None:
    children = tuple(NodeSpec(f"c{i}", "true", depends_on=("root",)) for i in range(3))
    res = await service.store.submit_job(JobSpec("fan", (NodeSpec("root", "true"), *children)))
    [root] = await client.claim("w", res.queued)
    now = datetime.now(UTC)
    done = TaskResult(root.ref, Outcome.SUCCEEDED, 0, now, now, Output(), Output())
    accepted, handed = await client.complete("w", [done], want=1)
    assert accepted == [True] and [t.node_id for t in handed] == ["c0"]
    # The other two went to the queue after the commit: another worker can claim them.
    rest = await client.claim("w2", await service.queue.pop(5, 10.0))
    assert sorted(t.node_id for t in rest) == ["c1", "c2"]


async def test_a_stopping_scheduler_ends_its_sessions_instead_of_waiting_out_its_grace(
    service: SchedulerService,
) -> None:
    port = free_port()
    servicer = SchedulerServicer(service, Metrics().grpc)
    server, _ = build_server(
        service,
        Metrics().grpc,
        HealthServicer(),
        secret="s3cret",
        address=f"127.0.0.1:{port}",
        servicer=servicer,
    )
    await server.start()
    address = f"127.0.0.1:{port}"
    worker = SchedulerClient(
        address, metrics=Metrics().grpc, secret="s3cret", tasks=True, timeout=3
    )
    api = SchedulerClient(address, metrics=Metrics().grpc, secret="s3cret", submissions=True)
    spec = JobSpec("j", (NodeSpec("a", "true", "a"),))
    offered: list[object] = []
    try:
        assert (await api.submit_job(spec))[1], "the api's stream is open"

        async def offer() -> None:
            try:
                offered.append(await worker.offer("w", 1, 60.0))
            except Unavailable as exc:
                offered.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(offer)
            await wait_until(lambda: len(service.offers) == 1, "the worker's standing offer")
            started = anyio.current_time()
            servicer.end_sessions()
            with anyio.fail_after(20):
                await server.stop(grace=30)  # would wait 30 s for the two open streams
        assert anyio.current_time() - started < 10
        assert len(offered) == 1 and isinstance(offered[0], Unavailable), offered

        server = await serve(service, port)  # back on the same address: new streams
        deadline = anyio.current_time() + 10
        while True:  # the channels reconnect with backoff
            try:
                assert (await api.submit_job(spec))[1]
                assert (await worker.heartbeat("w", [])).lost == ()
                break
            except Unavailable:
                assert anyio.current_time() < deadline, "never reconnected"
                await anyio.sleep(0.05)
    finally:
        await worker.close()
        await api.close()
        await server.stop(grace=None)
