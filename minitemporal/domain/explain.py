"""Why a node is where it is, in one sentence: the first thing an operator asks of a DAG."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from minitemporal.domain.model import AttemptView, NodeState

S = NodeState


@dataclass(frozen=True, slots=True)
class NodeFacts:
    state: NodeState
    attempt: int
    max_attempts: int
    dependency_states: Mapping[str, NodeState] = field(default_factory=dict)
    queued_ahead: int | None = None
    next_attempt_at: datetime | None = None
    worker_id: str | None = None
    last_attempt: AttemptView | None = None
    cached: bool = False
    cancel_requested: bool = False
    key_wait: bool = False
    idempotency_key: str | None = None


def _how(attempt: AttemptView | None) -> str:
    if attempt is None or attempt.reason is None:
        return "unknown reason"
    if attempt.reason == "exit_code":
        return f"exit code {attempt.exit_code}"
    if attempt.reason == "timeout":
        return "timed out"
    if attempt.reason == "lost":
        return f"lost its worker ({attempt.worker_id})"
    return attempt.reason


def explain(f: NodeFacts) -> str:
    if f.state is S.PENDING and f.key_wait:
        return (
            f"waiting for another node with idempotency key {f.idempotency_key!r} to finish; "
            "if it succeeds, its result is reused"
        )
    if f.state is S.PENDING:
        waiting = [d for d, s in f.dependency_states.items() if s is not S.SUCCEEDED]
        return "waiting for " + ", ".join(waiting) if waiting else "about to be queued"
    if f.state is S.QUEUED:
        ahead = f.queued_ahead
        where = f"behind {ahead} queued attempt(s)" if ahead is not None else "for a free worker"
        return f"queued (attempt {f.attempt} of {f.max_attempts}), waiting {where}"
    if f.state is S.RUNNING:
        extra = "; cancel requested" if f.cancel_requested else ""
        return f"running attempt {f.attempt} of {f.max_attempts} on {f.worker_id}{extra}"
    if f.state is S.RETRY_WAIT:
        when = f.next_attempt_at.isoformat() if f.next_attempt_at else "soon"
        return (
            f"attempt {f.attempt} of {f.max_attempts} {_how(f.last_attempt)}; "
            f"backing off until {when}"
        )
    if f.state is S.SUCCEEDED:
        return "succeeded from the recorded result of its idempotency key" if f.cached else ""
    if f.state is S.FAILED:
        return f"failed: attempt {f.attempt} of {f.max_attempts} {_how(f.last_attempt)}"
    if f.state is S.UPSTREAM_FAILED:
        failed = [d for d, s in f.dependency_states.items() if s in (S.FAILED, S.UPSTREAM_FAILED)]
        return "not run: upstream " + (", ".join(failed) or "node") + " failed"
    if f.state is S.CANCELLED:
        if f.last_attempt is not None and f.last_attempt.reason == "cancelled":
            return f"cancelled while running attempt {f.attempt}; the process was killed"
        return (
            "cancelled before it ran" if f.attempt == 0 or f.last_attempt is None else "cancelled"
        )
    return ""
