"""The scheduler's registry of idle workers' offers: pure asyncio, no I/O."""

from __future__ import annotations

import asyncio

import pytest

from minitemporal.domain.model import ClaimedTask, TaskRef
from minitemporal.scheduler.offers import Offers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the registry uses asyncio futures and timeouts directly


def task(node: int) -> ClaimedTask:
    return ClaimedTask(TaskRef(node, 1), "job", f"n{node}", "true", None, (), False)


class Stand:
    """One standing offer, as a session handler runs it: answers land in `answers`."""

    def __init__(self, offers: Offers, worker: str, slots: int, seconds: float = 10.0) -> None:
        self.answers: list[list[ClaimedTask]] = []
        self.done = asyncio.ensure_future(offers.stand(worker, slots, seconds, self.answers.append))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_oldest_offers_are_taken_first_until_the_slots_are_covered() -> None:
    offers = Offers()
    w1, w2, w3 = Stand(offers, "w1", 2), Stand(offers, "w2", 1), Stand(offers, "w3", 5)
    await settle()
    assert len(offers) == 3
    taken = offers.take(3)
    assert [o.worker_id for o in taken] == ["w1", "w2"], "2 + 1 slots cover 3 ready nodes"
    assert len(offers) == 1
    taken[0].answer([task(1), task(2)])
    taken[1].answer([task(3)])
    await settle()
    assert w1.answers == [[task(1), task(2)]] and w2.answers == [[task(3)]]
    assert w1.done.done() and w2.done.done() and not w3.done.done()
    assert offers.withdraw("w3") == 1
    await settle()
    assert w3.answers == [[]] and w3.done.done() and len(offers) == 0


async def test_an_offer_lapses_empty_after_its_time() -> None:
    offers = Offers()
    s = Stand(offers, "w", 2, seconds=0.05)
    await asyncio.wait_for(s.done, 5)
    assert s.answers == [[]] and len(offers) == 0
    zero = Stand(offers, "w", 0)
    await asyncio.wait_for(zero.done, 5)
    assert zero.answers == [[]], "no slots, nothing to offer"


async def test_a_taken_offer_outlives_its_time_until_the_submission_answers() -> None:
    offers = Offers()
    s = Stand(offers, "w", 1, seconds=0.05)
    await settle()
    [taken] = offers.take(1)
    assert offers.withdraw("w") == 0, "a submission is claiming for it: not withdrawn"
    await asyncio.sleep(0.15)
    assert not s.done.done() and s.answers == [], "its attempts are committed for it"
    taken.answer([task(7)])
    await asyncio.wait_for(s.done, 5)
    assert s.answers == [[task(7)]]


async def test_put_back_reopens_first_in_line_or_answers_a_gone_offer() -> None:
    offers = Offers()
    first, second = Stand(offers, "w1", 1), Stand(offers, "w2", 1)
    await settle()
    taken = offers.take(1)
    offers.put_back(taken)  # the submission claimed nothing for it
    assert [o.worker_id for o in offers.take(2)] == ["w1", "w2"], "back at the front"
    lapsed = Stand(offers, "w3", 1, seconds=0.05)
    await settle()
    [late] = offers.take(1)
    await asyncio.sleep(0.15)  # its time passed while taken
    offers.put_back([late])
    await asyncio.wait_for(lapsed.done, 5)
    assert lapsed.answers == [[]] and len(offers) == 0, "answered empty, not reopened"
    for s in (first, second):
        s.done.cancel()


async def test_a_cancelled_stand_leaves_no_offer_behind() -> None:
    offers = Offers()
    s = Stand(offers, "w", 3)
    await settle()
    s.done.cancel()  # the session ended
    await settle()
    assert len(offers) == 0 and offers.take(3) == []
