"""The scheduler's gRPC server: servicer, shared-secret check, metrics, error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from minitemporal.domain.model import ClaimedTask
from minitemporal.errors import InvalidInput, MinitemporalError, Problem, encode_for_grpc
from minitemporal.groupcommit import BATCH_JOBS
from minitemporal.observability.metrics import GrpcMetrics
from minitemporal.rpc import convert
from minitemporal.rpc.gen import scheduler_pb2 as pb
from minitemporal.rpc.gen import scheduler_pb2_grpc as pb_grpc
from minitemporal.rpc.session import UNKNOWN_CALL
from minitemporal.scheduler.service import SchedulerService

log = logging.getLogger("minitemporal.rpc")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
SERVICE_NAME = "minitemporal.v1.Scheduler"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
AUTH_KEY = "authorization"
MAX_SUBMIT_BATCH = BATCH_JOBS  # jobs in one SubmitJobs call
# Probes (Kubernetes grpc probes, grpc_health_probe) cannot carry our secret.
_OPEN_PREFIX = "/grpc.health.v1.Health/"


class SchedulerServicer(pb_grpc.SchedulerServicer):
    def __init__(self, service: SchedulerService, metrics: GrpcMetrics) -> None:
        self._s = service
        self._m = metrics
        self._calls = self._session_calls()
        self._sessions: set[asyncio.Task[None]] = set()  # the readers of open sessions
        self._ending = False

    def end_sessions(self) -> None:
        """A scheduler that stops ends its sessions itself, once each has answered the calls
        it had begun, instead of waiting out the grace period for its workers and apis to
        hang up; they open new ones, on another scheduler if there is one. Calls still
        unread fail on the client's side, as on any broken stream (retried by workers, 503
        from an api)."""
        self._ending = True
        for reader in list(self._sessions):
            reader.cancel()

    async def _run(
        self, method: str, context: grpc.aio.ServicerContext, body: Callable[[], Awaitable[Resp]]
    ) -> Resp:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await body()
        except MinitemporalError as exc:
            code = exc.grpc_code
            await context.abort(code, exc.detail, trailing_metadata=encode_for_grpc(exc))
            raise  # abort raises; this line is for type checkers
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            await context.abort(code, "internal error")
            raise
        finally:
            self._m.server_calls.labels(method, code.name).inc()
            self._m.server_seconds.labels(method).observe(time.perf_counter() - start)

    # --- submissions: unary, or as messages of an api's session (same bodies)
    async def _submit(self, request: pb.SubmitJobRequest) -> pb.SubmitJobResponse:
        s = convert.submission_from_pb(request)
        job, created = await self._s.submit_job(
            s.spec, idempotency_key=s.idempotency_key, request_digest=s.request_digest
        )
        return pb.SubmitJobResponse(job=convert.job_to_pb(job), created=created)

    async def _submit_jobs(self, request: pb.SubmitJobsRequest) -> pb.SubmitJobsResponse:
        if len(request.jobs) > MAX_SUBMIT_BATCH:
            raise InvalidInput(
                "too many jobs in one call",
                [Problem("/jobs", f"at most {MAX_SUBMIT_BATCH} per call")],
            )
        submissions = [convert.submission_from_pb(job) for job in request.jobs]
        reply = pb.SubmitJobsResponse()
        for answer in await self._s.submit_jobs(submissions):
            result = reply.results.add()
            if isinstance(answer, MinitemporalError):
                result.error.CopyFrom(_session_error(answer))
            elif isinstance(answer, Exception):
                log.error("a submission of SubmitJobs failed", exc_info=answer)
                result.error.CopyFrom(pb.SessionError(code="INTERNAL", detail="internal error"))
            else:
                job, created = answer
                result.submitted.job.CopyFrom(convert.job_to_pb(job))
                result.submitted.created = created
        return reply

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> pb.SubmitJobResponse:
        return await self._run("SubmitJob", context, lambda: self._submit(request))

    async def SubmitJobs(
        self, request: pb.SubmitJobsRequest, context: Any
    ) -> pb.SubmitJobsResponse:
        return await self._run("SubmitJobs", context, lambda: self._submit_jobs(request))

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        async def body() -> pb.Job:
            job = await self._s.get_job(request.job_id, include_nodes=request.include_nodes)
            return convert.job_to_pb(job)

        return await self._run("GetJob", context, body)

    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        async def body() -> pb.ListJobsResponse:
            page = await self._s.list_jobs(
                limit=request.limit or 50,
                cursor=request.cursor if request.HasField("cursor") else None,
                status=request.status if request.HasField("status") else None,
            )
            msg = pb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in page.jobs])
            if page.next_cursor:
                msg.next_cursor = page.next_cursor
            return msg

        return await self._run("ListJobs", context, body)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        async def body() -> pb.Job:
            return convert.job_to_pb(await self._s.cancel_job(request.job_id))

        return await self._run("CancelJob", context, body)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Any
    ) -> AsyncIterator[pb.JobEvent]:
        """The job, then its changes. Errors end the stream with their status code (before
        the first message: NOT_FOUND for no such job); the handling time measured is the
        first message's, a stream's length being the watcher's business."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        first = True
        try:
            # aclosing: however this stream ends, the watch leaves the hub at once.
            async with contextlib.aclosing(self._s.watch_job(request.job_id)) as events:
                async for event in events:
                    message = convert.job_event_to_pb(event)
                    if first:
                        first = False
                        elapsed = time.perf_counter() - start
                        self._m.server_seconds.labels("WatchJob").observe(elapsed)
                    yield message
        except MinitemporalError as exc:
            code = exc.grpc_code
            await context.abort(code, exc.detail, trailing_metadata=encode_for_grpc(exc))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the watcher went away
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("WatchJob failed")
            await context.abort(code, "internal error")
        finally:
            self._m.server_calls.labels("WatchJob", code.name).inc()

    # --- task calls: unary, or as messages of a worker's session (same bodies)
    async def _claim(self, request: pb.ClaimTasksRequest) -> pb.ClaimTasksResponse:
        refs = [convert.ref_from_pb(r) for r in request.tasks]
        tasks = await self._s.claim(request.worker_id, refs)
        return pb.ClaimTasksResponse(
            tasks=[convert.task_to_pb(t) for t in tasks], lease_seconds=self._s.lease_seconds
        )

    async def _heartbeat(self, request: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        beats = [convert.beat_from_pb(b) for b in request.running]
        result = await self._s.heartbeat(request.worker_id, beats)
        return pb.HeartbeatResponse(
            cancel=[convert.ref_to_pb(r) for r in result.cancel],
            lost=[convert.ref_to_pb(r) for r in result.lost],
            lease_seconds=self._s.lease_seconds,
        )

    async def _complete(self, request: pb.CompleteTasksRequest) -> pb.CompleteTasksResponse:
        results = [convert.result_from_pb(r, i) for i, r in enumerate(request.results)]
        want = max(0, min(request.want, 1024))
        claim = [convert.ref_from_pb(r) for r in request.claim]
        accepted, tasks = await self._s.complete(request.worker_id, results, want=want, claim=claim)
        return pb.CompleteTasksResponse(
            accepted=accepted,
            tasks=[convert.task_to_pb(t) for t in tasks],
            lease_seconds=self._s.lease_seconds,
        )

    async def _release(self, request: pb.ReleaseTasksRequest) -> pb.ReleaseTasksResponse:
        refs = [convert.ref_from_pb(r) for r in request.tasks]
        released = await self._s.release(request.worker_id, refs)
        return pb.ReleaseTasksResponse(released=[convert.ref_to_pb(r) for r in released])

    async def _withdraw(self, request: pb.WithdrawOfferRequest) -> pb.WithdrawOfferResponse:
        return pb.WithdrawOfferResponse(withdrawn=self._s.withdraw_offer(request.worker_id))

    async def ClaimTasks(
        self, request: pb.ClaimTasksRequest, context: Any
    ) -> pb.ClaimTasksResponse:
        return await self._run("ClaimTasks", context, lambda: self._claim(request))

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        return await self._run("Heartbeat", context, lambda: self._heartbeat(request))

    async def CompleteTasks(
        self, request: pb.CompleteTasksRequest, context: Any
    ) -> pb.CompleteTasksResponse:
        return await self._run("CompleteTasks", context, lambda: self._complete(request))

    async def ReleaseTasks(
        self, request: pb.ReleaseTasksRequest, context: Any
    ) -> pb.ReleaseTasksResponse:
        return await self._run("ReleaseTasks", context, lambda: self._release(request))

    async def WorkerSession(
        self, requests: AsyncIterator[pb.SessionRequest], context: Any
    ) -> AsyncIterator[pb.SessionReply]:
        """Answer each message as soon as it is done, several at once: a slow report must
        not hold up a heartbeat behind it."""
        replies: asyncio.Queue[pb.SessionReply | None] = asyncio.Queue()
        handling: set[asyncio.Task[None]] = set()
        offers: set[asyncio.Task[None]] = set()

        async def answer(request: pb.SessionRequest) -> None:
            replies.put_nowait(await self._session_reply(request))

        async def stand_offer(request: pb.SessionRequest) -> None:
            # Answered straight into the stream by the submission that claims for it: the
            # worker waits on this reply to start a new job's first node.
            def deliver(tasks: list[ClaimedTask]) -> None:
                reply = pb.ClaimTasksResponse(
                    tasks=[convert.task_to_pb(t) for t in tasks],
                    lease_seconds=self._s.lease_seconds,
                )
                replies.put_nowait(pb.SessionReply(id=request.id, offer=reply))

            offer = request.offer
            slots = max(0, min(offer.slots, 1024))
            self._m.server_calls.labels("OfferSlots", grpc.StatusCode.OK.name).inc()
            await self._s.offer(offer.worker_id, slots, offer.wait_seconds, deliver)

        async def read() -> None:
            try:
                async for request in requests:
                    offer = request.WhichOneof("call") == "offer"
                    task = asyncio.create_task((stand_offer if offer else answer)(request))
                    handling.add(task)
                    task.add_done_callback(handling.discard)
                    if offer:
                        offers.add(task)
                        task.add_done_callback(offers.discard)
            finally:
                for task in offers:  # no one will take their answers: lapse them now
                    task.cancel()
                if handling:
                    await asyncio.gather(*handling, return_exceptions=True)
                replies.put_nowait(None)

        if self._ending:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the scheduler is stopping")
        reader = asyncio.create_task(read())
        self._sessions.add(reader)
        reader.add_done_callback(self._sessions.discard)
        try:
            while (reply := await replies.get()) is not None:
                yield reply
        finally:
            reader.cancel()
            for task in list(handling):
                task.cancel()

    async def _session_reply(self, request: pb.SessionRequest) -> pb.SessionReply:
        field = request.WhichOneof("call")
        if field is None:
            error = InvalidInput(UNKNOWN_CALL)  # or a call this version does not know
            return pb.SessionReply(id=request.id, error=_session_error(error))
        method, body = self._calls[field]
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            # The caller's deadline, as grpc applies a unary call's: past it, nobody waits
            # for the answer, and a submission still waiting for its batch is not stored.
            async with asyncio.timeout(request.timeout_seconds or None) as deadline:
                reply = await body(getattr(request, field))
            return pb.SessionReply(id=request.id, **{field: reply})
        except MinitemporalError as exc:
            code = exc.grpc_code
            return pb.SessionReply(id=request.id, error=_session_error(exc))
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                detail = f"{method}: the caller's deadline passed"
            else:
                code = grpc.StatusCode.INTERNAL
                detail = "internal error"
                log.exception("%s failed", method)
            return pb.SessionReply(
                id=request.id, error=pb.SessionError(code=code.name, detail=detail)
            )
        finally:
            self._m.server_calls.labels(method, code.name).inc()
            self._m.server_seconds.labels(method).observe(time.perf_counter() - start)

    def _session_calls(self) -> dict[str, tuple[str, Callable[[Any], Awaitable[Any]]]]:
        return {
            "claim": ("ClaimTasks", self._claim),
            "heartbeat": ("Heartbeat", self._heartbeat),
            "complete": ("CompleteTasks", self._complete),
            "release": ("ReleaseTasks", self._release),
            # Only in a session: an offer (`stand_offer`) lives as long as its stream.
            "withdraw": ("WithdrawOffer", self._withdraw),
            "submit": ("SubmitJob", self._submit),
            "submit_jobs": ("SubmitJobs", self._submit_jobs),
        }


def _session_error(exc: MinitemporalError) -> pb.SessionError:
    return pb.SessionError(
        code=exc.grpc_code.name, detail=exc.detail, error=encode_for_grpc(exc)[0][1]
    )


class SecretInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every call (but health checks) that lacks `authorization: Bearer <secret>`."""

    def __init__(self, secret: str) -> None:
        self._expected = f"Bearer {secret}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_OPEN_PREFIX):
            return await continuation(details)
        given = next((v for k, v in details.invocation_metadata or () if k == AUTH_KEY), "")
        given_bytes = given.encode() if isinstance(given, str) else given
        if hmac.compare_digest(given_bytes, self._expected):
            return await continuation(details)
        log.warning(
            "gRPC call refused: missing or wrong shared secret", extra={"method": details.method}
        )
        return _deny(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or wrong shared secret (set MINITEMPORAL_GRPC_SECRET on every role)",
        )


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(handler)


def build_server(
    service: SchedulerService,
    metrics: GrpcMetrics,
    health: HealthServicer,
    *,
    secret: str | None,
    credentials: grpc.ServerCredentials | None = None,
    address: str,
    servicer: SchedulerServicer | None = None,
) -> tuple[grpc.aio.Server, int]:
    """`servicer`: the caller's own, to end its sessions when it stops."""
    interceptors = [SecretInterceptor(secret)] if secret else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    servicer = servicer or SchedulerServicer(service, metrics)
    pb_grpc.add_SchedulerServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address} for gRPC")
    return server, port


async def set_serving(health: HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        await health.set(name, status)
