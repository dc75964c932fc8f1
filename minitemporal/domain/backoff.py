"""Retry delays: a pure function, so its bounds are unit-tested rather than observed."""

from __future__ import annotations

import random

from minitemporal.domain.model import RetryPolicy


def backoff_cap(attempt: int, policy: RetryPolicy) -> float:
    """The un-jittered delay after failed attempt number `attempt` (1-based)."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    # Cap the exponent first: factor ** 10_000 would overflow a float.
    exponent = min(attempt - 1, 1024)
    try:
        raw = policy.base_seconds * policy.factor**exponent
    except OverflowError:
        raw = policy.max_seconds
    return min(policy.max_seconds, raw)


def compute_backoff(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Delay in seconds before the attempt after `attempt`, in [cap*(1-jitter), cap].

    Jitter spreads retries of many nodes that failed together (a flapping dependency) so they
    do not return as one thundering herd; keeping part of the delay fixed guarantees that a
    retry never follows its failure immediately unless the policy asks for that.
    """
    cap = backoff_cap(attempt, policy)
    draw = (rng or random).random()
    return cap * (1.0 - policy.jitter * draw)
