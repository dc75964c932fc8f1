"""Dependency-aware health: every check runs concurrently, each bounded by a timeout."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

Check = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None


class Health:
    def __init__(self, timeout: float = 0.8) -> None:
        self._checks: dict[str, Check] = {}
        self._timeout = timeout

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def run(self) -> tuple[bool, list[CheckResult]]:
        results: dict[str, CheckResult] = {}

        async def one(name: str, check: Check) -> None:
            start = time.perf_counter()
            error: str | None = None
            with anyio.move_on_after(self._timeout) as scope:
                try:
                    await check()
                except Exception as exc:
                    error = str(exc) or type(exc).__name__
            if scope.cancelled_caught:
                error = f"no answer within {self._timeout:g}s"
            elapsed = (time.perf_counter() - start) * 1000
            results[name] = CheckResult(name, error is None, round(elapsed, 3), error)

        async with anyio.create_task_group() as tg:
            for name, check in self._checks.items():
                tg.start_soon(one, name, check)
        ordered = [results[n] for n in self._checks]
        return all(r.ok for r in ordered), ordered
