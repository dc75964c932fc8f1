"""A probe of the PostgreSQL server's own commit time while a workload runs.

Every state change of minitemporal waits for a durable commit, so when the server stalls
(a new WAL segment being zero-filled, a checkpoint's fsyncs) a few jobs wait with it, and
the latency's p99 and max show it. This probe tells such a stall from a slow system: on a
connection of its own it commits a one-row insert into a table of its own on a fixed
schedule, and keeps how long each took. It must write a row: a transaction that only takes
a transaction id (`SELECT txid_current()`) commits without waiting for the WAL flush, and
sees nothing of a stalled disk. Ten commits a second cost the server next to nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks import stats

MS = 1000.0
SLOW_MS = 20.0
TABLE = "benchmark_commit_probe"


class CommitProbe:
    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.seconds: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CommitProbe:
        self._thread = threading.Thread(target=self._run, name="commit-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (at timestamptz NOT NULL)")
                due = time.monotonic()
                while not self._stop.is_set():
                    t = time.perf_counter()
                    conn.execute(f"INSERT INTO {TABLE} VALUES (clock_timestamp())")
                    self.seconds.append(time.perf_counter() - t)
                    due += self.interval
                    # The schedule, not a wait for a condition; ends early on stop.
                    self._stop.wait(max(0.0, due - time.monotonic()))
        except Exception as exc:  # the workload goes on; the summary says why it is empty
            self.error = repr(exc)

    def summary(self) -> dict[str, Any] | None:
        if not self.seconds:
            return {"error": self.error} if self.error else None
        return {
            "commits": len(self.seconds),
            "interval_ms": self.interval * MS,
            "p50_ms": stats.percentile(self.seconds, 50) * MS,
            "max_ms": max(self.seconds) * MS,
            f"over_{SLOW_MS:.0f}_ms": sum(s * MS > SLOW_MS for s in self.seconds),
            "error": self.error,
        }


def describe(summary: dict[str, Any] | None) -> str | None:
    """`301 commits, p50 0.41 ms, max 97.6 ms, 2 over 20 ms`."""
    if not summary or "commits" not in summary:
        return None
    slow = summary[f"over_{SLOW_MS:.0f}_ms"]
    return (
        f"{summary['commits']:.0f} probe commits, p50 {summary['p50_ms']:.2f} ms, "
        f"max {summary['max_ms']:.1f} ms, {slow:.0f} over {SLOW_MS:.0f} ms"
    )
