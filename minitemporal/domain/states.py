"""The node state machine: which transitions exist and what a finished attempt leads to.

Storage backends apply these decisions inside their transactions; they never decide on their
own whether a node retries, fails or unblocks its children.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from minitemporal.domain.backoff import compute_backoff
from minitemporal.domain.model import JobStatus, NodeState, Outcome, RetryPolicy

S = NodeState

TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    S.PENDING: frozenset({S.QUEUED, S.UPSTREAM_FAILED, S.CANCELLED, S.SUCCEEDED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.SUCCEEDED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.RETRY_WAIT, S.FAILED, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.UPSTREAM_FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
# pending/queued -> succeeded: completed from the result of an earlier run of the same
# idempotency key, without running again.


def can_transition(src: NodeState, dst: NodeState) -> bool:
    return dst in TRANSITIONS[src]


@dataclass(frozen=True, slots=True)
class AfterAttempt:
    """Where a node goes when its current attempt ends."""

    state: NodeState
    retry_delay: float | None = None  # seconds from now, when state is RETRY_WAIT


def after_attempt(
    outcome: Outcome,
    attempt: int,
    max_attempts: int,
    policy: RetryPolicy,
    *,
    job_cancelled: bool = False,
    rng: random.Random | None = None,
) -> AfterAttempt:
    """Decide the node's next state from how attempt number `attempt` ended.

    The delay is relative so that the store adds it to its own clock (PostgreSQL's), the only
    clock the design trusts.
    """
    if outcome is Outcome.SUCCEEDED:
        return AfterAttempt(S.SUCCEEDED)
    if job_cancelled or outcome is Outcome.CANCELLED:
        return AfterAttempt(S.CANCELLED)
    if attempt < max_attempts:
        return AfterAttempt(S.RETRY_WAIT, compute_backoff(attempt, policy, rng))
    return AfterAttempt(S.FAILED)


def job_status_when_done(*, cancelled: bool, failed_nodes: int) -> JobStatus:
    """A job's final status once none of its nodes can run any more."""
    if cancelled:
        return JobStatus.CANCELLED
    return JobStatus.FAILED if failed_nodes else JobStatus.SUCCEEDED
