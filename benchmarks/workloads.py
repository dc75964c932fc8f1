"""The workloads, their sizes, and the figures computed from what a target returns.

A target (minitemporal over REST, or Celery) runs a workload and returns raw spans; the
figures are computed here, the same way for both, by the pure functions of `stats`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from benchmarks import cpu, stats
from benchmarks.load import ClosedLoop
from benchmarks.stats import Span

MS = 1000.0
WORKLOADS = ("latency", "throughput", "dag", "submit")


class WorkloadError(RuntimeError):
    """A workload could not produce its figures (a job failed, a deadline passed...)."""


@dataclass
class LatencyRun:
    spans: list[Span]
    lateness: list[float]
    commits: dict[str, Any] | None = None  # the PostgreSQL commit probe's summary


@dataclass
class SpanRun:
    spans: list[Span]
    since: float  # the client's clock just before the first submit call
    submitted: float  # the client's clock once the last submit call returned
    # CPU from the first submit call until every node was seen finished (`cpu.usage`).
    cpu: dict[str, Any] | None = None


@dataclass(frozen=True)
class Mark:
    """What a target's probe saw at one moment of a workload."""

    cpu: cpu.Snapshot | None
    unfinished: int | None = None  # accepted, not finished (waiting or running)


@dataclass
class FanRun:
    root: Span
    middle: list[Span]
    sink: Span


class Target(Protocol):
    name: str

    def latency(self, rate: float, duration: float) -> LatencyRun: ...
    def burst(self, jobs: int, per_job: int) -> SpanRun: ...
    def chain(self, length: int) -> list[Span]: ...
    def fan(self, width: int) -> FanRun: ...
    def submission(self, clients: int, duration: float) -> ClosedLoop: ...


@dataclass(frozen=True)
class Plan:
    """Sizes of every workload. `small()` fits the whole default run in about 2-3 minutes on
    2 cores; `full()` is the issue's full size."""

    latency_rate: float
    latency_seconds: float
    burst_nodes: int
    burst_jobs: int  # the same number of nodes spread over this many jobs
    chain_length: int
    fan_width: int
    dag_repeats: int
    submit_clients: int
    submit_seconds: float
    rounds: int = 1  # each workload this many times, the systems taking turns to go first

    @classmethod
    def small(cls) -> Plan:
        return cls(20, 15, 2000, 40, 50, 100, 3, 8, 5)

    @classmethod
    def full(cls) -> Plan:
        return cls(20, 60, 5000, 100, 50, 100, 10, 8, 15, rounds=3)


# --- figures: each is (key, label, unit, better) -> value
@dataclass(frozen=True)
class Figure:
    workload: str
    key: str
    label: str
    unit: str
    better: str  # "lower" or "higher"


def _pct(values: list[float]) -> dict[str, float]:
    s = stats.summary(values)
    return {k: (v if k == "count" else v * MS) for k, v in s.items()}


def latency_figures(run: LatencyRun) -> dict[str, Any]:
    waits = [s.wait for s in run.spans]
    submit_to_start = [s.started - s.submitted for s in run.spans if s.submitted is not None]
    return {
        "enqueue_to_start_ms": _pct(waits),
        "submit_to_start_ms": _pct(submit_to_start) if submit_to_start else None,
        "run_ms": _pct([s.run for s in run.spans]),
        "pacer_lateness_ms": _pct(run.lateness),
        "jobs": len(run.spans),
        "postgres_commit_probe": run.commits,
    }


def burst_figures(run: SpanRun) -> dict[str, Any]:
    return {
        "nodes": len(run.spans),
        "nodes_per_second": stats.throughput(run.spans, run.since),
        "enqueue_to_start_ms": _pct([s.wait for s in run.spans]),
        # From the client's clock before the first submit call: the same origin for both
        # systems, whenever each stamps a node as enqueued.
        "burst_to_start_ms": _pct([s.started - run.since for s in run.spans]),
        "makespan_s": max(s.finished for s in run.spans) - run.since,
        "first_start_s": min(s.started for s in run.spans) - run.since,
        "submit_calls_s": run.submitted - run.since,
        "cpu": run.cpu,
    }


def chain_figures(chains: list[list[Span]]) -> dict[str, Any]:
    per_chain = [stats.chain_overhead_per_edge(c) for c in chains]
    edges = [g for c in chains for g in stats.chain_edge_overheads(c)]
    return {
        "repeats": len(chains),
        "length": len(chains[0]),
        "overhead_per_edge_ms": stats.median(per_chain) * MS,
        "overhead_per_edge_each_ms": [v * MS for v in per_chain],
        "edge_gap_ms": _pct(edges),
        "wall_ms": stats.median([c[-1].finished - c[0].started for c in chains]) * MS,
        "command_ms_per_node": stats.median([s.run for c in chains for s in c]) * MS,
    }


def fan_figures(fans: list[FanRun], slots: int) -> dict[str, Any]:
    each = [stats.fan_overhead(f.root, f.middle, f.sink, slots) for f in fans]

    def med(get: Callable[[stats.FanOverhead], float]) -> float:
        return stats.median([get(o) for o in each]) * MS

    return {
        "repeats": len(fans),
        "width": len(fans[0].middle),
        "slots": slots,
        "fan_out_ms": med(lambda o: o.fan_out),
        "level_overhead_per_node_ms": med(lambda o: o.level_per_node),
        "fan_in_ms": med(lambda o: o.fan_in),
        "total_overhead_ms": med(lambda o: o.total),
        "wall_ms": stats.median([f.sink.finished - f.root.started for f in fans]) * MS,
        "each": [
            {k: getattr(o, k) * MS for k in ("fan_out", "level_per_node", "fan_in", "total")}
            for o in each
        ],
    }


def submit_figures(run: ClosedLoop) -> dict[str, Any]:
    first, last = run.probes if run.probes else (Mark(None), Mark(None))
    finished = None
    if first.unfinished is not None and last.unfinished is not None:
        # What the system also ran while it accepted: the work it had, plus what it
        # accepted, minus what was left (calls still out at the close count as left).
        finished = max(0, first.unfinished + run.accepted - last.unfinished) / run.seconds
    return {
        "accepted": run.accepted,
        "refused": run.refused,
        "seconds": run.seconds,
        "accepted_per_second": run.per_second,
        "call_ms": _pct(run.call_seconds) if run.call_seconds else None,
        # Over the window, per accepted job, the clients' own CPU included.
        "cpu": cpu.usage(first.cpu, last.cpu, run.accepted, run.client_cpu_seconds),
        "unfinished_at_end": last.unfinished,
        "finished_per_second": finished,
        "errors": run.errors[:5],
    }


def merge_rounds(rounds: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The figures of one workload over several rounds as one set: the median of every
    number, lists joined, anything else from the first round; each round's own figures (None
    for a round that failed) under `rounds`. One round is returned as it is."""
    done = [r for r in rounds if r is not None]
    if not done:
        return None
    if len(rounds) == 1:
        return done[0]
    merged = _median_of(done)
    merged["rounds"] = rounds
    return cast(dict[str, Any], merged)


def _median_of(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {
            k: _median_of([v[k] for v in values if isinstance(v, dict) and k in v]) for k in first
        }
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return stats.median([float(v) for v in values])
    if all(isinstance(v, list) for v in values):
        return [x for v in values for x in v]
    return first


# --- the rows of the comparison table: (figure, path into the figures dict)
ROWS: list[tuple[Figure, tuple[str, ...]]] = [
    (
        Figure("latency", "e2s_p50", "(a) latency: enqueue→start p50", "ms", "lower"),
        ("latency", "enqueue_to_start_ms", "p50"),
    ),
    (
        Figure("latency", "e2s_p90", "(a) latency: enqueue→start p90", "ms", "lower"),
        ("latency", "enqueue_to_start_ms", "p90"),
    ),
    (
        Figure("latency", "e2s_p99", "(a) latency: enqueue→start p99", "ms", "lower"),
        ("latency", "enqueue_to_start_ms", "p99"),
    ),
    (
        Figure("latency", "e2s_max", "(a) latency: enqueue→start max", "ms", "lower"),
        ("latency", "enqueue_to_start_ms", "max"),
    ),
    (
        Figure("latency", "s2s_p50", "(a) latency: submit→start p50", "ms", "lower"),
        ("latency", "submit_to_start_ms", "p50"),
    ),
    (
        Figure("latency", "s2s_p99", "(a) latency: submit→start p99", "ms", "lower"),
        ("latency", "submit_to_start_ms", "p99"),
    ),
    (
        Figure("throughput", "one_rate", "(b) one job: nodes/s", "nodes/s", "higher"),
        ("throughput_one_job", "nodes_per_second"),
    ),
    (
        Figure("throughput", "one_p50", "(b) one job: enqueue→start p50", "ms", "lower"),
        ("throughput_one_job", "enqueue_to_start_ms", "p50"),
    ),
    (
        Figure("throughput", "one_p99", "(b) one job: enqueue→start p99", "ms", "lower"),
        ("throughput_one_job", "enqueue_to_start_ms", "p99"),
    ),
    (
        Figure("throughput", "one_b50", "(b) one job: burst→start p50", "ms", "lower"),
        ("throughput_one_job", "burst_to_start_ms", "p50"),
    ),
    (
        Figure("throughput", "one_b99", "(b) one job: burst→start p99", "ms", "lower"),
        ("throughput_one_job", "burst_to_start_ms", "p99"),
    ),
    (
        Figure("throughput", "one_cpu", "(b) one job: CPU per node", "ms", "lower"),
        ("throughput_one_job", "cpu", "ms_per_unit", "total"),
    ),
    (
        Figure("throughput", "many_rate", "(b) many jobs: nodes/s", "nodes/s", "higher"),
        ("throughput_many_jobs", "nodes_per_second"),
    ),
    (
        Figure("throughput", "many_p50", "(b) many jobs: enqueue→start p50", "ms", "lower"),
        ("throughput_many_jobs", "enqueue_to_start_ms", "p50"),
    ),
    (
        Figure("throughput", "many_p99", "(b) many jobs: enqueue→start p99", "ms", "lower"),
        ("throughput_many_jobs", "enqueue_to_start_ms", "p99"),
    ),
    (
        Figure("throughput", "many_b50", "(b) many jobs: burst→start p50", "ms", "lower"),
        ("throughput_many_jobs", "burst_to_start_ms", "p50"),
    ),
    (
        Figure("throughput", "many_b99", "(b) many jobs: burst→start p99", "ms", "lower"),
        ("throughput_many_jobs", "burst_to_start_ms", "p99"),
    ),
    (
        Figure("throughput", "many_cpu", "(b) many jobs: CPU per node", "ms", "lower"),
        ("throughput_many_jobs", "cpu", "ms_per_unit", "total"),
    ),
    (
        Figure("dag", "chain_edge", "(c) chain: overhead per edge", "ms", "lower"),
        ("dag_chain", "overhead_per_edge_ms"),
    ),
    (
        Figure("dag", "fan_out", "(c) fan: fan-out (root done→first child start)", "ms", "lower"),
        ("dag_fan", "fan_out_ms"),
    ),
    (
        Figure("dag", "fan_level", "(c) fan: wide level, idle slot time per node", "ms", "lower"),
        ("dag_fan", "level_overhead_per_node_ms"),
    ),
    (
        Figure("dag", "fan_in", "(c) fan: fan-in (last child done→sink start)", "ms", "lower"),
        ("dag_fan", "fan_in_ms"),
    ),
    (
        Figure("dag", "fan_total", "(c) fan: total overhead (wall - ideal)", "ms", "lower"),
        ("dag_fan", "total_overhead_ms"),
    ),
    (
        Figure("submit", "accepted", "(d) submission: accepted/s", "jobs/s", "higher"),
        ("submit", "accepted_per_second"),
    ),
    (
        Figure("submit", "call_p50", "(d) submission: call p50", "ms", "lower"),
        ("submit", "call_ms", "p50"),
    ),
    (
        Figure(
            "submit", "finished", "(d) submission: jobs finished/s meanwhile", "jobs/s", "higher"
        ),
        ("submit", "finished_per_second"),
    ),
]


def lookup(figures: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = figures
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None
