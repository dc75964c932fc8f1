"""Group commit: calls that arrive while earlier ones are in flight go together.

At light load a call goes at once, alone, so it waits for nothing. Under load the calls that
queue up behind the batches in flight become the next batch. A scheduler uses it to store
submissions (one statement, one durable commit and one queue push for a batch, where each
used to pay for its own: how PostgreSQL shares a WAL flush among concurrent commits, one level
up); an api uses it to send them (one SubmitJobs call for a batch). No I/O here: the caller
supplies what handles a batch.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Bounds of a batch of submissions, the same for an api's calls and a scheduler's commits.
BATCH_JOBS = 64
BATCH_NODES = 1000
ALONE_NODES = 100  # a job of more nodes goes on its own: its rows are what it costs

# Stores a batch; a result per item, in order: a value, or the exception for that item alone.
RunBatch = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    """At most `concurrency` batches in flight; a batch takes what waits, oldest first, up to
    `max_items` items and `max_weight` in all (one item heavier than that goes alone)."""

    def __init__(
        self,
        run: RunBatch[T, R],
        *,
        concurrency: int = 1,
        max_items: int = 64,
        max_weight: int = 2000,
        weight: Callable[[T], int] = lambda _: 1,
    ) -> None:
        if concurrency < 1 or max_items < 1:
            raise ValueError("concurrency and max_items must be at least 1")
        self._run = run
        self._concurrency = concurrency
        self._max_items = max_items
        self._max_weight = max_weight
        self._weight = weight
        self._waiting: collections.deque[tuple[T, asyncio.Future[R]]] = collections.deque()
        self._flushers: set[asyncio.Task[None]] = set()
        self._inline = 0  # batches of one stored in their caller's task

    @property
    def in_flight(self) -> int:
        """Batches being stored."""
        return len(self._flushers) + self._inline

    @property
    def waiting(self) -> int:
        """Calls waiting for the next batch."""
        return len(self._waiting)

    async def __call__(self, item: T) -> R:
        """The item's result once its batch is stored. A caller cancelled while its item waits
        in a batch does not take it back (the batch may be committing), just as a cancelled
        call's own statement may commit."""
        if self.in_flight < self._concurrency and not self._waiting:
            return await self._alone(item)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if self.in_flight < self._concurrency:
            self._start_flusher()
        return await future

    async def many(self, items: Sequence[T]) -> list[R | BaseException]:
        """Several items at once (a caller's own batch): they wait together, so they are
        stored in as few batches as the bounds allow. A result per item, in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            futures.append(loop.create_future())
            self._waiting.append((item, futures[-1]))
        if futures and self.in_flight < self._concurrency:
            self._start_flusher()
        return await asyncio.gather(*futures, return_exceptions=True)

    async def _alone(self, item: T) -> R:
        """Nothing in flight: store it in the caller's own task (no hop through another task
        and back), then hand what queued up meanwhile to a flusher."""
        self._inline += 1
        try:
            (result,) = await self._run([item])
        finally:
            self._inline -= 1
            if self._waiting and self.in_flight < self._concurrency:
                self._start_flusher()
        if isinstance(result, BaseException):
            raise result
        return result

    def _start_flusher(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self._flushers.add(task)
        task.add_done_callback(self._flushers.discard)  # ended before its first step

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        weight = 0
        while self._waiting and len(batch) < self._max_items:
            item, future = self._waiting[0]
            if future.cancelled():  # its caller left before it was taken: nothing to store
                self._waiting.popleft()
                continue
            w = self._weight(item)
            if batch and weight + w > self._max_weight:
                break
            self._waiting.popleft()
            batch.append((item, future))
            weight += w
        return batch

    async def _flush(self) -> None:
        try:
            await self._flush_batches()
        finally:
            # Out of `in_flight` in the step that found nothing more to take, not when the
            # task's done callback runs a turn later: a caller this flusher answered runs
            # before that callback, and a call it made at once would have queued behind a
            # flusher that had ended, until some other call came along.
            if (task := asyncio.current_task()) is not None:
                self._flushers.discard(task)

    async def _flush_batches(self) -> None:
        while batch := self._take():
            try:
                results = await self._run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # the whole batch failed (an outage): every caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
