"""Idle workers' standing offers of free slots.

A worker waiting on an empty queue offers its free slots over its session. A submission then
claims its job's ready nodes for the oldest offers in its own transaction and answers the offers
with them: no push, no pop, no separate claim. What the offers cannot take goes to the queue as
before. An offer is only a hint: the claim in the store is what grants an attempt, and an
attempt claimed for a worker that never hears of it is given back by that worker's next
heartbeat (it does not list it) or by its lease, as for any lost claim reply.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from minitemporal.domain.model import ClaimedTask

MAX_OFFER_WAIT = 60.0  # seconds a worker may ask an offer to stand


Deliver = Callable[[list[ClaimedTask]], None]


@dataclass(eq=False, slots=True)
class Offer:
    worker_id: str
    slots: int
    key: int
    deliver: Deliver  # sends the answer on the worker's session, without a task in between
    gone: bool = False  # its worker stopped waiting: never open it again
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, tasks: Sequence[ClaimedTask] = ()) -> None:
        """Once: deliver the attempts claimed for this offer (none: the offer lapsed)."""
        if not self.answered.is_set():
            self.answered.set()
            self.deliver(list(tasks))


class Offers:
    """Offers not yet taken, oldest first (the worker that waited longest gets work first, as
    a blocking pop would). A taken offer leaves the registry until it is answered."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._open: OrderedDict[int, Offer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    async def stand(self, worker_id: str, slots: int, seconds: float, deliver: Deliver) -> None:
        """Stand an offer until a submission answers it with the attempts it claimed for it,
        it is withdrawn, or `seconds` pass (answered empty). Returns once answered."""
        offer = Offer(worker_id, slots, next(self._ids), deliver)
        if slots <= 0:
            offer.answer()
            return
        self._open[offer.key] = offer
        try:
            async with asyncio.timeout(max(0.0, min(seconds, MAX_OFFER_WAIT))):
                await offer.answered.wait()
        except TimeoutError:
            if self._open.pop(offer.key, None) is not None:
                offer.answer()
                return
            # Taken by a submission in flight: its answer (the claimed attempts) is due at
            # its commit, and the worker must learn of them. If it claims nothing after all,
            # `put_back` answers empty (gone) instead of opening the offer again.
            offer.gone = True
            await offer.answered.wait()
        finally:
            # Cancelled (the session ended): an open offer is gone; a taken one is answered
            # to nobody, and its attempts come back through the heartbeat or the lease.
            offer.gone = True
            self._open.pop(offer.key, None)

    def withdraw(self, worker_id: str) -> int:
        """Answer the worker's open offers empty; a taken one stays to be answered."""
        keys = [k for k, o in self._open.items() if o.worker_id == worker_id]
        for key in keys:
            self._open.pop(key).answer()
        return len(keys)

    def take(self, wanted: int) -> list[Offer]:
        """Offers covering up to `wanted` slots, oldest first, out of the registry."""
        taken: list[Offer] = []
        while wanted > 0 and self._open:
            _, offer = self._open.popitem(last=False)
            taken.append(offer)
            wanted -= offer.slots
        return taken

    def put_back(self, offers: Sequence[Offer]) -> None:
        """Offers taken for a submission that claimed nothing for them: open again, first in
        line (the worker may still be waiting; if not, its session's end answers them)."""
        for offer in reversed(offers):
            if offer.gone or offer.answered.is_set():
                offer.answer()
                continue
            self._open[offer.key] = offer
            self._open.move_to_end(offer.key, last=False)
