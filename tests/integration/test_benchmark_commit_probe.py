"""The benchmark suite's probe of PostgreSQL's own commit time, against a real server."""

from __future__ import annotations

import time

import psycopg

from benchmarks.commits import TABLE, CommitProbe, describe


def _rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        assert row is not None
        return int(row[0])


def _wal_flushed(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn").fetchone()
        assert row is not None
        return int(row[0])


def test_the_probe_commits_on_its_schedule_and_sums_up_their_times(database_url: str) -> None:
    flushed = _wal_flushed(database_url)
    with CommitProbe(database_url, interval=0.02) as probe:
        deadline = time.monotonic() + 20
        while len(probe.seconds) < 10:
            assert time.monotonic() < deadline, "the probe made no commits"
            time.sleep(0.01)  # poll
    summary = probe.summary()
    assert summary is not None and summary["error"] is None
    assert summary["commits"] >= 10
    assert 0 < summary["p50_ms"] <= summary["max_ms"]
    # Each probe wrote a row and waited for its flush: what a stalled disk would hold up.
    assert _rows(database_url) == summary["commits"]
    assert _wal_flushed(database_url) > flushed
    text = describe(summary)
    assert text is not None and text.startswith(f"{summary['commits']} probe commits, p50 ")


def test_an_unreachable_server_leaves_an_error_not_a_crash() -> None:
    with CommitProbe("postgresql://nobody@127.0.0.1:1/none", interval=0.01) as probe:
        deadline = time.monotonic() + 20
        while probe.error is None:
            assert time.monotonic() < deadline, "no error reported"
            time.sleep(0.01)  # poll
    summary = probe.summary()
    assert summary is not None and "error" in summary and "commits" not in summary
    assert describe(summary) is None
