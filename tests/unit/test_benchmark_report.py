"""The benchmark suite's pure plumbing: workload names, figure lookup, the README block."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.cli import build_parser, main, make_plan, parse_workloads
from benchmarks.stats import Span
from benchmarks.system import worker_slots
from benchmarks.workloads import ROWS, Plan, SpanRun, burst_figures, lookup


def test_workloads_by_name_or_letter() -> None:
    assert parse_workloads("a,dag") == ["latency", "dag"]
    assert parse_workloads("all") == ["latency", "throughput", "dag", "submit"]
    assert parse_workloads("b, b ,d") == ["throughput", "submit"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown workload"):
        parse_workloads("latency,bogus")


def test_default_plan_is_small_and_full_is_the_issue_size() -> None:
    small = make_plan(build_parser().parse_args([]))
    full = make_plan(build_parser().parse_args(["--full", "--clients", "4"]))
    assert small == Plan.small()
    assert full.burst_nodes == 5000 and full.burst_jobs == 100 and full.submit_clients == 4
    assert small.burst_nodes <= full.burst_nodes


def test_lookup_follows_a_path_or_gives_none() -> None:
    figures = {"latency": {"enqueue_to_start_ms": {"p50": 3}}, "submit": {"call_ms": None}}
    assert lookup(figures, ("latency", "enqueue_to_start_ms", "p50")) == 3.0
    assert lookup(figures, ("latency", "missing")) is None
    assert lookup(figures, ("submit", "call_ms", "p50")) is None


def test_rows_carry_both_figures_and_the_ratio() -> None:
    results = {
        "figures": {
            "minitemporal": {"dag_chain": {"overhead_per_edge_ms": 6.0}},
            "celery": {"dag_chain": {"overhead_per_edge_ms": 4.0}},
        }
    }
    table = report.rows(results, "celery")
    assert len(table) == 1
    assert table[0]["ratio"] == 1.5 and table[0]["better"] == "lower"
    assert "(c) chain" in report.text_table(table, "celery")
    assert len({figure.key for figure, _ in ROWS}) == len(ROWS)


def test_readme_block_is_replaced_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold table\n{report.END}\nafter\n")
    assert report.update_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{report.START}\nnew table\n{report.END}\nafter\n"
    readme.write_text("no markers here\n")
    assert not report.update_readme(readme, "x")
    assert readme.read_text() == "no markers here\n"


def test_the_recorded_command_leaves_out_the_results_path() -> None:
    from benchmarks.cli import command_line

    assert (
        command_line(["--slots", "16", "--out", "/x/y.json"]) == "python -m benchmarks --slots 16"
    )
    assert command_line(["--out=/x/y.json", "--full"]) == "python -m benchmarks --full"


def test_burst_figures_count_from_the_first_submit_call_whenever_nodes_were_enqueued() -> None:
    # One job (every node enqueued at once, late) against one-by-one publishing (early):
    # the same start times give the same burst→start figures, different enqueue→start ones.
    starts = [10.5, 11.0, 11.5]
    at_once = SpanRun([Span(10.4, s, s + 0.1) for s in starts], since=10.0, submitted=10.4)
    one_by_one = SpanRun([Span(s - 0.05, s, s + 0.1) for s in starts], since=10.0, submitted=11.45)
    a, b = burst_figures(at_once), burst_figures(one_by_one)
    assert a["burst_to_start_ms"]["p50"] == b["burst_to_start_ms"]["p50"] == pytest.approx(1000.0)
    assert a["enqueue_to_start_ms"]["p50"] == pytest.approx(600.0)
    assert b["enqueue_to_start_ms"]["p50"] == pytest.approx(50.0)


def test_slots_are_shared_out_among_worker_processes() -> None:
    assert worker_slots(16, 1) == [16]
    assert worker_slots(16, 2) == [8, 8]
    assert worker_slots(17, 3) == [6, 6, 5]
    assert sum(worker_slots(31, 4)) == 31
    with pytest.raises(ValueError, match="cannot share"):
        worker_slots(2, 3)


@pytest.mark.parametrize(
    "args",
    [
        ["--worker-processes", "0"],
        ["--worker-processes", "2", "--topology", "all"],
        ["--worker-processes", "2", "--api-url", "http://127.0.0.1:1"],
        ["--worker-processes", "5", "--slots", "4"],
    ],
)
def test_worker_processes_are_refused_where_they_cannot_apply(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and "--worker-processes" in capsys.readouterr().err


def test_rounds_merge_to_medians_and_keep_each_round() -> None:
    from benchmarks.workloads import merge_rounds

    one = {"latency": 1}
    assert merge_rounds([one]) is one, "one round is reported as it is"
    rounds = [
        {"p": {"p50": 1.0, "count": 10}, "each": [1.0], "name": "a", "none": None},
        None,  # a failed round keeps its place
        {"p": {"p50": 5.0, "count": 10}, "each": [2.0], "name": "b", "none": None},
        {"p": {"p50": 2.0, "count": 12}, "each": [3.0], "name": "c", "none": None},
    ]
    merged = merge_rounds(rounds)
    assert merged is not None
    assert merged["p"] == {"p50": 2.0, "count": 10.0}
    assert merged["each"] == [1.0, 2.0, 3.0] and merged["name"] == "a"
    assert merged["none"] is None and merged["rounds"] == rounds
    assert merge_rounds([None, None]) is None


def test_rows_give_each_rounds_ratio() -> None:
    def fig(*values: float | None) -> dict[str, object]:
        rounds = [None if v is None else {"overhead_per_edge_ms": v} for v in values]
        return {"overhead_per_edge_ms": 0.0, "rounds": rounds}

    results = {
        "figures": {
            "minitemporal": {"dag_chain": fig(2.0, 3.0, None)},
            "celery": {"dag_chain": fig(1.0, 4.0, 5.0)},
        }
    }
    [row] = report.rows(results, "celery")
    assert row["round_ratios"] == [2.0, 0.75], "rounds where both measured, in order"
    assert "0.75-2.00x" in report.text_table([row], "celery")
    assert "| per round |" in report.markdown(
        {
            "date": "d",
            "command": "c",
            "machine": {
                "cores": 2,
                "cpu_model": "x",
                "memory_gib": 1,
                "kernel": "k",
                "python": "3",
                "load_average_at_start": None,
            },
            "systems": {"minitemporal": {"description": "m"}},
            "plan_description": "p",
        },
        [row],
        "celery",
    )


class _FakeTarget:
    def __init__(self, name: str, rates: list[float], calls: list[str]) -> None:
        self.name, self._rates, self._calls = name, rates, calls

    def submission(self, clients: int, duration: float) -> object:
        from benchmarks.load import ClosedLoop

        self._calls.append(self.name)
        rate = self._rates.pop(0)
        if rate < 0:
            raise ValueError("this round failed")
        return ClosedLoop(int(rate * duration), 0, duration, [0.001], [], [])


def test_rounds_take_turns_and_report_medians() -> None:
    from benchmarks.cli import Suite

    args = build_parser().parse_args(["--workloads", "submit", "--rounds", "4"])
    suite = Suite(args)
    calls: list[str] = []
    ours = _FakeTarget("minitemporal", [100, 300, -1, 200], calls)
    peer = _FakeTarget("celery", [400, 400, 400, 100], calls)
    suite.run_workloads([ours, peer])
    assert calls == ["minitemporal", "celery", "celery", "minitemporal"] * 2
    assert suite.figures["minitemporal"]["submit"]["accepted_per_second"] == 200
    assert suite.figures["celery"]["submit"]["accepted_per_second"] == 400
    assert list(suite.errors) == ["minitemporal/submit#3"]
    [row] = [
        r for r in report.rows({"figures": suite.figures}, "celery") if "accepted" in r["figure"]
    ]
    assert row["round_ratios"] == [0.25, 0.75, 2.0]
    with pytest.raises(SystemExit):
        main(["--rounds", "0"])
