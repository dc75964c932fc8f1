"""Group commit of submissions, against PostgreSQL and Redis: submissions that arrive together
are stored in fewer transactions than there are jobs, an api's client sends them in fewer calls
(SubmitJobs), every one of them is stored and queued, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1._async import HealthServicer

from minitemporal.domain.model import JobSpec, NodeSpec, RetryPolicy
from minitemporal.domain.validation import Limits
from minitemporal.errors import Conflict, InvalidInput, Unavailable
from minitemporal.groupcommit import ALONE_NODES
from minitemporal.observability.metrics import GrpcMetrics, Metrics
from minitemporal.queue.redis import RedisQueue
from minitemporal.rpc.client import SchedulerClient
from minitemporal.rpc.gen import scheduler_pb2 as pb
from minitemporal.rpc.gen import scheduler_pb2_grpc as pb_grpc
from minitemporal.rpc.server import SchedulerServicer, build_server
from minitemporal.scheduler.service import SchedulerService
from minitemporal.store.postgres import PostgresStore
from tests.support.services import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def service(
    database_url: str, redis_server_url: str, redis_prefix: str, metrics: Metrics
) -> AsyncIterator[SchedulerService]:
    store = PostgresStore(database_url, retry_policy=RetryPolicy(), pool_size=4)
    queue = RedisQueue(redis_server_url, prefix=redis_prefix)
    await store.open()
    await queue.open()
    yield SchedulerService(store, queue, metrics.scheduler, lease_seconds=15, limits=Limits())
    await queue.close()
    await store.close()


def batches(metrics: Metrics) -> tuple[float, float]:
    """(transactions, jobs) of the submission batches so far."""
    count = metrics.registry.get_sample_value("minitemporal_submit_batch_jobs_count") or 0.0
    total = metrics.registry.get_sample_value("minitemporal_submit_batch_jobs_sum") or 0.0
    return count, total


def job(i: int) -> JobSpec:
    return JobSpec(
        f"j{i}",
        (NodeSpec("a", "true", name="a"), NodeSpec("b", "true", name="b", depends_on=("a",))),
    )


async def test_concurrent_submissions_share_transactions_and_are_all_queued(
    service: SchedulerService, metrics: Metrics, redis_server_url: str, redis_prefix: str
) -> None:
    answers = await asyncio.gather(
        *(service.submit_job(job(i), idempotency_key=None, request_digest=None) for i in range(40))
    )
    assert all(created for _, created in answers)
    views = [view for view, _ in answers]
    assert len({v.id for v in views}) == 40
    assert [v.name for v in views] == [f"j{i}" for i in range(40)], "each caller its own job"
    assert all(v.node_counts == {"pending": 1, "queued": 1} for v in views)
    transactions, jobs = batches(metrics)
    assert jobs == 40
    assert transactions < 40, "submissions that waited were committed together"
    queued = await service.store.queued_tasks()
    assert len(queued) == 40
    client = redis.Redis.from_url(redis_server_url)
    try:
        assert client.zcard(f"{redis_prefix}:ready") == 40, "every root pushed"
    finally:
        client.close()
    for view in views:
        stored = await service.store.get_job(view.id)
        assert stored.name == view.name
        assert [n.depends_on for n in stored.nodes] == [(), ("a",)]


async def test_concurrent_submissions_with_one_key_make_one_job(
    service: SchedulerService, metrics: Metrics
) -> None:
    async def submit(digest: str) -> tuple[str, bool]:
        view, created = await service.submit_job(job(0), idempotency_key="k", request_digest=digest)
        return view.id, created

    answers = await asyncio.gather(
        *(submit("same") for _ in range(8)), submit("different"), return_exceptions=True
    )
    *same, different = answers
    assert isinstance(different, Conflict)
    assert not any(isinstance(a, BaseException) for a in same)
    ids = {a[0] for a in same if isinstance(a, tuple)}
    assert len(ids) == 1, "every retry names the one job"
    assert sum(1 for a in same if isinstance(a, tuple) and a[1]) == 1, "created once"
    page = await service.store.list_jobs(limit=10)
    assert len(page.jobs) == 1
    assert batches(metrics)[0] < 9


async def test_a_large_job_is_stored_beside_the_batches(
    service: SchedulerService, metrics: Metrics
) -> None:
    wide = JobSpec("wide", tuple(NodeSpec(f"n{i}", "true", name=f"n{i}") for i in range(150)))
    answers = await asyncio.gather(
        *(service.submit_job(job(i), idempotency_key=None, request_digest=None) for i in range(10)),
        service.submit_job(wide, idempotency_key=None, request_digest=None),
    )
    assert all(created for _, created in answers)
    big, _ = answers[-1]
    assert big.nodes_total == 150 and big.node_counts == {"queued": 150}
    assert batches(metrics)[1] == 11
    stored = await service.store.get_job(big.id)
    assert [n.id for n in stored.nodes] == [f"n{i}" for i in range(150)]


def calls(metrics: Metrics, method: str, code: str = "OK") -> float:
    sample = metrics.registry.get_sample_value(
        "minitemporal_grpc_server_handled_total", {"method": method, "code": code}
    )
    return sample or 0.0


class _SessionOnlyServicer(SchedulerServicer):
    """Takes submissions only as messages of a session: a unary call would fail."""

    async def SubmitJob(self, request: object, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unary SubmitJob")

    async def SubmitJobs(self, request: object, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unary SubmitJobs")


async def serve(servicer: SchedulerServicer, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_SchedulerServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@contextlib.asynccontextmanager
async def connected(servicer: SchedulerServicer, **options: Any) -> AsyncIterator[SchedulerClient]:
    """`servicer` served on a free loopback port and a client of it (`options` for the client,
    a 10 s timeout unless given); both stopped afterwards."""
    port = free_port()
    server = await serve(servicer, port)
    client = SchedulerClient(
        f"127.0.0.1:{port}", metrics=Metrics().grpc, **{"timeout": 10, **options}
    )
    try:
        yield client
    finally:
        await client.close()
        await server.stop(grace=None)


@pytest.mark.parametrize("on_session", [False, True], ids=["unary", "session"])
async def test_an_apis_concurrent_submissions_go_in_few_calls_each_with_its_answer(
    service: SchedulerService, metrics: Metrics, on_session: bool
) -> None:
    server_metrics = Metrics()
    port = free_port()
    if on_session:
        server = await serve(_SessionOnlyServicer(service, server_metrics.grpc), port)
    else:
        server, _ = build_server(
            service, server_metrics.grpc, HealthServicer(), secret="s", address=f"127.0.0.1:{port}"
        )
        await server.start()
    client = SchedulerClient(
        f"127.0.0.1:{port}",
        metrics=Metrics().grpc,
        secret="s",
        timeout=10,
        submissions=on_session,
    )
    await service.store.submit_job(job(0), idempotency_key="taken", request_digest="d1")
    cycle = JobSpec("cycle", (NodeSpec("a", "true", depends_on=("a",)),))
    try:
        answers = await asyncio.gather(
            *(
                client.submit_job(job(i))
                if i not in (5, 9)
                else client.submit_job(job(i), idempotency_key="taken", request_digest="d2")
                if i == 5
                else client.submit_job(cycle)
                for i in range(1, 13)
            ),
            return_exceptions=True,
        )
    finally:
        await client.close()
        await server.stop(grace=None)
    for i, answer in enumerate(answers, start=1):
        if i == 5:
            assert isinstance(answer, Conflict), answer
        elif i == 9:
            assert isinstance(answer, InvalidInput), answer
        else:
            assert isinstance(answer, tuple), answer
            view, created = answer
            assert created and view.name == f"j{i}", "each caller its own job"
    assert calls(server_metrics, "SubmitJobs") >= 1
    assert calls(server_metrics, "SubmitJob") + calls(server_metrics, "SubmitJobs") < 12
    assert len((await service.store.list_jobs(limit=50)).jobs) == 1 + 10


async def all_created(client: SchedulerClient, jobs: range) -> None:
    """Submit `job(i)` for each i at once; every one must be created."""
    answers = await asyncio.gather(
        *(client.submit_job(job(i)) for i in jobs), return_exceptions=True
    )
    assert all(isinstance(a, tuple) and a[1] for a in answers), answers


class _OldServicer(SchedulerServicer):
    """A scheduler from before SubmitJobs."""

    async def SubmitJobs(self, request: object, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


async def test_an_older_scheduler_gets_one_call_per_submission(
    service: SchedulerService, caplog: pytest.LogCaptureFixture
) -> None:
    server_metrics = Metrics()
    async with connected(_OldServicer(service, server_metrics.grpc)) as client:
        for _ in range(2):  # the second round goes one by one from the start
            await all_created(client, range(10))
    assert caplog.text.count("has no SubmitJobs") == 1, "asked once, then remembered"
    assert calls(server_metrics, "SubmitJob") == 20
    assert len((await service.store.list_jobs(limit=50)).jobs) == 20


class _NoSessionSubmitsServicer(_OldServicer):
    """A scheduler from before submissions on a session: its SessionRequest has no such call,
    so it parses one as a message without a call."""

    async def _session_reply(self, request: pb.SessionRequest) -> pb.SessionReply:
        if request.WhichOneof("call") in ("submit", "submit_jobs"):
            request = pb.SessionRequest(id=request.id)
        return await super()._session_reply(request)


async def test_an_older_scheduler_gets_unary_calls_from_an_api_with_a_session(
    service: SchedulerService, caplog: pytest.LogCaptureFixture
) -> None:
    server_metrics = Metrics()
    servicer = _NoSessionSubmitsServicer(service, server_metrics.grpc)
    async with connected(servicer, submissions=True) as client:
        view, created = await client.submit_job(job(0))
        assert created and view.name == "j0"
        await all_created(client, range(1, 6))
    assert caplog.text.count("takes no submissions on a session") == 1, "once, then remembered"
    assert calls(server_metrics, "SubmitJob") == 6, "every job by a unary call, none twice"
    assert len((await service.store.list_jobs(limit=50)).jobs) == 6


class _PathServicer(SchedulerServicer):
    """Records how each submission arrived: `unary`, or `session` (a message of a stream)."""

    def __init__(self, service: SchedulerService, metrics: GrpcMetrics) -> None:
        super().__init__(service, metrics)
        self.paths: list[str] = []

    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitJobResponse:  # type: ignore[override]
        self.paths.append("unary")
        return await super().SubmitJob(request, context)

    async def _session_reply(self, request: pb.SessionRequest) -> pb.SessionReply:
        if request.WhichOneof("call") in ("submit", "submit_jobs"):
            self.paths.append("session")
        return await super()._session_reply(request)


async def test_a_large_submission_is_a_call_of_its_own(service: SchedulerService) -> None:
    servicer = _PathServicer(service, Metrics().grpc)
    wide = JobSpec(
        "wide", tuple(NodeSpec(f"n{i}", "true", name=f"n{i}") for i in range(ALONE_NODES + 1))
    )
    async with connected(servicer, submissions=True) as client:
        assert (await client.submit_job(job(0)))[1]
        assert (await client.submit_job(wide))[1]
    assert servicer.paths == ["session", "unary"]


async def test_an_apis_submission_streams_spread_over_several_schedulers(
    service: SchedulerService,
) -> None:
    """Two schedulers behind one target (as behind a DNS name): the api's two submission
    streams open on one each, as its unary calls would spread."""
    servicers = [_PathServicer(service, Metrics().grpc) for _ in range(2)]
    ports = [free_port(), free_port()]
    servers = [await serve(s, p) for s, p in zip(servicers, ports, strict=True)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    client = SchedulerClient(target, metrics=Metrics().grpc, timeout=10, submissions=True)
    wide = JobSpec(
        "wide", tuple(NodeSpec(f"n{i}", "true", name=f"n{i}") for i in range(ALONE_NODES + 1))
    )
    try:
        # Large jobs (unary calls) until both schedulers have answered one: both connections
        # are ready, so round robin has both to choose from when the streams open.
        deadline = asyncio.get_running_loop().time() + 10
        while not all(s.paths for s in servicers):
            assert asyncio.get_running_loop().time() < deadline, "a scheduler never answered"
            await client.submit_job(wide)
        for s in servicers:
            s.paths.clear()
        for i in range(6):  # one after another: the calls take turns on the two streams
            assert (await client.submit_job(job(i)))[1]
    finally:
        await client.close()
        for server in servers:
            await server.stop(grace=None)
    assert [s.paths for s in servicers] == [["session"] * 3] * 2


class _HeldStore(PostgresStore):
    """Holds every batch of submissions until the test lets it go."""

    def __init__(self, url: str) -> None:
        super().__init__(url, retry_policy=RetryPolicy(), pool_size=4)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def submit_jobs(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await super().submit_jobs(*args, **kwargs)


async def test_a_submission_its_api_gave_up_on_is_not_stored(
    database_url: str, redis_server_url: str, redis_prefix: str
) -> None:
    """A session's call carries its deadline, as a unary call does: a submission still
    waiting for its batch when its caller gives up is dropped, not stored behind its back
    (where a retry without an Idempotency-Key would make a second job)."""
    store = _HeldStore(database_url)
    queue = RedisQueue(redis_server_url, prefix=redis_prefix)
    await store.open()
    await queue.open()
    service = SchedulerService(store, queue, Metrics().scheduler, lease_seconds=15, limits=Limits())
    server_metrics = Metrics()
    port = free_port()
    server = await serve(SchedulerServicer(service, server_metrics.grpc), port)
    address = f"127.0.0.1:{port}"
    patient = SchedulerClient(address, metrics=Metrics().grpc, timeout=30, submissions=True)
    hasty = SchedulerClient(address, metrics=Metrics().grpc, timeout=0.5, submissions=True)
    loop = asyncio.get_running_loop()
    try:
        first = asyncio.create_task(patient.submit_job(job(0)))
        await asyncio.wait_for(store.entered.wait(), 10)  # being stored, held there
        with pytest.raises(Unavailable, match=r"within 0\.5s"):
            await hasty.submit_job(job(1))  # waits behind it, gives up
        deadline = loop.time() + 10  # the scheduler gives up on it too, at the same deadline
        while calls(server_metrics, "SubmitJob", "DEADLINE_EXCEEDED") < 1:
            assert loop.time() < deadline, "the scheduler still works on the abandoned call"
            await asyncio.sleep(0.01)  # poll
        store.release.set()
        view, created = await first
        assert created and view.name == "j0"
        assert [j.name for j in (await store.list_jobs(limit=10)).jobs] == ["j0"]
    finally:
        store.release.set()
        await patient.close()
        await hasty.close()
        await server.stop(grace=None)
        await queue.close()
        await store.close()
