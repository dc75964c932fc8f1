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
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.RETRY_WAIT, S.FAILED, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.UPSTREAM_FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
# pending -> succeeded: completed from the recorded result of another node with the same
# idempotency key, without running (see `admit_keyed`).


def can_transition(src: NodeState, dst: NodeState) -> bool:
    return dst in TRANSITIONS[src]


@dataclass(frozen=True, slots=True)
class AfterAttempt:
    """Where a node goes when its current attempt ends."""

    state: NodeState
    retry_delay: float | None = None  # seconds from now, when state is RETRY_WAIT
    given_back: bool = False  # the attempt does not count against the node's retries


def after_attempt(
    outcome: Outcome,
    counted_attempts: int,
    max_attempts: int,
    policy: RetryPolicy,
    *,
    job_cancelled: bool = False,
    rng: random.Random | None = None,
) -> AfterAttempt:
    """Decide the node's next state from how its current attempt ended.

    `counted_attempts` is how many attempts count against `retries`, this one included
    (attempts given back by a shutting-down worker do not). The delay is relative so that the
    store adds it to its own clock (PostgreSQL's), the only clock the design trusts.
    """
    if outcome is Outcome.SUCCEEDED:
        return AfterAttempt(S.SUCCEEDED)
    if job_cancelled or outcome is Outcome.CANCELLED:
        return AfterAttempt(S.CANCELLED)
    if outcome is Outcome.INTERRUPTED:
        return AfterAttempt(S.RETRY_WAIT, 0.0, given_back=True)
    if counted_attempts < max_attempts:
        return AfterAttempt(S.RETRY_WAIT, compute_backoff(counted_attempts, policy, rng))
    return AfterAttempt(S.FAILED)


class ReadyKeyed:
    """What becomes of a ready node with an idempotency key (see `admit_keyed`)."""

    CACHED = "cached"  # another node with the key succeeded: reuse its result, do not run
    WAIT = "wait"  # another node with the key is in flight: wait for its outcome
    QUEUE = "queue"  # nobody has the key: run it


def admit_keyed(*, key_succeeded: bool, key_in_flight: bool) -> str:
    """A node with an idempotency key runs at most once per key, never twice at once."""
    if key_succeeded:
        return ReadyKeyed.CACHED
    if key_in_flight:
        return ReadyKeyed.WAIT
    return ReadyKeyed.QUEUE


def job_status_when_done(*, cancelled: bool, failed_nodes: int) -> JobStatus:
    """A job's final status once none of its nodes can run any more."""
    if cancelled:
        return JobStatus.CANCELLED
    return JobStatus.FAILED if failed_nodes else JobStatus.SUCCEEDED
