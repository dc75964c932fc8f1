"""Pure computations behind every figure of the suite (no I/O; unit-tested).

A `Span` is one node attempt (or one Celery task) as the system recorded it: when it was
enqueued, when its command's process had been spawned, when it exited, all in seconds since
the epoch. Every figure is derived from spans, with the definitions below (also in README.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    enqueued: float
    started: float
    finished: float
    submitted: float | None = None  # the client's clock just before the submit call, if known

    @property
    def wait(self) -> float:
        """Enqueue-to-start latency."""
        return self.started - self.enqueued

    @property
    def run(self) -> float:
        """Command time: from spawned to exited."""
        return self.finished - self.started


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100), linear interpolation between closest ranks.

    This is the "linear" method (Hyndman-Fan type 7, numpy's default): the value at rank
    (n - 1) * q / 100 of the sorted values, interpolated between its two neighbours.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, min, p50, p90, p99, max and mean of `values`."""
    return {
        "count": float(len(values)),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def throughput(spans: Sequence[Span], since: float) -> float:
    """Nodes completed per second: count / (last finished - `since`).

    `since` is the client's clock just before the first submit call, so the figure includes
    the cost of submitting the work, as a user of the system sees it.
    """
    if not spans:
        raise ValueError("throughput of no spans")
    elapsed = max(s.finished for s in spans) - since
    if elapsed <= 0:
        raise ValueError("the last node finished before the submission started")
    return len(spans) / elapsed


def chain_edge_overheads(chain: Sequence[Span]) -> list[float]:
    """For a chain given in dependency order: child.started - parent.finished, per edge."""
    if len(chain) < 2:
        raise ValueError("a chain needs at least two nodes")
    return [child.started - parent.finished for parent, child in itertools.pairwise(chain)]


def chain_overhead_per_edge(chain: Sequence[Span]) -> float:
    """(last.finished - first.started - sum of command times) / number of edges.

    Wall time of the chain minus the time its commands ran, shared over its edges. This
    equals the mean of `chain_edge_overheads(chain)`.
    """
    if len(chain) < 2:
        raise ValueError("a chain needs at least two nodes")
    wall = chain[-1].finished - chain[0].started
    command = sum(s.run for s in chain)
    return (wall - command) / (len(chain) - 1)


@dataclass(frozen=True, slots=True)
class FanOverhead:
    """Overheads of a root -> W middle nodes -> sink DAG run on `slots` slots (seconds).

    fan_out: first middle start - root finished: dispatching the children of a finished node.
    level_per_node: idle slot time per middle node while the wide level ran:
        (slots * (last middle finished - root finished) - sum of middle command times) / W.
        With perfect packing and zero overhead it is 0.
    fan_in: sink started - last middle finished: noticing the last dependency and dispatching.
    total: wall - ideal, where wall = sink finished - root started and
        ideal = root run + sum(middle runs) / slots + sink run.
    """

    fan_out: float
    level_per_node: float
    fan_in: float
    total: float


def fan_overhead(root: Span, middle: Sequence[Span], sink: Span, slots: int) -> FanOverhead:
    if not middle:
        raise ValueError("a fan needs middle nodes")
    if slots < 1:
        raise ValueError("slots must be at least 1")
    first_mid_start = min(s.started for s in middle)
    last_mid_finish = max(s.finished for s in middle)
    mid_command = sum(s.run for s in middle)
    level_wall = last_mid_finish - root.finished
    ideal = root.run + mid_command / slots + sink.run
    return FanOverhead(
        fan_out=first_mid_start - root.finished,
        level_per_node=(slots * level_wall - mid_command) / len(middle),
        fan_in=sink.started - last_mid_finish,
        total=(sink.finished - root.started) - ideal,
    )


def ratio(ours: float | None, peer: float | None) -> float | None:
    """ours / peer, or None when either is missing or the peer's figure is zero."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)
