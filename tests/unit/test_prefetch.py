"""The worker's prefetch limit: how many claimed attempts it holds beyond its slots."""

from __future__ import annotations

import pytest

from minitemporal.config import Settings
from minitemporal.worker.worker import PREFETCH_MAX_RUN, prefetch_limit


def test_short_attempts_prefetch_up_to_the_configured_most() -> None:
    assert prefetch_limit(16, 4, 0.002) == 16
    assert prefetch_limit(16, 4, 0.0) == 16  # no run seen yet


def test_no_more_than_the_slots_start_within_the_window() -> None:
    # 4 slots, 0.1 s each: 20 start within 0.5 s, but 0.25 s each only 8.
    assert prefetch_limit(64, 4, 0.1) == 20
    assert prefetch_limit(64, 4, 0.25) == 8
    assert prefetch_limit(64, 1, 0.3) == 1


@pytest.mark.parametrize("run", [PREFETCH_MAX_RUN, 2.0, 60.0])
def test_long_attempts_are_not_prefetched(run: float) -> None:
    assert prefetch_limit(16, 4, run) == 0


def test_prefetch_off() -> None:
    assert prefetch_limit(0, 4, 0.001) == 0


def test_default_prefetch_is_eight_per_slot_and_explicit_wins() -> None:
    assert Settings(worker_slots=4).effective_worker_prefetch == 32
    assert Settings(worker_slots=512).effective_worker_prefetch == 1024
    assert Settings(worker_slots=4, worker_prefetch=0).effective_worker_prefetch == 0
    assert Settings(worker_slots=4, worker_prefetch=2).effective_worker_prefetch == 2
