"""The scheduler's background sweeps. Every scheduler runs them; the store makes that safe
(`FOR UPDATE SKIP LOCKED`, compare-and-set), so no leader election is needed.

- retries: retry_wait nodes whose backoff passed become queued (next attempt) and are pushed;
- leases: running attempts whose lease expired are lost, then retried or failed;
- statistics: tables that changed much since last analyzed are analyzed again (young tables
  grow faster than autovacuum looks, and plans cached while they were small scan them);
- queue: if the queue lost its contents (marker gone: FLUSHALL, restart), push every queued
  attempt again; in any case every `reconcile_seconds`, push the oldest queued attempts older
  than that again (a scheduler killed between its commit and its push, or a worker killed
  between its pop and its claim, leaves such attempts behind).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio

from minitemporal.errors import Unavailable
from minitemporal.observability.logging import task_fields
from minitemporal.scheduler.service import SchedulerService

log = logging.getLogger("minitemporal.scheduler.maintenance")
STATISTICS_SECONDS = 5.0  # how often to look for tables whose planner statistics went stale
RECONCILE_PAGE = 1_000  # queued attempts a periodic pass reads at a time (see `reconcile`)
REBUILD_PAGE = 10_000  # and a rebuild of a lost queue


class Maintenance:
    def __init__(
        self,
        service: SchedulerService,
        *,
        sweep_seconds: float,
        reconcile_seconds: float,
        gauge_seconds: float = 5.0,
        reconcile_page: int = RECONCILE_PAGE,
        rebuild_page: int = REBUILD_PAGE,
    ) -> None:
        self.service = service
        self.sweep_seconds = sweep_seconds
        self.reconcile_seconds = reconcile_seconds
        self.gauge_seconds = gauge_seconds
        self.reconcile_page = reconcile_page
        self.rebuild_page = rebuild_page
        self._last_reconcile = 0.0

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._loop, "retries", self.sweep_seconds, self.requeue_retries)
            tg.start_soon(self._loop, "leases", self.sweep_seconds, self.expire_leases)
            tg.start_soon(self._loop, "queue", min(1.0, self.reconcile_seconds), self.check_queue)
            tg.start_soon(self._loop, "gauges", self.gauge_seconds, self.update_gauges)
            tg.start_soon(self._loop, "statistics", STATISTICS_SECONDS, self.refresh_statistics)

    async def _loop(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await step()
                failures = 0
                await anyio.sleep(interval)
            except Unavailable as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("%s sweep: %s (retrying)", name, exc)
                await anyio.sleep(min(interval * 2 ** min(failures, 5), 5.0))
            except Exception:
                log.exception("%s sweep failed", name)
                await anyio.sleep(max(interval, 1.0))

    async def requeue_retries(self) -> None:
        while True:
            refs = await self.service.store.requeue_due_retries(limit=1000)
            if refs:
                self.service.watch.poke()
                self.service.metrics.retries.inc(len(refs))
                await self.service.push(refs)
            if len(refs) < 1000:
                return

    async def expire_leases(self) -> None:
        swept = await self.service.store.expire_leases(limit=1000)
        given_up = swept.lost + swept.timed_out
        if given_up:
            self.service.metrics.rescued.labels("lost_attempt").inc(len(given_up))
        for what, attempts in (("lease expired", swept.lost), ("overdue", swept.timed_out)):
            for g in attempts:
                log.warning(
                    "attempt given up: %s",
                    what,
                    extra=task_fields(g.job_id, g.node_id, g.ref.attempt, g.worker_id or ""),
                )
        await self.service.record_lost(swept)

    async def check_queue(self) -> None:
        lost = await self.service.queue.claim_epoch()
        now = time.monotonic()
        if lost:
            self.service.metrics.queue_rebuilds.inc()
            await self.reconcile(min_age=0.0, why="queue empty or new", rebuild=True)
        elif now - self._last_reconcile >= self.reconcile_seconds:
            await self.reconcile(min_age=self.reconcile_seconds, why="periodic")
        else:
            return
        self._last_reconcile = now

    async def reconcile(self, *, min_age: float, why: str, rebuild: bool = False) -> int:
        """Push queued attempts again (those still in the queue stay as they are); return how
        many were missing from it.

        A rebuild pushes every queued attempt, a page at a time. A periodic pass reads the
        oldest page and goes on only while its pages find attempts missing: one that went
        missing behind them is in the oldest page by the time the workers have popped what
        was ahead of it (or one pass later, if they pop more than a page per pass), and its
        score puts it back at the head. A backlog thus costs a pass one page, not a read and
        a push of all of it: with 100,000 attempts queued that took 0.7-1.0 s of the event
        loop every pass (a page: 8-13 ms), and 6% of the scheduler's time under the
        submission benchmark, with 2,000-3,000 queued.
        """
        page = self.rebuild_page if rebuild else self.reconcile_page
        after: tuple[datetime, int] | None = None
        added = 0
        while True:
            queued = await self.service.store.queued_tasks(
                min_age_seconds=min_age, limit=page, after=after
            )
            if not queued:
                break
            found = await self.service.queue.push([(ref, at.timestamp()) for ref, at in queued])
            added += found
            if len(queued) < page or not (rebuild or found):
                break
            last_ref, last_at = queued[-1]
            after = (last_at, last_ref.node)
        if added:
            self.service.metrics.rescued.labels("queue_entry").inc(added)
            log.info("queue reconciled (%s): %d attempt(s) pushed again", why, added)
        return added

    async def refresh_statistics(self) -> None:
        tables = await self.service.store.refresh_statistics()
        if tables:
            log.debug("planner statistics refreshed", extra={"tables": tables})

    async def update_gauges(self) -> None:
        m = self.service.metrics
        stats = await self.service.store.stats(worker_window_seconds=self.service.lease_seconds)
        m.tasks_running.set(stats.running)
        m.jobs_active.set(stats.jobs_active)
        m.workers_alive.set(stats.workers_alive)
        m.oldest_queued.set(stats.oldest_queued_age_seconds)
        m.queue_depth.set(await self.service.queue.depth())
