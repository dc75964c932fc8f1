"""The worker loop: pop, claim, run, heartbeat, report.

- A ref popped from the queue runs only if the scheduler's fenced claim grants it; the command
  comes from the claim reply, never from the queue.
- Slots are permits: one per attempt held, taken before popping. When an attempt ends its
  permit travels with its result: the report pops that many refs from the queue without
  waiting and asks the scheduler, in the same call and transaction, to claim them and then
  as many of the attempts the results unblocked. Under load a task costs one call instead of
  two; a chain step costs one round trip instead of push, pop and claim.
- One heartbeat per interval covers every attempt this worker holds (running, or finished but
  not yet reported). Its reply says which to cancel and which are no longer ours.
- If no heartbeat gets through for a whole lease, the scheduler will have given our attempts
  to others: we kill our own children rather than run them twice.
- Results are reported in batches: whatever finished while the previous report was in flight.
- Prefetch: beyond its slots a worker may hold up to `prefetch` claimed attempts that have not
  started; one launches the moment a slot frees, while the report refills in the background.
  Short attempts need many in hand: a slot frees faster than a report's round trip refills
  it. As Celery users know, prefetching starves other workers when tasks are long, so a
  worker holds no more than its slots start within PREFETCH_MAX_RUN (by the moving average
  of recent run times; none once attempts run longer), and an attempt left waiting over
  PREFETCH_WAIT is released: queued again, same attempt, as if never claimed.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from minitemporal.domain.model import (
    Beat,
    ClaimedTask,
    Outcome,
    Output,
    TaskRef,
    TaskResult,
)
from minitemporal.errors import CredentialsRejected, MinitemporalError, Unavailable
from minitemporal.observability.logging import task_fields
from minitemporal.observability.metrics import WorkerMetrics
from minitemporal.queue.base import TaskQueue
from minitemporal.rpc.client import SchedulerClient
from minitemporal.worker.environment import (
    RunAs,
    UserPool,
    WorkdirPool,
    command_env,
    protect_worker_process,
)
from minitemporal.worker.process import (
    Execution,
    ResourceLimits,
    RunResult,
    RunSpec,
)

log = logging.getLogger("minitemporal.worker")
PREFETCH_MAX_RUN = 0.5  # seconds: prefetch only what the slots start within this long
PREFETCH_WAIT = 1.0  # a prefetched attempt not started after this long is released
POP_WAITED = 0.005  # seconds: a pop that took longer waited on an empty queue


def prefetch_limit(prefetch: int, slots: int, run_average: float) -> int:
    """Claimed attempts worth holding beyond `slots`: at most `prefetch`, and no more than the
    slots start within PREFETCH_MAX_RUN when attempts take `run_average` seconds each (so
    none once they run that long)."""
    if prefetch <= 0 or run_average >= PREFETCH_MAX_RUN:
        return 0
    return min(prefetch, int(slots * PREFETCH_MAX_RUN / max(run_average, 1e-3)))


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    worker_id: str
    slots: int
    lease_seconds: float
    heartbeat_seconds: float
    drain_seconds: float
    kill_grace_seconds: float
    output_tail_bytes: int
    work_dir: str | None = None
    limits: ResourceLimits | None = None
    pop_timeout: float = 1.0
    prefetch: int = 0


class _Slots:
    """Free slots as permits; `take` never blocks, `wait` waits for one to be free."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._freed = anyio.Event()

    def take(self, wanted: int) -> int:
        got = max(0, min(wanted, self.free))
        self.free -= got
        return got

    def give(self, count: int = 1) -> None:
        if count > 0:
            self.free += count
            self._freed.set()

    async def wait(self, timeout: float) -> None:
        if self.free > 0:
            return
        self._freed = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._freed.wait()


@dataclass(slots=True)
class _Held:
    """An attempt this worker holds, from claim until its result is acknowledged."""

    task: ClaimedTask
    execution: Execution | None = None  # None while it waits for a slot (prefetched)
    report: bool = True  # False once the scheduler said the attempt is no longer ours
    finished: bool = False
    waiting_since: float = 0.0

    @property
    def started_at(self) -> datetime | None:
        return self.execution.started_at if self.execution is not None else None


@dataclass(slots=True)
class _Report:
    result: TaskResult
    permit: bool  # carries its slot, to be filled by what the result unblocks
    unblocks: bool = False  # a success of a node others depend on: likely hands us a child


@dataclass(slots=True)
class _Reports:
    pending: list[_Report] = field(default_factory=list)
    wake: anyio.Event = field(default_factory=anyio.Event)


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        client: SchedulerClient,
        queue: TaskQueue,
        metrics: WorkerMetrics,
        env_source: Callable[[ClaimedTask, str], dict[str, str]] = command_env,
        users: UserPool | None = None,
    ) -> None:
        self.config = config
        self._users = users
        self.client = client
        self.queue = queue
        self.metrics = metrics
        self._env = env_source
        self._held: dict[TaskRef, _Held] = {}
        self._slots = _Slots(config.slots + config.prefetch)
        self._running = 0
        self._waiting: collections.deque[_Held] = collections.deque()  # prefetched
        self._run_average = 0.0  # seconds, a moving average of recent attempts' run times
        self._changed = anyio.Event()  # set whenever attempts end or results are acknowledged
        self._reports = _Reports()
        # Room for the runs of a busy loop: the pool's thread refills only once it gets the
        # interpreter lock, and a pool that runs dry makes each directory on the loop.
        self._workdirs = WorkdirPool(config.work_dir, size=max(16, 2 * config.slots))
        self._stopping = anyio.Event()
        self._last_heartbeat_ok = time.monotonic()
        self._report_failures = 0
        self._tg: TaskGroup | None = None
        metrics.slots_total.set(config.slots)

    @property
    def running(self) -> int:
        return self._running

    async def run(self, stopping: anyio.Event) -> None:
        """Work until `stopping` is set, then drain: finish, give back, report."""
        self._stopping = stopping
        log.info(
            "worker started", extra={"worker": self.config.worker_id, "slots": self.config.slots}
        )
        protect_worker_process()
        if self._users is None and os.geteuid() == 0:
            log.warning(
                "commands run as root: set MINITEMPORAL_RUN_AS_USER to run them unprivileged"
            )
        self._workdirs.start()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._heartbeats)
                tg.start_soon(self._reporter)
                tg.start_soon(self._end_pop_on_stop, stopping)
                if self.config.prefetch:
                    tg.start_soon(self._release_stale)
                await self._fetch(stopping)
                await self._drain()
                await self._flush_reports(timeout=10.0)
                tg.cancel_scope.cancel()
        finally:
            self._workdirs.close()
        log.info("worker stopped", extra={"worker": self.config.worker_id})

    # --- taking work
    async def _fetch(self, stopping: anyio.Event) -> None:
        failures = 0
        accepted = False  # has the scheduler taken our credentials since the last refusal?
        idle = True  # the queue was empty at the last look: offer our slots while we wait
        while not stopping.is_set():
            await self._slots.wait(self.config.pop_timeout)
            permits = self._slots.take(self._room())
            if not permits:
                if self._slots.free:  # free permits are prefetch while prefetching pauses
                    await anyio.sleep(min(self.config.pop_timeout, PREFETCH_WAIT / 4))
                continue
            tasks: list[ClaimedTask] = []
            offered: list[ClaimedTask] = []  # claimed for us by submissions, started already
            try:
                if not accepted or self.client.refused is not None:
                    # Pop nothing we could not claim: a popped ref waits for the reconciler.
                    # A stop does not wait for this answer (a scheduler that is gone would
                    # hold it for the call's whole deadline).
                    accepted = await self._unless_stopped(
                        stopping, lambda: self.client.heartbeat(self.config.worker_id, [])
                    )
                    if not accepted:
                        continue
                waiting_since = time.monotonic()
                if idle and self.client.can_offer:
                    refs = await self._pop_or_offer(permits, offered)
                else:
                    refs = await self.queue.pop(
                        permits, self.config.pop_timeout, wake=self.config.worker_id
                    )
                # Work waiting in the queue comes back at once; a pop that had to wait found
                # it empty, and the next one offers our slots too.
                idle = not refs or time.monotonic() - waiting_since > POP_WAITED
                # Popped beyond the slots that offers left us: back to the front of the queue.
                refs, extra = refs[: permits - len(offered)], refs[permits - len(offered) :]
                if extra:
                    await self.queue.push([(r, 0.0) for r in extra])
                if refs:
                    tasks = await self.client.claim(self.config.worker_id, refs)
                    self.metrics.claims.labels("won").inc(len(tasks))
                    self.metrics.claims.labels("lost").inc(len(refs) - len(tasks))
                failures = 0
            except CredentialsRejected:  # the client logged what to fix
                accepted = False
                failures += 1
                with anyio.move_on_after(min(0.5 * 2**failures, 10.0)):
                    await stopping.wait()
                continue
            except Unavailable as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("cannot take work: %s (retrying)", exc)
                await anyio.sleep(min(0.1 * 2**failures, 5.0))
            except MinitemporalError as exc:
                log.error("claim refused: %s", exc)
                await anyio.sleep(1.0)
            finally:
                self._slots.give(permits - len(tasks) - len(offered))
            for task in tasks:
                self._start(task)

    async def _pop_or_offer(self, permits: int, offered: list[ClaimedTask]) -> list[TaskRef]:
        """Wait for work two ways at once: the queue, and offers of our free slots to the
        scheduler, which a new job's submission answers with attempts it claimed for us (no
        push, pop and claim on the way). Offered attempts start as they arrive (into
        `offered`; the caller's permits cover them) and what is left is offered again. A pop
        that finds work withdraws the standing offer; offers that used every permit end the
        pop, so that the next wait takes the slots freed since."""
        worker_id = self.config.worker_id
        deadline = time.monotonic() + self.config.pop_timeout
        popped = anyio.Event()
        standing = False

        async def offer() -> None:
            nonlocal standing
            left = permits
            while left > 0 and not popped.is_set():
                standing = True
                try:
                    wait = max(0.0, deadline - time.monotonic())
                    tasks = await self.client.offer(worker_id, left, wait)
                except MinitemporalError as exc:  # the pop goes on; the next wait offers again
                    log.debug("offer failed: %s", exc)
                    return
                finally:
                    standing = False
                tasks = tasks[:left]  # never more than offered (a surplus is given back by
                self.metrics.claims.labels("offered").inc(len(tasks))  # the next heartbeat)
                for task in tasks:
                    offered.append(task)
                    self._start(task)
                if not tasks:  # lapsed or withdrawn
                    return
                left -= len(tasks)
                await anyio.lowlevel.checkpoint()  # spawn first, offer again after
            if left == 0 and not popped.is_set():
                with contextlib.suppress(Unavailable):
                    await self.queue.wake(worker_id)

        failed: MinitemporalError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(offer)
            try:
                refs = await self.queue.pop(permits, self.config.pop_timeout, wake=worker_id)
            except MinitemporalError as exc:  # raised after the group: not as a group
                failed, refs = exc, []
            finally:
                popped.set()
                if standing:
                    with anyio.CancelScope(shield=True), contextlib.suppress(MinitemporalError):
                        await self.client.withdraw_offer(worker_id)
        if failed is not None:
            raise failed
        return refs

    async def _end_pop_on_stop(self, stopping: anyio.Event) -> None:
        """A stop ends the wait on the queue now, not at the pop's timeout."""
        await stopping.wait()
        with contextlib.suppress(Unavailable):
            await self.queue.wake(self.config.worker_id)

    @staticmethod
    async def _unless_stopped(stopping: anyio.Event, call: Callable[[], Awaitable[object]]) -> bool:
        """Await `call` unless `stopping` is set first (then abandon it): did it finish?"""
        failed: BaseException | None = None
        finished = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await call()
                finished = True
            except Exception as exc:  # raised after the group: not as a group
                failed = exc
            tg.cancel_scope.cancel()
        if failed is not None:
            raise failed
        return finished

    def _prefetch_limit(self) -> int:
        """Attempts to hold beyond the slots now: at most `prefetch`, and only as many as the
        slots would start within PREFETCH_MAX_RUN at the recent run times."""
        return prefetch_limit(self.config.prefetch, self.config.slots, self._run_average)

    def _room(self) -> int:
        """Permits the fetcher may take now: free ones, up to the slots plus the prefetch
        limit."""
        in_use = self._slots.total - self._slots.free
        limit = self.config.slots + self._prefetch_limit()
        return max(0, min(self._slots.free, limit - in_use))

    def _start(self, task: ClaimedTask) -> None:
        """Take a claimed attempt (the caller took one permit for it): run it if a slot is
        free, else keep it waiting (prefetched)."""
        if self._running < self.config.slots:
            self._launch(_Held(task))
            return
        held = _Held(task, waiting_since=time.monotonic())
        self._held[task.ref] = held
        self._waiting.append(held)
        self.metrics.prefetched.set(len(self._waiting))

    def _launch_waiting(self) -> None:
        if self._stopping.is_set():  # draining: prefetched attempts go back, they do not start
            return
        while self._waiting and self._running < self.config.slots:
            held = self._waiting.popleft()
            self.metrics.prefetched.set(len(self._waiting))
            if held.report:
                self._launch(held)

    def _launch(self, held: _Held) -> None:
        if self._tg is None:  # pragma: no cover - only called while run() is running
            raise RuntimeError("the worker is not running")
        task = held.task
        user = self._users.acquire() if self._users is not None else None
        workdir = self._workdirs.take(user)
        env = self._env(task, workdir)
        spec = RunSpec(
            command=task.command,
            env=user.env(env, workdir) if user is not None else env,
            cwd=workdir,
            timeout=task.timeout_seconds,
            kill_grace=self.config.kill_grace_seconds,
            tail_bytes=self.config.output_tail_bytes,
            user=user.uid if user is not None else None,
            group=user.gid if user is not None else None,
            limits=self.config.limits,
        )
        held.execution = Execution(spec)
        self._held[task.ref] = held
        self._running += 1
        self.metrics.slots_busy.set(self._running)
        # Spawned in this loop turn; the task that awaits its end first runs a turn later.
        held.execution.start()
        self._tg.start_soon(self._execute, held, workdir, user)

    async def _execute(self, held: _Held, workdir: str, user: RunAs | None = None) -> None:
        task = held.task
        fields = task_fields(task.job_id, task.node_id, task.ref.attempt, self.config.worker_id)
        log.debug("attempt starting", extra=fields)
        execution = held.execution
        if execution is None:  # pragma: no cover - _launch sets it before starting this
            raise RuntimeError("no execution")
        try:
            result = await execution.run()
        except Exception as exc:  # a bug here must not take the other attempts down
            log.exception("attempt crashed inside the worker", extra=fields)
            result = RunResult(
                Outcome.LOST,
                None,
                execution.started_at,
                datetime.now(UTC),
                Output(),
                Output(f"minitemporal worker error: {exc}"),
            )
        if user is not None and self._users is not None and self._users.exclusive:
            # Before the slot frees: the next command may need this user back.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._users.release, user)
        self._running -= 1
        self.metrics.slots_busy.set(self._running)
        held.finished = True
        if result.started_at is not None:
            ran = (result.finished_at - result.started_at).total_seconds()
            self._run_average += 0.2 * (ran - self._run_average)
        # The slot travels with the report, to be refilled in the same call.
        keep = held.report and not self._stopping.is_set()
        if not keep:
            self._slots.give(1)
        self._changed.set()
        unblocks = task.has_dependents and result.outcome is Outcome.SUCCEEDED
        if held.report:
            self._queue_report(task.ref, result, permit=keep, unblocks=unblocks)
            if unblocks:
                # Children wait on this report's round trip: let the reporter send it before
                # the next spawn, the log line and the metrics. (A leaf's report waits: more
                # join its batch.)
                await anyio.lowlevel.cancel_shielded_checkpoint()
        else:
            self._held.pop(task.ref, None)
        # The freed slot's next command starts now, not in a task of its own a turn later.
        self._launch_waiting()
        self.metrics.spawn_seconds.observe(result.spawn_seconds)
        self.metrics.tasks_run.labels(result.outcome.value).inc()
        level = logging.INFO if result.outcome is Outcome.SUCCEEDED else logging.WARNING
        log.log(
            level,
            "attempt finished: %s",
            result.outcome.value,
            extra={**fields, "exit_code": result.exit_code},
        )
        self._workdirs.discard(workdir)

    # --- reporting
    def _queue_report(
        self, ref: TaskRef, r: RunResult, *, permit: bool, unblocks: bool = False
    ) -> None:
        result = TaskResult(
            ref=ref,
            outcome=r.outcome,
            exit_code=r.exit_code,
            started_at=r.started_at,
            finished_at=r.finished_at,
            stdout=r.stdout,
            stderr=r.stderr,
        )
        self._reports.pending.append(_Report(result, permit, unblocks))
        self._reports.wake.set()

    async def _reporter(self) -> None:
        """Send what finished, one report in flight: what finishes meanwhile goes in the next
        batch. Two or three in flight measured slower (more calls, smaller batches), so the
        report is sent from here, without a task of its own."""
        while True:
            if not self._reports.pending:
                self._reports.wake = anyio.Event()
                await self._reports.wake.wait()
            batch, self._reports.pending = self._reports.pending, []
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[_Report]) -> None:
        want = sum(r.permit for r in batch)
        if self._stopping.is_set():  # draining: take nothing new
            self._slots.give(want)
            want = 0
        results = [r.result for r in batch]
        # A slot whose result unblocks children is most likely refilled by one of them in
        # the same call: pop for the others only (a chain step skips a queue round trip).
        popped = await self._pop_now(want - sum(r.permit and r.unblocks for r in batch))
        try:
            accepted, tasks = await self.client.complete(
                self.config.worker_id, results, want=want, claim=popped
            )
            self._report_failures = 0
            if popped:
                won = len({t.ref for t in tasks} & set(popped))
                self.metrics.claims.labels("won").inc(won)
                self.metrics.claims.labels("lost").inc(len(popped) - won)
        except Unavailable as exc:
            # Free the slots now (the scheduler may be down a while); report again later.
            self._slots.give(want)
            self._report_failures += 1
            failures = self._report_failures
            if failures == 1 or failures % 30 == 0:
                log.warning("cannot report %d result(s): %s (retrying)", len(batch), exc)
            await anyio.sleep(min(0.1 * 2**failures, 5.0))
            self._reports.pending[:0] = [_Report(r, permit=False) for r in results]
            self._reports.wake.set()
            return
        except MinitemporalError as exc:
            log.error("results refused, dropping them: %s", exc)
            self._slots.give(want)
            accepted, tasks = [False] * len(batch), []
        for task in tasks[:want]:
            self._start(task)
        self._slots.give(want - min(want, len(tasks)))
        self._changed.set()
        for result, ok in zip(results, accepted, strict=False):
            self._held.pop(result.ref, None)
            if not ok:
                log.warning(
                    "result rejected: the attempt is no longer current",
                    extra={"attempt": result.ref.attempt, "ref": result.ref.encode()},
                )

    async def _pop_now(self, wanted: int) -> list[TaskRef]:
        """Refs already waiting in the queue, without waiting for more (0 when there are none,
        or the queue is down: the report goes ahead, the refs stay queued in the store)."""
        if wanted <= 0:
            return []
        try:
            return await self.queue.pop(wanted, 0)
        except Unavailable:
            return []

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            self._changed = anyio.Event()
            await self._changed.wait()

    async def _flush_reports(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._wait_until(
                lambda: (
                    not self._reports.pending
                    and not any(h.finished and h.report for h in self._held.values())
                )
            )

    # --- leases
    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.config.heartbeat_seconds)
            await self.heartbeat_once()

    async def heartbeat_once(self) -> None:
        held = list(self._held.items())
        beats = [Beat(ref, h.started_at) for ref, h in held if h.report]
        # A deadline well inside the lease: a heartbeat that hangs must not hide a lost lease.
        timeout = max(0.2, min(self.config.lease_seconds / 3, 10.0))
        try:
            reply = await self.client.heartbeat(self.config.worker_id, beats, timeout=timeout)
        except MinitemporalError as exc:
            self.metrics.heartbeat_failures.inc()
            silent = time.monotonic() - self._last_heartbeat_ok
            log.warning("heartbeat failed (%.1fs without one): %s", silent, exc)
            if silent > self.config.lease_seconds:
                self._lease_lost_everything()
            return
        self._last_heartbeat_ok = time.monotonic()
        for ref in reply.cancel:
            if (h := self._held.get(ref)) is not None:
                log.info("cancelling attempt: its job was cancelled", extra=self._fields(h))
                self._stop(h, Outcome.CANCELLED)
        for ref in reply.lost:
            if (h := self._held.get(ref)) is not None:
                log.warning("attempt no longer ours: stopping it", extra=self._fields(h))
                h.report = False
                self._stop(h, Outcome.LOST)
                if h.finished:
                    self._held.pop(ref, None)

    def _stop(self, h: _Held, outcome: Outcome) -> None:
        """Stop a running attempt, or end a waiting one without running it."""
        if h.execution is not None:
            h.execution.stop(outcome)
            return
        with contextlib.suppress(ValueError):
            self._waiting.remove(h)
        self.metrics.prefetched.set(len(self._waiting))
        h.finished = True
        if h.report:  # cancelled before it ran: report that, with its permit
            now = datetime.now(UTC)
            self._queue_report(
                h.task.ref,
                RunResult(outcome, None, None, now, Output(), Output()),
                permit=not self._stopping.is_set(),
            )
            if self._stopping.is_set():
                self._slots.give(1)
        else:
            self._held.pop(h.task.ref, None)
            self._slots.give(1)

    def _lease_lost_everything(self) -> None:
        """No heartbeat for a whole lease: our attempts may already run elsewhere."""
        for h in list(self._held.values()):
            if not h.finished:
                log.error("lease lost: killing attempt", extra=self._fields(h))
                h.report = False
                self._stop(h, Outcome.LOST)

    # --- shutdown
    async def _release_stale(self) -> None:
        """Release prefetched attempts that waited too long: other workers may be idle."""
        while True:
            await anyio.sleep(PREFETCH_WAIT / 4)
            now = time.monotonic()
            stale = [h for h in self._waiting if now - h.waiting_since > PREFETCH_WAIT]
            if stale:
                await self._release(stale)

    async def _release(self, waiting: list[_Held]) -> None:
        for h in waiting:
            with contextlib.suppress(ValueError):
                self._waiting.remove(h)
        self.metrics.prefetched.set(len(self._waiting))
        try:
            await self.client.release(self.config.worker_id, [h.task.ref for h in waiting])
        except MinitemporalError as exc:
            log.warning("cannot release %d prefetched attempt(s): %s", len(waiting), exc)
            self._waiting.extendleft(reversed(waiting))  # still ours: run them after all
            self.metrics.prefetched.set(len(self._waiting))
            return
        for h in waiting:
            self._held.pop(h.task.ref, None)
        self._slots.give(len(waiting))

    async def _drain(self) -> None:
        if self._waiting:  # prefetched, never started: back to the queue for other workers
            await self._release(list(self._waiting))
        if self._running:
            log.info(
                "draining: waiting up to %gs for %d attempt(s)",
                self.config.drain_seconds,
                self._running,
            )
        with anyio.move_on_after(self.config.drain_seconds):
            await self._wait_until(lambda: self._running == 0)
        for h in list(self._held.values()):
            if not h.finished:
                log.warning("drain timeout: giving the attempt back", extra=self._fields(h))
                self._stop(h, Outcome.INTERRUPTED)
        await self._wait_until(lambda: self._running == 0)

    def _fields(self, h: _Held) -> dict[str, object]:
        t = h.task
        return task_fields(t.job_id, t.node_id, t.ref.attempt, self.config.worker_id)
