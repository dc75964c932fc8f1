"""The ready-queue interface: ids and attempt numbers only, never commands."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from minitemporal.domain.model import TaskRef


class TaskQueue(abc.ABC):
    """A set of ready attempts ordered by score (enqueue time); pushing twice is a no-op."""

    kind = "queue"  # what health checks and logs call it: "redis", "in-process queue"

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise `Unavailable` unless the queue answers."""

    @abc.abstractmethod
    async def push(self, items: Sequence[tuple[TaskRef, float]]) -> int:
        """Add (ref, score) pairs; a ref already present keeps its place. Returns how many
        were new."""

    @abc.abstractmethod
    async def pop(
        self, max_items: int, timeout: float, *, wake: str | None = None
    ) -> list[TaskRef]:
        """Take up to `max_items` lowest-score refs, waiting up to `timeout` s for the first
        (`timeout` 0: take what is there, without waiting). With `wake`, a `wake(name)` call
        for that name (before or during the wait) ends it early, empty."""

    @abc.abstractmethod
    async def wake(self, name: str) -> None:
        """End the waiting pop of that name now, or the next one (an alarm, not a message)."""

    @abc.abstractmethod
    async def remove(self, refs: Sequence[TaskRef]) -> None: ...

    @abc.abstractmethod
    async def depth(self) -> int: ...

    @abc.abstractmethod
    async def claim_epoch(self) -> bool:
        """True when the queue's contents may have been lost since the last call.

        The first call after a start, a FLUSHALL or a restart of a Redis that keeps nothing
        returns True: the caller must push every queued attempt from the store again.
        """
