"""Watching jobs: the changes of a job, as they are committed, for WatchJob streams.

The store is the only source of truth, so a watch re-reads its job and compares (see
`domain/changes.py`); nothing is published from inside transactions. A re-read happens when
this scheduler committed something (`poke`, called after every commit: a counter bump and at
most one `Event.set`, so the task hot path pays nothing measurable), and every
`poll_seconds` anyway, to see what other schedulers committed. Re-reads of one job are spaced
by at least `min_gap_seconds` (and by a few times their own duration, so a large job cannot
monopolise the store), and shared by every watcher of that job. No watcher: no re-read, no
task, and `poke` is one increment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from prometheus_client import Gauge

from minitemporal.domain.changes import JobEvent, change_event
from minitemporal.domain.model import JobStatus, JobView
from minitemporal.errors import MinitemporalError, Unavailable
from minitemporal.store.base import Store

log = logging.getLogger("minitemporal.scheduler.watch")


class _Watched:
    """One watched job: its latest read, shared by its watchers, and the task re-reading it."""

    __slots__ = ("changed", "error", "job_id", "latest", "read_seq", "task", "wanted", "watchers")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.watchers = 0
        self.latest: JobView | None = None
        self.read_seq = 0  # the hub's read sequence number when `latest` was read
        self.changed = asyncio.Event()
        self.error: MinitemporalError | None = None
        self.task: asyncio.Task[None] | None = None
        # The newest snapshot of a watcher who joined since: publish the first read after it,
        # changed or not (that watcher's snapshot may differ from `latest`).
        self.wanted = 0

    def publish(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class WatchHub:
    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float = 1.0,
        min_gap_seconds: float = 0.05,
        gauge: Gauge | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.min_gap_seconds = min_gap_seconds
        self._jobs: dict[str, _Watched] = {}
        self._generation = 0  # bumped by every poke
        self._wakeup: asyncio.Event | None = None  # set by the next poke, if anyone waits
        self._reads = 0  # sequence of reads started, to order them
        self._closed = False
        self._gauge = gauge

    @property
    def watched(self) -> int:
        """Jobs being re-read now (however many watchers each has)."""
        return len(self._jobs)

    def poke(self) -> None:
        """Something was committed: watched jobs may have changed. O(1), no allocation."""
        self._generation += 1
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    async def close(self) -> None:
        """End every watch (its stream fails `Unavailable`: clients go to another scheduler)."""
        self._closed = True
        for watched in list(self._jobs.values()):
            if watched.task is not None:
                watched.task.cancel()
            watched.publish()
        tasks = [w.task for w in self._jobs.values() if w.task is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def watch(self, job_id: str) -> AsyncGenerator[JobEvent, None]:
        """The job now (raises `NotFound` first if there is none), then each change, until
        the job finished."""
        if self._closed:
            raise Unavailable("the scheduler is stopping")
        if self._gauge is not None:
            self._gauge.inc()
        try:
            async with contextlib.aclosing(self._watch(job_id)) as events:
                async for event in events:
                    yield event
        finally:
            if self._gauge is not None:
                self._gauge.dec()

    async def _watch(self, job_id: str) -> AsyncGenerator[JobEvent, None]:
        seq = self._next_read()
        seen = await self.store.get_job(job_id, include_nodes=True)
        yield JobEvent(job=seen, snapshot=True)
        if seen.status is not JobStatus.RUNNING:
            return
        watched = self._join(seen.id, seq)
        try:
            while True:
                # Only reads started after the one we sent: an older one would undo changes.
                while watched.read_seq <= seq and watched.error is None and not self._closed:
                    await watched.changed.wait()
                if self._closed:
                    raise Unavailable("the scheduler is stopping")
                if watched.error is not None:
                    raise watched.error
                latest, seq = watched.latest, watched.read_seq
                event = change_event(seen, latest) if latest is not None else None
                if event is None:
                    continue
                seen = latest
                yield event
                if event.finished:
                    return
        finally:
            self._leave(watched)

    def _next_read(self) -> int:
        self._reads += 1
        return self._reads

    def _join(self, job_id: str, seq: int) -> _Watched:
        if self._closed:
            raise Unavailable("the scheduler is stopping")
        watched = self._jobs.get(job_id)
        if watched is None:
            watched = self._jobs[job_id] = _Watched(job_id)
        watched.wanted = max(watched.wanted, seq)
        watched.error = None
        if watched.task is None or watched.task.done():  # new, or it saw the job finish
            watched.task = asyncio.create_task(self._reread(watched))
        watched.watchers += 1
        return watched

    def _leave(self, watched: _Watched) -> None:
        watched.watchers -= 1
        if watched.watchers == 0 and self._jobs.get(watched.job_id) is watched:
            del self._jobs[watched.job_id]
            if watched.task is not None:
                watched.task.cancel()

    async def _reread(self, watched: _Watched) -> None:
        """Re-read the job after each poke (or poll interval), spaced, until unwatched."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            generation = self._generation
            seq = self._next_read()
            started = loop.time()
            try:
                latest = await self.store.get_job(watched.job_id, include_nodes=True)
            except Unavailable as exc:  # the store comes back: keep watching
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("watching job %s: %s (retrying)", watched.job_id, exc)
                await asyncio.sleep(min(self.poll_seconds * 2 ** min(failures, 3), 5.0))
                continue
            except MinitemporalError as exc:  # NotFound: deleted under our feet
                watched.error = exc
                watched.publish()
                return
            except Exception:
                log.exception("watching job %s failed", watched.job_id)
                watched.error = MinitemporalError("internal error while watching the job")
                watched.publish()
                return
            failures = 0
            took = loop.time() - started
            # Watchers compare with what they saw themselves; wake them only for news, or for
            # one whose snapshot is older than this read.
            news = latest != watched.latest
            if watched.wanted and seq > watched.wanted:
                news, watched.wanted = True, 0
            watched.latest, watched.read_seq = latest, seq
            if news:
                watched.publish()
            if latest.status is not JobStatus.RUNNING:
                return  # every watcher gets its `end` from this read
            if self._generation == generation:  # nothing committed meanwhile: wait for it
                wakeup = self._wakeup
                if wakeup is None:
                    wakeup = self._wakeup = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self.poll_seconds)
            gap = max(self.min_gap_seconds, 4 * took) - (loop.time() - started)
            if gap > 0:
                await asyncio.sleep(gap)
