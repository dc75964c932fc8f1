"""The worker's session stream against a real scheduler: answers, in-band errors, a broken
stream failing calls as Unavailable, and reconnection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import pytest
from grpc_health.v1._async import HealthServicer

from minitemporal.domain.model import (
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
from minitemporal.rpc.server import build_server
from minitemporal.scheduler.service import SchedulerService
from minitemporal.store.postgres import PostgresStore
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
        f"127.0.0.1:{port}", metrics=Metrics().grpc, secret="s3cret", session=True, timeout=3
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
        f"127.0.0.1:{port}", metrics=Metrics().grpc, secret="wrong", session=True, timeout=3
    )
    try:
        with pytest.raises(CredentialsRejected):
            await client.claim("w", [TaskRef(1, 1)])
        assert client.refused is not None
    finally:
        await client.close()
        await server.stop(grace=None)
