"""The state machine's decisions and the bounds of retry backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitemporal.domain.backoff import backoff_cap, compute_backoff
from minitemporal.domain.model import JobStatus, NodeState, Outcome, RetryPolicy
from minitemporal.domain.states import (
    TRANSITIONS,
    after_attempt,
    can_transition,
    job_status_when_done,
)

POLICY = RetryPolicy(base_seconds=1.0, factor=2.0, max_seconds=60.0, jitter=0.5)


def test_terminal_states_have_no_way_out() -> None:
    for state in NodeState:
        assert (not TRANSITIONS[state]) == state.terminal


def test_only_designed_transitions() -> None:
    assert can_transition(NodeState.PENDING, NodeState.QUEUED)
    assert can_transition(NodeState.RUNNING, NodeState.RETRY_WAIT)
    assert not can_transition(NodeState.PENDING, NodeState.RUNNING)
    assert not can_transition(NodeState.SUCCEEDED, NodeState.QUEUED)
    assert not can_transition(NodeState.RETRY_WAIT, NodeState.RUNNING)


def test_success_and_cancellation() -> None:
    assert after_attempt(Outcome.SUCCEEDED, 1, 1, POLICY).state is NodeState.SUCCEEDED
    assert after_attempt(Outcome.CANCELLED, 1, 5, POLICY).state is NodeState.CANCELLED
    cancelled = after_attempt(Outcome.EXIT_CODE, 1, 5, POLICY, job_cancelled=True)
    assert cancelled.state is NodeState.CANCELLED


@pytest.mark.parametrize("outcome", [Outcome.EXIT_CODE, Outcome.TIMEOUT, Outcome.LOST])
def test_retries_n_means_n_plus_one_attempts(outcome: Outcome) -> None:
    retries = 2
    decisions = [after_attempt(outcome, a, retries + 1, POLICY) for a in (1, 2, 3)]
    assert [d.state for d in decisions] == [
        NodeState.RETRY_WAIT,
        NodeState.RETRY_WAIT,
        NodeState.FAILED,
    ]
    assert decisions[0].retry_delay is not None and decisions[2].retry_delay is None


def test_job_status() -> None:
    assert job_status_when_done(cancelled=False, failed_nodes=0) is JobStatus.SUCCEEDED
    assert job_status_when_done(cancelled=False, failed_nodes=2) is JobStatus.FAILED
    assert job_status_when_done(cancelled=True, failed_nodes=2) is JobStatus.CANCELLED


def test_backoff_grows_then_caps() -> None:
    caps = [backoff_cap(a, POLICY) for a in range(1, 10)]
    assert caps[:6] == [1, 2, 4, 8, 16, 32]
    assert caps[6:] == [60, 60, 60]
    assert backoff_cap(10_000, POLICY) == 60  # no overflow


@given(
    attempt=st.integers(1, 5000),
    base=st.floats(0, 1000),
    factor=st.floats(1, 10),
    maximum=st.floats(0, 86400),
    jitter=st.floats(0, 1),
    seed=st.integers(),
)
def test_backoff_bounds(
    attempt: int, base: float, factor: float, maximum: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(base_seconds=base, factor=factor, max_seconds=maximum, jitter=jitter)
    cap = backoff_cap(attempt, policy)
    assert 0 <= cap <= maximum
    delay = compute_backoff(attempt, policy, random.Random(seed))
    assert cap * (1 - jitter) - 1e-9 <= delay <= cap + 1e-9


def test_backoff_is_jittered() -> None:
    rng = random.Random(1)
    delays = {round(compute_backoff(3, POLICY, rng), 6) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 2.0 and max(delays) <= 4.0


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_cap(0, POLICY)
