"""In-process backend for the embedded mode: a heap and a condition, same contract as Redis."""

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
        self._members: set[TaskRef] = set()
        self._changed = anyio.Event()
        self._epoch_claimed = False

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
                self._members.add(ref)
                heapq.heappush(self._heap, (score, ref))
                added += 1
        if added:
            self._changed.set()
        return added

    def _take(self, max_items: int) -> list[TaskRef]:
        out: list[TaskRef] = []
        while self._heap and len(out) < max_items:
            _, ref = heapq.heappop(self._heap)
            if ref in self._members:  # removed refs stay in the heap until popped
                self._members.discard(ref)
                out.append(ref)
        return out

    async def pop(self, max_items: int, timeout: float) -> list[TaskRef]:
        if timeout <= 0:
            return self._take(max_items)
        with anyio.move_on_after(timeout):
            while True:
                taken = self._take(max_items)
                if taken:
                    return taken
                self._changed = anyio.Event()
                await self._changed.wait()
        return []

    async def remove(self, refs: Sequence[TaskRef]) -> None:
        self._members.difference_update(refs)

    async def depth(self) -> int:
        return len(self._members)

    async def claim_epoch(self) -> bool:
        first, self._epoch_claimed = not self._epoch_claimed, True
        return first
