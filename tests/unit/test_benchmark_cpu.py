"""The benchmark suite's CPU accounting: /proc parsing, process trees, per-unit figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cpu, report
from benchmarks.load import ClosedLoop
from benchmarks.workloads import Mark, submit_figures

TICK = os.sysconf("SC_CLK_TCK")


def stat_line(pid: int, comm: str, ppid: int, ticks: tuple[int, int, int, int]) -> str:
    utime, stime, cutime, cstime = ticks
    # Fields 3.. of /proc/PID/stat: state ppid pgrp session tty tpgid flags minflt cminflt
    # majflt cmajflt utime stime cutime cstime priority ...
    rest = f"S {ppid} 1 1 0 -1 4194560 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0"
    return f"{pid} ({comm}) {rest}\n"


def test_stat_is_parsed_from_the_last_bracket() -> None:
    stat = cpu.parse_stat(stat_line(42, "odd) (name", 7, (100, 50, 30, 20)))
    assert (stat.pid, stat.ppid, stat.comm) == (42, 7, "odd) (name")
    assert stat.own == pytest.approx(150 / TICK)
    assert stat.reaped == pytest.approx(50 / TICK)


def test_a_tree_counts_live_descendants_and_what_they_reaped_but_not_others(
    tmp_path: Path,
) -> None:
    lines = {
        10: stat_line(10, "python", 1, (100, 0, 40, 0)),  # the group's root
        11: stat_line(11, "pool", 10, (20, 5, 10, 0)),  # its child, which reaped its own
        12: stat_line(12, "sh", 11, (1, 1, 0, 0)),  # a grandchild still alive
        13: stat_line(13, "postgres", 1, (300, 0, 0, 0)),  # not in the tree
        14: stat_line(14, "postgres", 13, (5, 5, 0, 0)),
    }
    for pid, line in lines.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(line)
    (tmp_path / "self").mkdir()  # not a pid: ignored
    (tmp_path / "99").mkdir()  # exited while we looked: no stat, ignored
    procs = cpu.scan(tmp_path)
    assert sorted(procs) == [10, 11, 12, 13, 14]
    assert cpu.tree_seconds(procs, 10) == pytest.approx((140 + 35 + 2) / TICK)
    assert cpu.tree_seconds(procs, 11) == pytest.approx((35 + 2) / TICK)
    assert cpu.tree_seconds(procs, 404) == 0.0
    assert cpu.named_seconds(procs, "postgres") == pytest.approx(310 / TICK)


def test_machine_busy_leaves_out_idle_and_iowait() -> None:
    busy, total = cpu.machine_jiffies("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4\n")
    assert (busy, total) == (160, 1000)


def snapshot(at: float, busy: int, total: int, **seconds: float) -> cpu.Snapshot:
    return cpu.Snapshot(seconds, busy, total, at)


def test_usage_per_unit_includes_the_clients_and_says_how_busy_the_machine_was() -> None:
    before = snapshot(0.0, 1000, 4000, api=1.0, worker=2.0)
    after = snapshot(5.0, 2800, 6000, api=1.5, worker=3.5)
    used = cpu.usage(before, after, units=500, clients=[0.1, 0.15])
    assert used is not None
    assert used["seconds"] == pytest.approx({"api": 0.5, "worker": 1.5, "clients": 0.25})
    assert used["ms_per_unit"]["total"] == pytest.approx(4.5)
    assert used["ms_per_unit"]["api"] == pytest.approx(1.0)
    assert used["machine_busy_percent"] == pytest.approx(90.0)
    text = cpu.breakdown(used, "accepted job")
    assert text == (
        "4.50 ms per accepted job: api 1.00, worker 3.00, clients 0.50 (machine 90% busy)"
    )
    assert cpu.usage(None, after, 500) is None
    assert cpu.usage(before, after, 0) is None
    assert cpu.breakdown(None, "node") is None


def test_a_real_child_tree_is_measured() -> None:
    """A child that burns CPU in a grandchild, both reaped: the time shows in our tree."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc: CPU accounting is Linux only")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    meter = cpu.Meter({"me": os.getpid()}, {})
    before = meter.snapshot()
    subprocess.run([sys.executable, "-c", spawn], check=True)
    used = cpu.usage(before, meter.snapshot(), units=1)
    assert used is not None
    assert used["seconds"]["me"] >= 0.25


def loop(accepted: int, seconds: float, probes: tuple[Mark, Mark] | None) -> ClosedLoop:
    return ClosedLoop(
        accepted=accepted,
        refused=0,
        seconds=seconds,
        call_seconds=[0.01] * accepted,
        ids=[str(i) for i in range(accepted)],
        errors=[],
        client_cpu_seconds=[0.5, 0.5],
        probes=probes,
    )


def test_submission_says_what_ran_meanwhile_and_its_cpu_per_accepted_job() -> None:
    first = Mark(snapshot(0.0, 0, 1000, api=0.0), unfinished=10)
    last = Mark(snapshot(5.0, 900, 2000, api=1.0), unfinished=510)
    figures = submit_figures(loop(2000, 5.0, (first, last)))
    assert figures["accepted_per_second"] == 400
    assert figures["finished_per_second"] == pytest.approx((10 + 2000 - 510) / 5)
    assert figures["unfinished_at_end"] == 510
    assert figures["cpu"]["ms_per_unit"]["total"] == pytest.approx((1.0 + 1.0) * 1000 / 2000)
    bare = submit_figures(loop(100, 5.0, None))
    assert bare["cpu"] is None and bare["finished_per_second"] is None


def test_cpu_notes_name_each_system_and_the_backlog() -> None:
    used = cpu.usage(snapshot(0, 0, 100, worker=0.0), snapshot(1, 50, 200, worker=2.0), 1000)
    results = {
        "figures": {
            "minitemporal": {"submit": {"cpu": used, "unfinished_at_end": 12}},
            "celery": {"throughput_one_job": {"cpu": used}},
        }
    }
    notes = report.cpu_notes(results, "celery")
    assert notes == [
        "(b) one job, celery: 2.00 ms per node: worker 2.00 (machine 50% busy)",
        "(d) submission, minitemporal: 2.00 ms per accepted job: worker 2.00 "
        "(machine 50% busy); 12 accepted jobs unfinished as the window closed",
    ]
    assert report.cpu_notes(results, None) == [notes[1]]


def test_the_commit_probe_note_names_its_interval_and_the_slow_commits() -> None:
    summary = {
        "commits": 150,
        "interval_ms": 100.0,
        "p50_ms": 0.41,
        "max_ms": 97.6,
        "over_20_ms": 2,
        "error": None,
    }
    results = {"figures": {"minitemporal": {"latency": {"postgres_commit_probe": summary}}}}
    assert report.commit_note(results) == (
        "(a) PostgreSQL's own commits meanwhile (a connection of their own, every 100 ms): "
        "150 probe commits, p50 0.41 ms, max 97.6 ms, 2 over 20 ms"
    )
    assert report.commit_note({"figures": {}}) is None


def test_with_rounds_the_commit_note_sets_each_rounds_maxima_side_by_side() -> None:
    def round_(probe_max: float, start_max: float) -> dict[str, object]:
        probe = {"commits": 150, "interval_ms": 100.0, "p50_ms": 0.4, "max_ms": probe_max}
        probe["over_20_ms"] = int(probe_max > 20)
        return {"postgres_commit_probe": probe, "enqueue_to_start_ms": {"max": start_max}}

    rounds = [round_(5.2, 5.1), round_(4.0, 5.6), round_(58.1, 63.6)]
    merged = {**round_(5.2, 5.6), "rounds": rounds}
    note = report.commit_note({"figures": {"minitemporal": {"latency": merged}}})
    assert note is not None
    assert note.endswith(
        "(medians of the rounds); the rounds' maxima: probe 5.2/4.0/58.1 ms, "
        "enqueue→start 5.1/5.6/63.6 ms"
    )
