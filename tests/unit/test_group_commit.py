"""Group commit of submissions: pure asyncio, no I/O. The store is a fake that records each
batch it is given and holds it until the test lets it go."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from minitemporal.groupcommit import GroupCommit

pytestmark = pytest.mark.anyio


class Store:
    """Stores batches of strings; each batch waits for `release()` unless `hold` is off."""

    def __init__(self, *, hold: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.hold = hold
        self._gates: list[asyncio.Event] = []
        self.failing: Exception | None = None  # raised for a whole batch

    async def run(self, batch: list[str]) -> Sequence[str | BaseException]:
        self.batches.append(batch)
        gate = asyncio.Event()
        self._gates.append(gate)
        if self.hold:
            await gate.wait()
        if self.failing is not None:
            raise self.failing
        return [ValueError(item) if item.startswith("bad") else item.upper() for item in batch]

    def release(self) -> None:
        for gate in self._gates:
            gate.set()


async def until(condition: object, rounds: int = 100) -> None:
    """Let the loop run until `condition()` holds (a bounded number of turns)."""
    for _ in range(rounds):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def start(group: GroupCommit[str, str], item: str) -> asyncio.Task[str]:
    return asyncio.ensure_future(group(item))


async def test_a_lone_call_is_stored_at_once_alone() -> None:
    store = Store(hold=False)
    group: GroupCommit[str, str] = GroupCommit(store.run)
    assert await group("a") == "A"
    assert store.batches == [["a"]]
    assert group.in_flight == 0


async def test_calls_that_arrive_meanwhile_go_together_in_the_next_batch() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run)
    first = start(group, "a")
    await until(lambda: store.batches)
    rest = [start(group, x) for x in "bcd"]
    await until(lambda: group.waiting == 3)
    assert store.batches == [["a"]], "nothing more while one batch is in flight"
    store.release()
    await until(lambda: len(store.batches) == 2)
    store.release()
    assert [await t for t in (first, *rest)] == ["A", "B", "C", "D"]
    assert store.batches == [["a"], ["b", "c", "d"]]


async def test_one_items_error_goes_to_its_caller_only() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run)
    first = start(group, "a")
    await until(lambda: store.batches)
    good, bad = start(group, "b"), start(group, "bad")
    store.release()
    await until(lambda: len(store.batches) == 2)
    store.release()
    assert await first == "A" and await good == "B"
    with pytest.raises(ValueError, match="bad"):
        await bad


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run)
    first = start(group, "a")
    await until(lambda: store.batches)
    waiting = [start(group, "b"), start(group, "c")]
    store.failing = ConnectionError("down")
    store.release()
    await until(lambda: len(store.batches) == 2)
    store.release()
    for task in (first, *waiting):
        with pytest.raises(ConnectionError):
            await task
    store.failing, store.hold = None, False
    assert await group("d") == "D", "the next call is stored as usual"


async def test_batches_are_bounded_by_items_and_weight() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run, max_items=3, max_weight=10, weight=len)
    first = start(group, "a")
    await until(lambda: store.batches)
    items = ["b", "c", "d", "e", "ffffff", "gggggg", "h" * 12, "i"]
    waiting = [start(group, x) for x in items]
    await until(lambda: group.waiting == len(items))
    for _ in range(6):
        store.release()
        await asyncio.sleep(0)
    store.hold = False
    store.release()
    assert [await t for t in waiting] == [x.upper() for x in items]
    await first
    assert store.batches == [
        ["a"],
        ["b", "c", "d"],  # three items at most
        ["e", "ffffff"],  # weight 7; "gggggg" would make 13
        ["gggggg"],
        ["h" * 12],  # heavier than the bound: alone
        ["i"],
    ]


async def test_concurrency_lets_that_many_batches_be_in_flight() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run, concurrency=2)
    tasks = [start(group, "a"), start(group, "b")]
    await until(lambda: len(store.batches) == 2)
    tasks += [start(group, "c"), start(group, "d")]
    await until(lambda: group.waiting == 2)
    assert store.batches == [["a"], ["b"]]
    store.release()
    await until(lambda: len(store.batches) >= 3)
    store.hold = False
    store.release()
    assert [await t for t in tasks] == ["A", "B", "C", "D"]
    assert sorted(x for b in store.batches[2:] for x in b) == ["c", "d"]


async def test_a_caller_that_left_before_its_batch_is_not_stored() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run)
    first = start(group, "a")
    await until(lambda: store.batches)
    gone, kept = start(group, "gone"), start(group, "kept")
    await asyncio.sleep(0)
    gone.cancel()
    store.release()
    await until(lambda: len(store.batches) == 2)
    store.release()
    assert await first == "A" and await kept == "KEPT"
    assert store.batches == [["a"], ["kept"]]


async def test_a_wrong_number_of_results_is_an_error_for_every_caller() -> None:
    gate = asyncio.Event()

    async def short(batch: list[str]) -> Sequence[str]:
        await gate.wait()
        return batch[:1]

    group: GroupCommit[str, str] = GroupCommit(short)
    first = start(group, "a")
    await asyncio.sleep(0)
    others = [start(group, "b"), start(group, "c")]
    await until(lambda: group.waiting == 2)
    gate.set()
    assert await first == "a"
    for task in others:
        with pytest.raises(RuntimeError, match="1 results for a batch of 2"):
            await task


async def test_many_items_of_one_caller_go_in_as_few_batches_as_the_bounds_allow() -> None:
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run, max_items=3)
    first = start(group, "a")
    await until(lambda: store.batches)
    many = asyncio.ensure_future(group.many(["b", "bad", "c", "d"]))
    await until(lambda: group.waiting == 4)
    store.hold = False
    store.release()
    results = await many
    assert results[0] == "B" and isinstance(results[1], ValueError)
    assert results[2:] == ["C", "D"]
    assert await first == "A"
    assert store.batches == [["a"], ["b", "bad", "c"], ["d"]]


async def test_many_with_nothing_in_flight_is_one_batch() -> None:
    store = Store(hold=False)
    group: GroupCommit[str, str] = GroupCommit(store.run)
    assert await group.many(["a", "b"]) == ["A", "B"]
    assert await group.many([]) == []
    assert store.batches == [["a", "b"]]


@pytest.mark.parametrize("how", ["call", "many"])
async def test_a_call_made_as_the_last_flusher_ends_is_stored(how: str) -> None:
    """The caller a flusher answers last runs before the flusher's task is seen as done: a
    call it makes at once must not wait behind a flusher that has already ended (it waited
    for the next call to come along: a lone submission hung until its deadline)."""
    store = Store()
    group: GroupCommit[str, str] = GroupCommit(store.run, concurrency=1)
    first = start(group, "a")  # stored alone, in its own task, held
    await until(lambda: group.in_flight == 1)
    store.hold = False

    async def release_once_b_waits() -> None:
        await until(lambda: group.waiting == 1)
        store.release()

    helper = asyncio.ensure_future(release_once_b_waits())
    assert await group("b") == "B"  # waited behind "a": stored by a flusher
    assert store.batches == [["a"], ["b"]]
    # The flusher stored "b" and found nothing more: it has ended, its done callback not run.
    # Called in this very step (no task in between), under a deadline of this task's own.
    async with asyncio.timeout(2):
        late = await group("c") if how == "call" else await group.many(["c"])
    assert late in ("C", ["C"])
    assert await first == "A"
    await helper
