"""Startup's objects are kept out of the cyclic collector's full passes."""

from __future__ import annotations

import subprocess
import sys

# In a child: freezing the test runner's own heap would keep its garbage for good.
CHILD = """
import gc
from minitemporal.app import settle_heap

class Node:
    def __init__(self):
        self.me = self  # a cycle: tracked by the collector

kept = [Node() for _ in range(50_000)]
garbage = [Node() for _ in range(10_000)]
del garbage
before = len(gc.get_objects())
settle_heap()
print(before, len(gc.get_objects()), gc.get_freeze_count(), len(kept))
"""


def test_what_startup_built_is_frozen_and_its_garbage_collected_first() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], check=True, capture_output=True, text=True
    ).stdout.split()
    before, after, frozen, kept = (int(x) for x in out)
    assert before > kept + 10_000  # the garbage cycles were still tracked
    # A full collection now walks almost nothing: what lived is frozen, the garbage is gone.
    assert after < 1_000
    assert kept <= frozen < before - 10_000
