"""Load generators shared by both systems: an open-loop pacer and closed-loop client processes.

Open loop: submission i is due at t0 + i / rate whatever happened to earlier submissions; a
small thread pool makes the calls so that one slow call does not delay the next ones. How late
each call left against its schedule is recorded, so a generator that fell behind shows.

Closed loop (submission throughput): N client processes (not threads: the client's own GIL
must not be what is measured), each making one call after another for a fixed time.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Paced:
    results: list[Any]
    lateness: list[float]  # seconds each call left after its due time


def open_loop(rate: float, duration: float, fire: Callable[[int], T], threads: int = 8) -> Paced:
    count = max(1, round(rate * duration))
    results: list[Any] = []
    lateness: list[float] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pacer") as pool:
        t0 = time.perf_counter() + 0.05
        futures = []
        for i in range(count):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # the schedule itself, not a wait for completion
            lateness.append(max(0.0, time.perf_counter() - due))
            futures.append(pool.submit(fire, i))
        results = [f.result() for f in futures]
    return Paced(results, lateness)


@dataclass
class ClientReport:
    accepted: int = 0
    refused: int = 0
    call_seconds: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    error: str | None = None
    cpu_seconds: float = 0.0  # the client's own CPU over the window


@dataclass
class ClosedLoop:
    accepted: int
    refused: int
    seconds: float
    call_seconds: list[float]
    ids: list[str]
    errors: list[str]
    client_cpu_seconds: list[float] = field(default_factory=list)
    # What `probe` returned at the window's start and at its end (None without a probe).
    probes: tuple[Any, Any] | None = None

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds


def _client_main(
    factory: Callable[[int], Callable[[], str | None]],
    index: int,
    ready: Any,
    go: Any,
    start_at: Any,
    duration: float,
    out: Any,
) -> None:
    report = ClientReport()
    try:
        call = factory(index)
    except Exception as exc:  # reported to the parent, which fails the workload
        report.error = f"client {index} could not start: {exc!r}"
        ready.put(index)
        out.put(report)
        return
    ready.put(index)
    go.wait()
    begin = start_at.value
    end = begin + duration
    while time.time() < begin:
        time.sleep(0.001)
    cpu = time.process_time()
    while True:
        t = time.time()
        if t >= end:
            break
        try:
            ident = call()
        except Exception as exc:
            report.refused += 1
            if report.error is None:
                report.error = repr(exc)
            continue
        done = time.time()
        if ident is not None:
            report.ids.append(ident)  # submitted, whether or not inside the window
        if done <= end:
            report.accepted += 1
            report.call_seconds.append(done - t)
    report.cpu_seconds = time.process_time() - cpu
    out.put(report)


def closed_loop(
    factory: Callable[[int], Callable[[], str | None]],
    clients: int,
    duration: float,
    probe: Callable[[], Any] | None = None,
) -> ClosedLoop:
    """Run `clients` processes, each calling `factory(i)()` back to back for `duration` s.

    `factory` must be a module-level function (processes are spawned, not forked). A call
    returns an id of what it submitted (or None), or raises when the submission was refused.
    Only calls that completed inside the window count as accepted. `probe` is called here,
    in the parent, as the window opens and as it closes (CPU counters, a backlog).
    """
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_client_main,
            args=(factory, i, ready, go, start_at, duration, out),
            daemon=True,
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        start_at.value = time.time() + 0.1
        go.set()
        probes = None
        if probe is not None:
            first = _at(start_at.value, probe)
            probes = (first, _at(start_at.value + duration, probe))
        reports: list[ClientReport] = [out.get(timeout=duration + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return ClosedLoop(
        accepted=sum(r.accepted for r in reports),
        refused=sum(r.refused for r in reports),
        seconds=duration,
        call_seconds=[s for r in reports for s in r.call_seconds],
        ids=[i for r in reports for i in r.ids],
        errors=[r.error for r in reports if r.error],
        client_cpu_seconds=[r.cpu_seconds for r in reports],
        probes=probes,
    )


def _at(when: float, probe: Callable[[], T]) -> T:
    """`probe()` at the wall-clock time `when` (the clients' clock for the window)."""
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)  # the window's schedule, not a wait for a condition
    return probe()
