"""Value objects shared by every layer: specs that users submit, and views that they read."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class NodeState(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_NODE_STATES


TERMINAL_NODE_STATES = frozenset(
    {NodeState.SUCCEEDED, NodeState.FAILED, NodeState.UPSTREAM_FAILED, NodeState.CANCELLED}
)


class JobStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    """How one attempt ended; also the `reason` recorded on the attempt."""

    SUCCEEDED = "succeeded"
    EXIT_CODE = "exit_code"  # the command exited non-zero (or could not be spawned)
    TIMEOUT = "timeout"  # timeout_seconds elapsed; the worker killed the process group
    LOST = "lost"  # the lease expired (worker dead, stuck or cut off): counts as a failure
    CANCELLED = "cancelled"  # the job was cancelled while the attempt ran
    INTERRUPTED = "interrupted"  # the worker shut down and gave it back: retried, not counted

    @property
    def failed(self) -> bool:
        return self is not Outcome.SUCCEEDED


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: delay = min(maximum, base * factor**(attempt-1)), then jittered."""

    base_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.5  # fraction of the delay that is randomised (0: none, 1: full jitter)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: str
    command: str
    name: str = ""
    retries: int = 0
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    depends_on: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    backoff: RetryPolicy | None = None  # per-node override of the global policy

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def ready_at_submission(self) -> bool:
        """Queued as soon as its job is stored: a root without an idempotency key (keyed
        roots are admitted by key first)."""
        return not self.depends_on and self.idempotency_key is None


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    nodes: tuple[NodeSpec, ...]


@dataclass(frozen=True, slots=True, order=True)
class TaskRef:
    """One attempt of one node: the only thing that travels through the queue."""

    node: int  # internal node key (nodes.id), not the user's node id
    attempt: int

    def encode(self) -> str:
        return f"{self.node}:{self.attempt}"

    @classmethod
    def decode(cls, raw: str | bytes) -> TaskRef:
        text = raw.decode() if isinstance(raw, bytes) else raw
        node, _, attempt = text.partition(":")
        ref = cls(int(node), int(attempt))
        # Whoever can write to Redis must not make a claim fail for the refs popped with theirs.
        if not (0 <= ref.node < 2**63 and 0 <= ref.attempt < 2**31):  # bigint, int
            raise ValueError(f"task ref out of range: {text[:40]!r}")
        return ref


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """What a worker needs to run an attempt; comes from the store, never from the queue."""

    ref: TaskRef
    job_id: str
    node_id: str
    command: str
    timeout_seconds: float | None
    env: tuple[tuple[str, str], ...] = ()
    has_dependents: bool = False  # its success may unblock work: see CompleteTasks' `want`


@dataclass(frozen=True, slots=True)
class Output:
    """The bounded tail of one stream, and how many bytes the stream had in all."""

    tail: str = ""
    total_bytes: int = 0

    @property
    def truncated(self) -> bool:
        return self.total_bytes > len(self.tail.encode())


@dataclass(frozen=True, slots=True)
class TaskResult:
    ref: TaskRef
    outcome: Outcome
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime
    stdout: Output = field(default_factory=Output)
    stderr: Output = field(default_factory=Output)


@dataclass(frozen=True, slots=True)
class Beat:
    """One running attempt as a worker reports it in a heartbeat."""

    ref: TaskRef
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AttemptView:
    attempt: int
    worker_id: str | None
    enqueued_at: datetime | None
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    reason: str | None
    stdout: Output
    stderr: Output


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    name: str
    command: str
    state: NodeState
    retries: int
    timeout_seconds: float | None
    idempotency_key: str | None
    depends_on: tuple[str, ...]
    attempt: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    worker_id: str | None
    exit_code: int | None
    cached: bool
    attempts: tuple[AttemptView, ...]
    explanation: str = ""
    # For a cached node: the attempt (of another node with the same key) whose result it reuses.
    cached_result: AttemptView | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    name: str
    status: JobStatus
    created_at: datetime
    finished_at: datetime | None
    nodes_total: int
    node_counts: dict[str, int]
    nodes: tuple[NodeView, ...] = ()
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: tuple[JobView, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Submission:
    """One job to submit, as `Store.submit_jobs` takes several together."""

    spec: JobSpec
    idempotency_key: str | None = None
    request_digest: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    job_id: str
    created: bool  # False when an Idempotency-Key matched an existing job
    queued: tuple[TaskRef, ...] = ()
    created_at: datetime | None = None
    node_counts: dict[str, int] = field(default_factory=dict)  # by state, after submission
    # Per `assign` entry of the submission, in order: the attempts claimed for that worker.
    claimed: tuple[tuple[ClaimedTask, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class FinishedJob:
    job_id: str
    status: JobStatus
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class CompleteResult:
    # One per reported result: the attempt's enqueue time if accepted, None if the attempt
    # was stale (the result was ignored).
    enqueued_at: tuple[datetime | None, ...]
    queued: tuple[TaskRef, ...] = ()  # downstream attempts made ready, to push to the queue
    finished_jobs: tuple[FinishedJob, ...] = ()
    claimed: tuple[ClaimedTask, ...] = ()  # made ready and claimed for the reporting worker
    # Per result: already recorded by an earlier delivery of the same report (a retry).
    duplicate: tuple[bool, ...] = ()

    @property
    def accepted(self) -> tuple[bool, ...]:
        """Per result: recorded now or before; False only for stale attempts."""
        dup = self.duplicate or (False,) * len(self.enqueued_at)
        return tuple(e is not None or d for e, d in zip(self.enqueued_at, dup, strict=True))


@dataclass(frozen=True, slots=True)
class GivenUp:
    """An attempt the scheduler gave up on, with what a log line about it needs."""

    ref: TaskRef
    job_id: str
    node_id: str
    worker_id: str | None


@dataclass(frozen=True, slots=True)
class SweepResult:
    lost: tuple[GivenUp, ...] = ()  # attempts whose lease expired
    timed_out: tuple[GivenUp, ...] = ()  # attempts past their deadline that nobody reported
    queued: tuple[TaskRef, ...] = ()  # attempts made ready as a consequence
    finished_jobs: tuple[FinishedJob, ...] = ()


@dataclass(frozen=True, slots=True)
class CancelResult:
    job: JobView
    withdrawn: tuple[TaskRef, ...] = ()  # queued attempts that will not run: drop from queue
    queued: tuple[TaskRef, ...] = ()  # attempts of other jobs made ready (idempotency keys)
    finished_jobs: tuple[FinishedJob, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What the scheduler's gauges show: how much waits, runs, and who works."""

    queued: int = 0
    running: int = 0
    jobs_active: int = 0
    workers_alive: int = 0
    oldest_queued_age_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    cancel: tuple[TaskRef, ...] = ()  # attempts to kill: the job was cancelled
    lost: tuple[TaskRef, ...] = ()  # attempts no longer held by this worker: kill, do not report
    # What giving back attempts the worker no longer lists caused (see Store.heartbeat).
    queued: tuple[TaskRef, ...] = ()
    finished_jobs: tuple[FinishedJob, ...] = ()
