"""Celery as the peer target: the same workloads, with Celery's own primitives.

(a) `apply_async` one at a time at the same rate; (b) `group`; (c) `chain` and
`chain(root, chord(middle, sink))`; (d) `apply_async` from concurrent client processes.
The worker is `celery -A benchmarks.celery_peer worker`, prefork, started and stopped here.
Timestamps are those the task records (see celery_peer.py); completion is awaited by polling
the run's record hash with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import cpu
from benchmarks.load import ClosedLoop, closed_loop, open_loop
from benchmarks.stats import Span
from benchmarks.system import ROOT, Proc, StartFailed, base_env, delete_prefixed_keys
from benchmarks.workloads import FanRun, LatencyRun, Mark, SpanRun, WorkloadError


def peer_env(redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "BENCH_CELERY_BROKER_URL": redis_url,
        "BENCH_CELERY_KEY_PREFIX": f"{prefix}:",
        "BENCH_CELERY_QUEUE": prefix,
    }


def load_peer_module(settings: dict[str, str]) -> ModuleType:
    """Import benchmarks.celery_peer configured by `settings` (it reads them at import)."""
    os.environ.update(settings)
    return importlib.import_module("benchmarks.celery_peer")


class CeleryPeer:
    name = "celery"

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        slots: int,
        workdir: Path,
        command: str = "true",
        poll_interval: float = 0.1,
        log_level: str = "INFO",
    ):
        self.redis_url = redis_url
        self.prefix = prefix
        self.slots = slots
        self.command = command
        self.poll_interval = poll_interval
        self.settings = peer_env(redis_url, prefix)
        self.mod = load_peer_module(self.settings)
        import celery

        self.version = celery.__version__
        env = base_env()
        env.update(self.settings)
        self.worker = Proc(
            "celery-worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.celery_peer",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(slots),
                "--prefetch-multiplier",
                "1",
                "--queues",
                self.settings["BENCH_CELERY_QUEUE"],
                "--loglevel",
                log_level,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                f"{prefix}@%h",
            ],
            env,
            workdir / "celery-worker.log",
            ROOT,
        )
        self._labels = 0
        self.meter: cpu.Meter | None = None  # set by the suite once the worker runs

    # --- lifecycle
    def start(self, timeout: float = 60.0) -> None:
        self.worker.start()
        try:
            self.warmup(timeout=timeout)
        except WorkloadError as exc:
            raise StartFailed(f"Celery worker not ready: {exc}\n{self.worker.log()}") from exc

    def pids(self) -> dict[str, int]:
        """The worker's main process: its prefork pool are its children."""
        return {"worker": self.worker.popen.pid} if self.worker.popen is not None else {}

    def stop(self) -> int | None:
        code = self.worker.stop()
        _release_results()
        self.mod.app.close()
        delete_prefixed_keys(self.redis_url, self.settings["BENCH_CELERY_KEY_PREFIX"])
        return code

    # --- records
    def _label(self, what: str) -> str:
        self._labels += 1
        return f"{what}-{self._labels}"

    def _cpu(self) -> cpu.Snapshot | None:
        return self.meter.snapshot() if self.meter else None

    def _mark(self) -> Mark:
        """The CPU counters, and the tasks accepted but not finished: those waiting in the
        queue and those a worker process has taken and not yet acknowledged."""
        snapshot = self._cpu()
        client = self.mod.records()
        prefix = self.settings["BENCH_CELERY_KEY_PREFIX"]
        waiting = int(client.llen(prefix + self.settings["BENCH_CELERY_QUEUE"]))
        return Mark(snapshot, waiting + int(client.hlen(prefix + "unacked")))

    def wait(
        self,
        label: str,
        count: int,
        timeout: float,
        on_done: list[cpu.Snapshot | None] | None = None,
    ) -> dict[str, Span]:
        """The spans of `count` records of `label`, once all are there; `on_done` gets the
        CPU counters of that moment, before the records are read."""
        client = self.mod.records()
        key = self.mod.record_key(label)
        deadline = time.monotonic() + timeout
        while True:
            done = int(client.hlen(key))
            if done >= count:
                if on_done is not None:
                    on_done.append(self._cpu())
                break
            if not self.worker.alive():
                raise WorkloadError(f"the Celery worker exited:\n{self.worker.log()}")
            if time.monotonic() > deadline:
                raise WorkloadError(f"{count - done} Celery task(s) not done after {timeout:.0f}s")
            time.sleep(self.poll_interval)
        spans: dict[str, Span] = {}
        for item, raw in client.hgetall(key).items():
            enq, started, finished, code = json.loads(raw)
            if code != 0 or enq is None:
                raise WorkloadError(f"task {item!r}: exit code {code}, enqueued {enq}")
            spans[item.decode()] = Span(enq, started, finished)
        client.delete(key)
        return spans

    def _sig(self, label: str, item: str) -> Any:
        return self.mod.run.si(self.command, label, item)

    # --- workloads
    def warmup(self, timeout: float = 60.0) -> None:
        from celery import chain, group

        label = self._label("warmup")
        group(self._sig(label, f"w{i}") for i in range(self.slots * 2)).apply_async()
        chain(self._sig(label, f"c{i}") for i in range(3)).apply_async()
        self.wait(label, self.slots * 2 + 3, timeout)

    def latency(self, rate: float, duration: float) -> LatencyRun:
        label = self._label("latency")
        run = self.mod.run
        header = self.mod.ENQUEUED_HEADER

        def fire(i: int) -> float:
            t = time.time()
            run.apply_async((self.command, label, f"{i:06d}"), headers={header: t})
            return t

        paced = open_loop(rate, duration, fire)
        spans = self.wait(label, len(paced.results), timeout=duration + 120)
        ordered = [spans[f"{i:06d}"] for i in range(len(paced.results))]
        out = [
            Span(s.enqueued, s.started, s.finished, t)
            for s, t in zip(ordered, paced.results, strict=True)
        ]
        return LatencyRun(out, paced.lateness)

    def burst(self, jobs: int, per_job: int) -> SpanRun:
        from celery import group

        label = self._label("burst")
        before = self._cpu()
        since = time.time()
        for j in range(jobs):
            group(self._sig(label, f"{j:04d}-{i:05d}") for i in range(per_job)).apply_async()
        submitted = time.time()
        done: list[cpu.Snapshot | None] = []
        spans = self.wait(label, jobs * per_job, timeout=120 + jobs * per_job / 10, on_done=done)
        used = cpu.usage(before, done[0] if done else None, jobs * per_job)
        return SpanRun(list(spans.values()), since, submitted, used)

    def chain(self, length: int) -> list[Span]:
        from celery import chain

        label = self._label("chain")
        chain(self._sig(label, f"c{i:03d}") for i in range(length)).apply_async()
        spans = self.wait(label, length, timeout=60 + length)
        return [spans[f"c{i:03d}"] for i in range(length)]

    def fan(self, width: int) -> FanRun:
        from celery import chain, chord

        label = self._label("fan")
        # A chord counts its parts through the result backend: their results are kept.
        mids = [self._sig(label, f"m{i:03d}").set(ignore_result=False) for i in range(width)]
        chain(self._sig(label, "root"), chord(mids, self._sig(label, "sink"))).apply_async()
        spans = self.wait(label, width + 2, timeout=60 + width)
        return FanRun(spans["root"], [spans[f"m{i:03d}"] for i in range(width)], spans["sink"])

    def submission(self, clients: int, duration: float) -> ClosedLoop:
        label = self._label("submit")
        factory = functools.partial(_submit_client, self.settings, self.command, label)
        result = closed_loop(factory, clients, duration, probe=self._mark)
        if result.errors and not result.accepted:
            raise WorkloadError("; ".join(result.errors))
        self.wait(label, len(result.ids), timeout=120 + len(result.ids) / 10)
        return result


def _release_results() -> None:
    """Let go of Celery's AsyncResults (chords leave some behind) while Redis is still open:
    otherwise their `__del__` tries to unsubscribe at interpreter exit and prints an error."""
    from celery.result import AsyncResult

    for obj in gc.get_objects():
        if isinstance(obj, AsyncResult) and obj.backend is not None:
            with contextlib.suppress(Exception):
                obj.backend.remove_pending_result(obj)
            obj.backend = None


def _submit_client(
    settings: dict[str, str], command: str, label: str, index: int
) -> Callable[[], str | None]:
    """One closed-loop client process: apply_async one task; returns its id."""
    mod = load_peer_module(settings)
    counter = iter(range(10**9))

    def call() -> str | None:
        item = f"{index:02d}-{next(counter):07d}"
        mod.run.apply_async((command, label, item))
        return item

    return call
