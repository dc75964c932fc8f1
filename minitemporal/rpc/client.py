"""The scheduler's client, used by the api and worker roles. Speaks domain objects only."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from minitemporal.domain.changes import JobEvent
from minitemporal.domain.model import (
    Beat,
    ClaimedTask,
    HeartbeatResult,
    JobPage,
    JobSpec,
    JobView,
    Submission,
    TaskRef,
    TaskResult,
)
from minitemporal.errors import (
    CredentialsRejected,
    MinitemporalError,
    Unavailable,
    decode_from_grpc,
)
from minitemporal.groupcommit import ALONE_NODES, BATCH_NODES, GroupCommit
from minitemporal.observability.metrics import GrpcMetrics
from minitemporal.rpc import convert
from minitemporal.rpc.gen import scheduler_pb2 as pb
from minitemporal.rpc.gen import scheduler_pb2_grpc as pb_grpc
from minitemporal.rpc.server import AUTH_KEY, MAX_MESSAGE_BYTES, MAX_SUBMIT_BATCH, SERVICE_NAME
from minitemporal.rpc.session import (
    SUBMIT_METHODS,
    TASK_METHODS,
    UNKNOWN_CALL,
    Session,
    StreamBroken,
    decode_session_error,
)

log = logging.getLogger("minitemporal.rpc")
Answer = tuple[JobView, bool]  # a submission's job, and whether this call created it
_REFUSED_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
REFUSAL_LOG_SECONDS = 60.0
SUBMIT_CALLS = 2


class SchedulerClient:
    def __init__(
        self,
        address: str,
        *,
        metrics: GrpcMetrics,
        secret: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
        wait_for_ready: bool = False,
        tasks: bool = False,
        submissions: bool = False,
    ) -> None:
        """`tasks`: send the task calls (claim, heartbeat, complete, release, offers) as
        messages of one long-lived stream, as a worker does; `submissions`: send SubmitJob and
        SubmitJobs on it too, as an api does. Other calls stay unary."""
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            # Several schedulers behind one name (DNS, compose alias): spread calls over all.
            ("grpc.lb_policy_name", "round_robin"),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        self._stub = pb_grpc.SchedulerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = ((AUTH_KEY, f"Bearer {secret}"),) if secret else ()
        self._metrics = metrics
        self._timeout = timeout
        self._wait = wait_for_ready
        self.address = address
        self.refused: str | None = None  # why the scheduler refused our last call, if it did
        self._refusal_logged_at = -REFUSAL_LOG_SECONDS
        self._on_session = (TASK_METHODS if tasks else frozenset()) | (
            SUBMIT_METHODS if submissions else frozenset()
        )
        self._session = Session(self._stub, self._metadata, wait=wait_for_ready)
        # Submissions have streams of their own, one per call that may be out: a worker's
        # reports never queue behind them, and each stream opens on the next scheduler of
        # several behind one address, as unary calls would spread.
        self._submit_sessions = [
            Session(self._stub, self._metadata, wait=wait_for_ready)
            for _ in range(SUBMIT_CALLS if submissions else 0)
        ]
        self._next_submit = itertools.cycle(self._submit_sessions)
        # Submissions made while SUBMIT_CALLS calls are out wait and go together in one
        # SubmitJobs call, which the scheduler stores in one transaction; a lone one goes at
        # once as a SubmitJob. (Unary, more calls out spread a busy api over several
        # schedulers; on a session, they all go to the scheduler its stream opened on.)
        self._submits: GroupCommit[Submission, Answer] = GroupCommit(
            self._submit_batch,
            concurrency=SUBMIT_CALLS,
            max_items=MAX_SUBMIT_BATCH,
            max_weight=BATCH_NODES,
            weight=lambda s: len(s.spec.nodes),
        )
        self._batch_calls = True  # False once a scheduler answers that it has no SubmitJobs

    async def end_session(self) -> None:
        """End the streams once their calls are over: a scheduler that is stopping would
        otherwise wait out its grace period for them. The next call opens one again."""
        for session in (self._session, *self._submit_sessions):
            await session.close()

    async def close(self) -> None:
        await self.end_session()
        await self._channel.close()

    async def _call(
        self,
        method: str,
        request: Any,
        timeout: float | None = None,
        *,
        raw: tuple[grpc.StatusCode, ...] = (),
        unary: bool = False,
    ) -> Any:
        """`raw`: status codes raised as grpc's own error, not as a domain error. `unary`: a
        call of its own even where the method goes on a session."""
        start = time.perf_counter()
        code = "OK"
        try:
            if method in self._on_session and not unary:
                session = self._session if method in TASK_METHODS else next(self._next_submit)
                reply = await session.call(method, request, timeout or self._timeout)
            else:
                reply = await getattr(self._stub, method)(
                    request,
                    timeout=timeout or self._timeout,
                    metadata=self._metadata,
                    wait_for_ready=self._wait,
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            if exc.code() in raw:
                raise
            raise self._error(exc) from None
        except StreamBroken as exc:
            # The stream itself ended: a refusal of our credentials, or a broken transport
            # (a scheduler stopping ends it with UNAVAILABLE, CANCELLED or even INTERNAL).
            status = exc.status
            code = status.code().name if status is not None else "UNAVAILABLE"
            if status is not None and status.code() in _REFUSED_CODES:
                raise self._refusal(status.details() or code) from None
            raise Unavailable(f"scheduler at {self.address}: session broke ({code})") from None
        except MinitemporalError as exc:  # a call of the session failed on the scheduler
            code = exc.grpc_code.name
            if exc.grpc_code in _REFUSED_CODES:
                raise self._refusal(exc.detail) from None
            if not (method in SUBMIT_METHODS and exc.detail == UNKNOWN_CALL):
                raise
            reply = None  # a scheduler older than submissions on a session: nothing was done
        finally:
            self._metrics.client_calls.labels(method, code).inc()
            self._metrics.client_seconds.labels(method).observe(time.perf_counter() - start)
        if reply is None:
            log.warning("the scheduler at %s takes no submissions on a session", self.address)
            self._on_session -= SUBMIT_METHODS
            return await self._call(method, request, timeout, raw=raw)
        self.refused = None
        return reply

    def _error(self, exc: grpc.aio.AioRpcError) -> MinitemporalError:
        """The domain error a failed call stands for."""
        if exc.code() in _REFUSED_CODES:
            return self._refusal(exc.details() or exc.code().name)
        return decode_from_grpc(exc.code(), exc.details(), exc.trailing_metadata())

    def _refusal(self, details: str) -> CredentialsRejected:
        """The scheduler does not authorise users, only peers: a refusal means our own secret
        (or certificate) is wrong. Say so loudly, once a minute, not on every call."""
        message = (
            f"the scheduler at {self.address} refused our credentials "
            f"(MINITEMPORAL_GRPC_SECRET must be the same on every role): {details}"
        )
        now = time.monotonic()
        if self.refused is None or now - self._refusal_logged_at >= REFUSAL_LOG_SECONDS:
            log.error(message)
            self._refusal_logged_at = now
        # Callers (REST clients, /healthz) learn that, not where the scheduler is.
        self.refused = "the scheduler refused this process's credentials (see its log)"
        return CredentialsRejected(self.refused)

    # --- jobs
    async def submit_job(
        self,
        spec: JobSpec,
        *,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
    ) -> tuple[JobView, bool]:
        submission = Submission(spec, idempotency_key, request_digest)
        if len(spec.nodes) > ALONE_NODES:
            # A call of its own: on a stream, its large messages would hold up the small
            # submissions behind them.
            return await self._submit_one(submission, unary=True)
        return await self._submits(submission)

    async def _submit_one(self, s: Submission, *, unary: bool = False) -> tuple[JobView, bool]:
        reply = await self._call("SubmitJob", convert.submission_to_pb(s), unary=unary)
        return convert.job_from_pb(reply.job), reply.created

    async def _submit_each(self, batch: list[Submission]) -> list[Answer | BaseException]:
        if len(batch) == 1:  # the light-load path: no task per call, as gather would make
            try:
                return [await self._submit_one(batch[0])]
            except Exception as exc:
                return [exc]
        return await asyncio.gather(*map(self._submit_one, batch), return_exceptions=True)

    async def _submit_batch(self, batch: list[Submission]) -> list[Answer | BaseException]:
        """One call for what waited: SubmitJob for one, SubmitJobs for more (SubmitJob each
        if the scheduler predates SubmitJobs)."""
        if len(batch) == 1 or not self._batch_calls:
            return await self._submit_each(batch)
        request = pb.SubmitJobsRequest(jobs=[convert.submission_to_pb(s) for s in batch])
        try:
            reply = await self._call("SubmitJobs", request, raw=(grpc.StatusCode.UNIMPLEMENTED,))
        except grpc.aio.AioRpcError:
            log.warning("the scheduler at %s has no SubmitJobs: one call per job", self.address)
            self._batch_calls = False
            return await self._submit_each(batch)
        if len(reply.results) != len(batch):
            raise Unavailable(f"{len(reply.results)} results for {len(batch)} submissions")
        answers: list[Answer | BaseException] = []
        for result in reply.results:
            if result.HasField("error"):
                answers.append(decode_session_error(result.error))
            else:
                answers.append(
                    (convert.job_from_pb(result.submitted.job), result.submitted.created)
                )
        return answers

    async def get_job(self, job_id: str, *, include_nodes: bool = True) -> JobView:
        reply = await self._call(
            "GetJob", pb.GetJobRequest(job_id=job_id, include_nodes=include_nodes)
        )
        return convert.job_from_pb(reply)

    async def list_jobs(
        self, *, limit: int, cursor: str | None = None, status: str | None = None
    ) -> JobPage:
        request = pb.ListJobsRequest(limit=limit)
        if cursor is not None:
            request.cursor = cursor
        if status is not None:
            request.status = status
        reply = await self._call("ListJobs", request)
        return JobPage(
            jobs=tuple(convert.job_from_pb(j) for j in reply.jobs),
            next_cursor=reply.next_cursor if reply.HasField("next_cursor") else None,
        )

    async def cancel_job(self, job_id: str) -> JobView:
        return convert.job_from_pb(
            await self._call("CancelJob", pb.CancelJobRequest(job_id=job_id))
        )

    async def watch_job(self, job_id: str) -> tuple[JobEvent, JobWatch]:
        """Open a watch of the job: its snapshot (errors, e.g. `NotFound`, are raised here,
        within the call timeout), and the stream of its changes that follows."""
        start = time.perf_counter()
        call = self._stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=self._metadata, wait_for_ready=self._wait
        )
        watch = JobWatch(self, call)
        try:
            first = await asyncio.wait_for(anext(watch), self._timeout)
        except TimeoutError:
            watch.cancel("DEADLINE_EXCEEDED")
            raise Unavailable(f"scheduler at {self.address}: no answer in time") from None
        except StopAsyncIteration:
            raise Unavailable(f"scheduler at {self.address}: the watch ended at once") from None
        except BaseException:
            watch.cancel()
            raise
        self._metrics.client_seconds.labels("WatchJob").observe(time.perf_counter() - start)
        self.refused = None
        return first, watch

    # --- tasks
    async def claim(self, worker_id: str, refs: Sequence[TaskRef]) -> list[ClaimedTask]:
        reply = await self._call(
            "ClaimTasks",
            pb.ClaimTasksRequest(worker_id=worker_id, tasks=[convert.ref_to_pb(r) for r in refs]),
        )
        return [convert.task_from_pb(t) for t in reply.tasks]

    async def heartbeat(
        self, worker_id: str, beats: Sequence[Beat], *, timeout: float | None = None
    ) -> HeartbeatResult:
        reply = await self._call(
            "Heartbeat",
            pb.HeartbeatRequest(
                worker_id=worker_id, running=[convert.beat_to_pb(b) for b in beats]
            ),
            timeout=timeout,
        )
        return HeartbeatResult(
            cancel=tuple(convert.ref_from_pb(r) for r in reply.cancel),
            lost=tuple(convert.ref_from_pb(r) for r in reply.lost),
        )

    async def complete(
        self,
        worker_id: str,
        results: Sequence[TaskResult],
        *,
        want: int = 0,
        claim: Sequence[TaskRef] = (),
    ) -> tuple[list[bool], list[ClaimedTask]]:
        """Report results; for `want` free slots, also claim `claim` (refs we popped) and
        then attempts the results unblocked. Returns acceptance and the attempts now ours."""
        reply = await self._call(
            "CompleteTasks",
            pb.CompleteTasksRequest(
                worker_id=worker_id,
                results=[convert.result_to_pb(r) for r in results],
                want=want,
                claim=[convert.ref_to_pb(r) for r in claim],
            ),
        )
        return list(reply.accepted), [convert.task_from_pb(t) for t in reply.tasks]

    @property
    def can_offer(self) -> bool:
        """Offers of slots need a session: they live as long as its stream."""
        return "OfferSlots" in self._on_session

    async def offer(self, worker_id: str, slots: int, wait_seconds: float) -> list[ClaimedTask]:
        """Offer idle slots until a submission claims work for them (returned), the offer is
        withdrawn or `wait_seconds` pass (empty)."""
        reply = await self._call(
            "OfferSlots",
            pb.OfferRequest(worker_id=worker_id, slots=slots, wait_seconds=wait_seconds),
            timeout=wait_seconds + self._timeout,
        )
        return [convert.task_from_pb(t) for t in reply.tasks]

    async def withdraw_offer(self, worker_id: str) -> None:
        await self._call(
            "WithdrawOffer",
            pb.WithdrawOfferRequest(worker_id=worker_id),
            timeout=min(self._timeout, 2.0),
        )

    async def release(self, worker_id: str, refs: Sequence[TaskRef]) -> list[TaskRef]:
        reply = await self._call(
            "ReleaseTasks",
            pb.ReleaseTasksRequest(worker_id=worker_id, tasks=[convert.ref_to_pb(r) for r in refs]),
        )
        return [convert.ref_from_pb(r) for r in reply.released]

    async def check_health(self, timeout: float = 0.8) -> None:
        """Raise `Unavailable` unless the scheduler says it is serving."""
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"scheduler at {self.address}: {exc.code().name}") from None
        if self.refused is not None:
            raise CredentialsRejected(self.refused)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable(
                f"scheduler at {self.address} is not serving (its store or queue is down)"
            )


class JobWatch:
    """The changes of a watched job, as `JobEvent`s, until the job finished; a broken stream
    raises the domain error of its status (`Unavailable` when a scheduler went away)."""

    def __init__(self, client: SchedulerClient, call: Any) -> None:
        self._client = client
        self._call = call
        self._done = False

    def __aiter__(self) -> JobWatch:
        return self

    async def __anext__(self) -> JobEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._finish(exc.code().name)
            raise self._client._error(exc) from None
        if message is grpc.aio.EOF:
            self._finish("OK")
            raise StopAsyncIteration
        event = convert.job_event_from_pb(message)
        if event.finished:
            self._finish("OK")  # the last message: the scheduler ends the stream
        return event

    def cancel(self, code: str = "CANCELLED") -> None:
        """Stop watching (the scheduler sees the stream cancelled)."""
        if not self._done:
            self._finish(code)
            self._call.cancel()

    def _finish(self, code: str) -> None:
        self._done = True
        self._client._metrics.client_calls.labels("WatchJob", code).inc()
