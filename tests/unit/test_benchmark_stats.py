"""The benchmark suite's computations: percentiles, throughput, per-edge DAG overhead."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import stats
from benchmarks.stats import Span

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert stats.percentile(values, 0) == 15.0
    assert stats.percentile(values, 100) == 50.0
    assert stats.percentile(values, 50) == 35.0
    assert stats.percentile(values, 25) == 20.0
    assert stats.percentile(values, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert stats.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5  # unsorted input, even count


def test_percentile_of_one_value_is_that_value() -> None:
    assert stats.percentile([7.5], 0) == stats.percentile([7.5], 99) == 7.5


def test_p99_of_a_hundred_values() -> None:
    values = [float(i) for i in range(1, 101)]  # 1..100
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile(values, 90) == pytest.approx(90.1)


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        stats.percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)


@given(st.lists(finite, min_size=1, max_size=200))
def test_percentile_agrees_with_the_standard_library(values: list[float]) -> None:
    # statistics.quantiles(method="inclusive") is the same linear method.
    if len(values) >= 2:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        for q in (1, 10, 50, 90, 99):
            assert stats.percentile(values, q) == pytest.approx(cuts[q - 1], abs=1e-6)
    assert stats.percentile(values, 0) == min(values)
    assert stats.percentile(values, 100) == max(values)


@given(st.lists(finite, min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotonic_in_q(values: list[float], a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert stats.percentile(values, low) <= stats.percentile(values, high) + 1e-9


def test_summary_has_every_figure() -> None:
    s = stats.summary([1.0, 2.0, 3.0, 4.0])
    assert s == {
        "count": 4.0,
        "min": 1.0,
        "p50": 2.5,
        "p90": pytest.approx(3.7),
        "p99": pytest.approx(3.97),
        "max": 4.0,
        "mean": 2.5,
    }


def test_span_wait_and_run() -> None:
    s = Span(enqueued=10.0, started=10.25, finished=11.0)
    assert s.wait == 0.25
    assert s.run == 0.75


def test_throughput_counts_from_the_submission() -> None:
    spans = [Span(1.0, 1.5, 2.0), Span(1.0, 2.0, 3.0), Span(1.0, 2.5, 5.0), Span(1.0, 4, 4.5)]
    assert stats.throughput(spans, since=1.0) == 1.0  # 4 nodes, last finished 4 s after
    with pytest.raises(ValueError, match="before the submission"):
        stats.throughput(spans, since=6.0)


def chain_of(gaps: list[float], runs: list[float], start: float = 100.0) -> list[Span]:
    """A chain whose node i runs runs[i] seconds and waits gaps[i - 1] after its parent."""
    spans, t = [], start
    for i, run in enumerate(runs):
        if i:
            t += gaps[i - 1]
        spans.append(Span(enqueued=t - 0.001, started=t, finished=t + run))
        t += run
    return spans


def test_chain_overhead_is_wall_minus_command_time_per_edge() -> None:
    chain = chain_of(gaps=[0.010, 0.020, 0.030], runs=[0.5, 0.1, 0.2, 0.3])
    assert stats.chain_edge_overheads(chain) == pytest.approx([0.010, 0.020, 0.030])
    # (last.finished - first.started - sum(runs)) / edges = (1.16 - 1.1) / 3
    assert stats.chain_overhead_per_edge(chain) == pytest.approx(0.020)


@given(
    st.lists(st.floats(0, 10), min_size=2, max_size=60).flatmap(
        lambda runs: st.tuples(
            st.just(runs), st.lists(st.floats(0, 1), min_size=len(runs) - 1, max_size=len(runs) - 1)
        )
    )
)
def test_chain_overhead_is_the_mean_edge_gap(case: tuple[list[float], list[float]]) -> None:
    runs, gaps = case
    chain = chain_of(gaps, runs)
    assert stats.chain_overhead_per_edge(chain) == pytest.approx(
        statistics.fmean(stats.chain_edge_overheads(chain)), abs=1e-7
    )


def test_chain_needs_two_nodes() -> None:
    with pytest.raises(ValueError, match="two nodes"):
        stats.chain_overhead_per_edge([Span(0, 1, 2)])


def test_fan_overhead_of_a_perfect_run_is_zero() -> None:
    # root runs 1 s; 4 children on 2 slots run 1 s each, back to back; sink runs 1 s.
    root = Span(0.0, 0.0, 1.0)
    middle = [Span(1.0, 1.0, 2.0), Span(1.0, 1.0, 2.0), Span(1.0, 2.0, 3.0), Span(1.0, 2.0, 3.0)]
    sink = Span(3.0, 3.0, 4.0)
    o = stats.fan_overhead(root, middle, sink, slots=2)
    assert (o.fan_out, o.level_per_node, o.fan_in, o.total) == (0.0, 0.0, 0.0, 0.0)


def test_fan_overhead_parts() -> None:
    root = Span(0.0, 0.0, 1.0)
    # first child starts 0.1 s after the root; each later one 0.05 s after a slot frees
    middle = [
        Span(1.0, 1.1, 2.1),
        Span(1.0, 1.1, 2.1),
        Span(1.0, 2.15, 3.15),
        Span(1.0, 2.15, 3.15),
    ]
    sink = Span(3.15, 3.35, 4.35)
    o = stats.fan_overhead(root, middle, sink, slots=2)
    assert o.fan_out == pytest.approx(0.1)
    # slots * (3.15 - 1.0) - 4 s of commands = 0.3 s of idle slot time, over 4 nodes
    assert o.level_per_node == pytest.approx(0.075)
    assert o.fan_in == pytest.approx(0.2)
    # wall 4.35 - ideal (1 + 4/2 + 1)
    assert o.total == pytest.approx(0.35)


def test_fan_overhead_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="middle"):
        stats.fan_overhead(Span(0, 0, 1), [], Span(1, 1, 2), slots=1)
    with pytest.raises(ValueError, match="slots"):
        stats.fan_overhead(Span(0, 0, 1), [Span(1, 1, 2)], Span(2, 2, 3), slots=0)


def test_ratio() -> None:
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(None, 2.0) is None
    assert stats.ratio(1.0, None) is None
    assert stats.ratio(1.0, 0.0) is None
    assert math.isclose(stats.median([3.0, 1.0, 2.0]), 2.0)
