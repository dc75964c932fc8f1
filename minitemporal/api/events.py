"""Live job events: a WatchJob stream of the scheduler, as server-sent events.

A stream is `retry: 2000`, then `snapshot` (the job as GET shows it), then `node` and `job`
events as the job changes, and `end` when it finished; every event has an `id` (1, 2, 3...)
and one line of compact JSON. A scheduler that goes away mid-stream (a restart) costs a
reconnect with backoff and a fresh `snapshot`; a quiet stream carries a `: keepalive` comment
line every `keepalive_seconds`. The api caps how many streams it serves, and ends them all
when it stops (uvicorn would otherwise wait for them on shutdown).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from falcon.asgi import SSEvent
from prometheus_client import Gauge

from minitemporal.api import serialize
from minitemporal.domain.changes import JobEvent
from minitemporal.errors import MinitemporalError, NotFound, Unavailable
from minitemporal.rpc.client import JobWatch, SchedulerClient

log = logging.getLogger("minitemporal.api.events")

RETRY_MS = 2000  # how long EventSource clients wait before they reconnect
KEEPALIVE_SECONDS = 15.0
RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
QUEUE_EVENTS = 16  # events rendered ahead of a slow client (then the scheduler's stream waits)

Item = tuple[str, dict[str, Any]]
_CLOSED: Item = ("", {})  # the stream ends without an `end`: the api stops, or the job vanished


def render(event: JobEvent) -> list[Item]:
    """The server-sent events one watch message becomes: (name, JSON document) pairs."""
    job = event.job
    if event.snapshot:
        items = [("snapshot", serialize.job(job, with_nodes=True))]
    else:
        items = [("node", {**serialize.node(n), "job_id": job.id}) for n in event.nodes]
        if event.summary_changed:
            items.append(("job", serialize.job(job, with_nodes=False)))
    if event.finished:
        items.append(("end", serialize.job(job, with_nodes=False)))
    return items


def encode(data: dict[str, Any]) -> bytes:
    """One line of compact, ASCII-only JSON: no newline can split a `data:` field."""
    return json.dumps(data, separators=(",", ":")).encode()


class EventStreams:
    """Every open event stream of this api: the cap, the gauge, and the stop."""

    def __init__(
        self,
        scheduler: SchedulerClient,
        *,
        limit: int = 256,
        gauge: Gauge | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.scheduler = scheduler
        self.limit = limit
        self.keepalive_seconds = keepalive_seconds
        self._gauge = gauge
        self._open: set[EventStream] = set()
        self._closing = False

    @property
    def count(self) -> int:
        """Streams open now."""
        return len(self._open)

    async def open(self, job_id: str) -> EventStream:
        """A stream of the job, its snapshot in hand: errors (no such job, no scheduler, too
        many streams) are raised here, before any response starts."""
        if self._closing:
            raise Unavailable("the api is stopping")
        if len(self._open) >= self.limit:
            raise Unavailable(
                f"this api already serves {self.limit} event streams "
                "(MINITEMPORAL_API_MAX_EVENT_STREAMS); retry later"
            )
        stream = EventStream(self, job_id)
        self._open.add(stream)  # the slot is taken while we wait for the scheduler
        if self._gauge is not None:
            self._gauge.inc()
        try:
            stream.first, stream.watch = await self.scheduler.watch_job(job_id)
        except BaseException:
            self.release(stream)
            raise
        if self._closing:
            stream.shutdown()
            self.release(stream)
            raise Unavailable("the api is stopping")
        return stream

    def release(self, stream: EventStream) -> None:
        if stream in self._open:
            self._open.discard(stream)
            if self._gauge is not None:
                self._gauge.dec()

    def close(self) -> None:
        """End every stream now and refuse new ones: the api is stopping."""
        self._closing = True
        for stream in list(self._open):
            stream.shutdown()


class EventStream:
    """One client's stream: a pump task reads the scheduler's watch (reconnecting when it
    breaks) into a small queue; `events()` sends what the queue holds, or a keepalive."""

    def __init__(self, owner: EventStreams, job_id: str) -> None:
        self._owner = owner
        self.job_id = job_id
        self.first: JobEvent | None = None
        self.watch: JobWatch | None = None
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=QUEUE_EVENTS)
        self._pump: asyncio.Task[None] | None = None
        self._closed = False

    async def events(self) -> AsyncIterator[SSEvent]:
        """What falcon sends (`resp.sse`); ends after `end`, or when the api stops."""
        ids = itertools.count(1)
        try:
            yield SSEvent(retry=RETRY_MS)
            first, self.first = self.first, None  # a large job's snapshot: not kept
            if first is None:
                return
            for name, data in render(first):
                yield SSEvent(data=encode(data), event=name, event_id=str(next(ids)))
            if first.finished or self._closed:
                return
            self._pump = asyncio.create_task(self._run())
            while True:
                try:
                    name, data = await asyncio.wait_for(
                        self._queue.get(), self._owner.keepalive_seconds
                    )
                except TimeoutError:
                    yield SSEvent(comment="keepalive")
                    continue
                if not name:
                    return
                yield SSEvent(data=encode(data), event=name, event_id=str(next(ids)))
                if name == "end":
                    return
        finally:
            self.shutdown()
            self._owner.release(self)

    def shutdown(self) -> None:
        """Stop reading from the scheduler; `events()` ends at its next step."""
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
        if self.watch is not None:
            self.watch.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    async def _run(self) -> None:
        """Forward the watch's events; when it breaks, reconnect with backoff and start again
        from a fresh snapshot. Ends when the job finished (or vanished)."""
        watch = self.watch
        delay = RECONNECT_FIRST_SECONDS
        while watch is not None:
            try:
                async for event in watch:
                    delay = RECONNECT_FIRST_SECONDS
                    for item in render(event):
                        await self._queue.put(item)
                    if event.finished:
                        return
                why = "the scheduler ended the watch"
            except NotFound:
                await self._queue.put(_CLOSED)
                return
            except MinitemporalError as exc:
                why = str(exc)
            log.info("event stream of job %s broke (%s): reconnecting", self.job_id, why)
            watch.cancel()
            watch = None
            while watch is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                try:
                    first, watch = await self._owner.scheduler.watch_job(self.job_id)
                except NotFound:
                    await self._queue.put(_CLOSED)
                    return
                except MinitemporalError as exc:
                    log.debug("event stream of job %s: %s (retrying)", self.job_id, exc)
                    continue
                self.watch = watch
                for item in render(first):
                    await self._queue.put(item)
                if first.finished:
                    return
