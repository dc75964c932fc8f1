"""In-process backend for the embedded mode: a heap and an event, same contract as Redis."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import anyio

from minitemporal.domain.model import TaskRef
from minitemporal.queue.base import TaskQueue


class MemoryQueue(TaskQueue):
    kind = "in-process queue"

    def __init__(self) -> None:
        self._heap: list[tuple[float, TaskRef]] = []
        # The members and their scores. A heap entry whose member was removed, or pushed again
        # with another score, no longer matches this and is skipped when it surfaces.
        self._members: dict[TaskRef, float] = {}
        self._changed: anyio.Event | None = None  # shared by every waiting pop
        self._epoch_claimed = False
        self._alarms: set[str] = set()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def push(self, items: Sequence[tuple[TaskRef, float]]) -> int:
        added = 0
        for ref, score in items:
            if ref not in self._members:
                self._members[ref] = score
                heapq.heappush(self._heap, (score, ref))
                added += 1
        if added and self._changed is not None:
            self._changed.set()
        return added

    def _take(self, max_items: int) -> list[TaskRef]:
        out: list[TaskRef] = []
        while self._heap and len(out) < max_items:
            score, ref = heapq.heappop(self._heap)
            if self._members.get(ref) == score:
                del self._members[ref]
                out.append(ref)
        return out

    async def pop(
        self, max_items: int, timeout: float, *, wake: str | None = None
    ) -> list[TaskRef]:
        if timeout <= 0:
            return self._take(max_items)
        with anyio.move_on_after(timeout):
            while True:
                taken = self._take(max_items)
                if taken:
                    return taken
                if wake is not None and wake in self._alarms:
                    self._alarms.discard(wake)
                    return []
                # Every waiter waits on the same event, so one push wakes them all: a fresh
                # event per waiter would leave the earlier ones asleep beside a full queue.
                if self._changed is None or self._changed.is_set():
                    self._changed = anyio.Event()
                await self._changed.wait()
        return []

    async def wake(self, name: str) -> None:
        self._alarms.add(name)
        if self._changed is not None:
            self._changed.set()

    async def remove(self, refs: Sequence[TaskRef]) -> None:
        for ref in refs:
            self._members.pop(ref, None)

    async def depth(self) -> int:
        return len(self._members)

    async def claim_epoch(self) -> bool:
        """True once: the contents of an in-process queue are lost only with the process."""
        first, self._epoch_claimed = not self._epoch_claimed, True
        return first
