"""The client half of a session: a worker's task calls, or an api's submissions, as messages
on one long-lived bidirectional stream, each answered by id.

One exchange on an open stream costs half of what a unary call costs (CPU and latency,
measured on our machines); a worker makes one or two per task, an api one per job (or per
batch of jobs). The stream opens on first use and again after it breaks; a break fails the
calls in flight as `Unavailable`, which a worker already handles (it retries reports, and a
lost claim is given back by the next heartbeat) and an api answers with 503, as when a unary
call breaks (a retry with the same Idempotency-Key cannot create the job twice). A call of
the session that fails on the scheduler's side comes back in-band as a `SessionError`,
decoded into the same domain error a unary call would raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import grpc

from minitemporal.errors import GRPC_ERROR_KEY, MinitemporalError, Unavailable, decode_from_grpc
from minitemporal.rpc.gen import scheduler_pb2 as pb
from minitemporal.rpc.gen import scheduler_pb2_grpc as pb_grpc

# The unary method each kind of session message stands for.
FIELDS = {
    "ClaimTasks": "claim",
    "Heartbeat": "heartbeat",
    "CompleteTasks": "complete",
    "ReleaseTasks": "release",
    # No unary method: an idle worker's offer of slots lives as long as its session.
    "OfferSlots": "offer",
    "WithdrawOffer": "withdraw",
    # An api's submissions.
    "SubmitJob": "submit",
    "SubmitJobs": "submit_jobs",
}
SUBMIT_METHODS = frozenset({"SubmitJob", "SubmitJobs"})
TASK_METHODS = frozenset(FIELDS) - SUBMIT_METHODS
# What a scheduler answers to a message whose call it does not know (an older version).
UNKNOWN_CALL = "empty session message"


class StreamBroken(Exception):
    """The session stream ended; `status` is how, when the server said so."""

    def __init__(self, status: grpc.aio.AioRpcError | None) -> None:
        super().__init__(status.details() if status is not None else "stream closed")
        self.status = status


class Session:
    def __init__(
        self, stub: pb_grpc.SchedulerStub, metadata: tuple[tuple[str, str], ...], *, wait: bool
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._wait = wait
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.SessionReply]] = {}
        self._call: Any = None  # the open stream-stream call, if any
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    async def call(self, method: str, request: Any, timeout: float) -> Any:
        """Send one call of the session and wait for its reply. Raises StreamBroken when the
        stream fails, and the decoded domain error when the call failed on the scheduler."""
        field = FIELDS[method]
        ident = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pb.SessionReply] = loop.create_future()
        self._pending[ident] = future
        try:
            # The deadline covers the write too: to a scheduler that is gone, a write waits
            # (for the channel, for flow control) as long as the answer would.
            async with asyncio.timeout(timeout) as deadline:
                # What is left of it goes along: the scheduler gives up on the call then.
                when = deadline.when()
                left = 0.0 if when is None else max(0.001, when - loop.time())
                message = pb.SessionRequest(id=ident, timeout_seconds=left, **{field: request})
                await self._send(message)
                reply = await future
        except TimeoutError:
            raise Unavailable(f"no answer to {method} within {timeout:g}s") from None
        finally:
            self._pending.pop(ident, None)
            if future.done() and not future.cancelled():
                future.exception()  # a reset may have failed it after the call gave up on it
        if reply.HasField("error"):
            raise decode_session_error(reply.error)
        return getattr(reply, field)

    async def _send(self, request: pb.SessionRequest) -> None:
        async with self._write_lock:
            call = self._open()
            try:
                await call.write(request)
            except grpc.aio.AioRpcError as exc:
                self._reset(call, exc)
                raise StreamBroken(exc) from None
            except (asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
                self._reset(call, None)
                raise StreamBroken(None) from exc
            except asyncio.CancelledError:
                # Cancelled mid-write (a deadline): the stream may hold half a message.
                self._reset(call, None)
                raise

    def _open(self) -> Any:
        if self._call is None:
            self._call = self._stub.WorkerSession(
                metadata=self._metadata, wait_for_ready=self._wait
            )
            self._reader = asyncio.create_task(self._read(self._call))
        return self._call

    async def _read(self, call: Any) -> None:
        status: grpc.aio.AioRpcError | None = None
        try:
            async for reply in call:
                future = self._pending.get(reply.id)
                if future is not None and not future.done():
                    future.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            status = exc
        except asyncio.CancelledError:
            pass
        self._reset(call, status)

    def _reset(self, call: Any, status: grpc.aio.AioRpcError | None) -> None:
        """Forget a broken stream; fail every call still waiting on it."""
        if self._call is not call:
            return
        self._call = None
        call.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(StreamBroken(status))

    async def close(self) -> None:
        call, reader = self._call, self._reader
        self._call = None
        if call is not None:
            with contextlib.suppress(Exception):
                await call.done_writing()
            call.cancel()
        for future in self._pending.values():  # calls still waiting end now, not at timeout
            if not future.done():
                future.set_exception(StreamBroken(None))
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


def decode_session_error(error: pb.SessionError) -> MinitemporalError:
    """The domain error a call of the session (or one submission of a batch) failed with."""
    code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    trailer = ((GRPC_ERROR_KEY, error.error),) if error.error else ()
    return decode_from_grpc(code, error.detail, trailer)
