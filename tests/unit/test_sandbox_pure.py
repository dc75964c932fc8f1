"""Run-as users and the worker's self-protection, without running a worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from minitemporal.errors import ConfigurationError
from minitemporal.worker.environment import RunAs, UserPool, kill_processes_of, parse_run_as


def test_run_as_accepts_names_and_numeric_ids_but_never_root() -> None:
    users = parse_run_as("nobody, 61001:61002")
    assert users[0].name == "nobody" and users[0].uid == 65534
    assert users[1] == RunAs("61001", 61001, 61002)
    for bad in ("root", "0", "61001:0", "no-such-user-here", "", "nobody,65534"):
        with pytest.raises(ConfigurationError):
            parse_run_as(bad)


@pytest.mark.skipif(os.geteuid() != 0, reason="the pool needs a root worker")
def test_a_pool_is_one_shared_user_or_one_per_slot() -> None:
    one = UserPool(parse_run_as("61001"), slots=4)
    assert not one.exclusive and one.acquire() == one.acquire()
    with pytest.raises(ConfigurationError, match="one per slot"):
        UserPool(parse_run_as("61001,61002"), slots=4)
    pool = UserPool(parse_run_as("61001,61002"), slots=2)
    a, b = pool.acquire(), pool.acquire()
    assert {a.uid, b.uid} == {61001, 61002}


def test_the_sweep_never_targets_root_or_ourselves() -> None:
    for uid in (0, os.geteuid()):
        with pytest.raises(ValueError, match="refusing"):
            kill_processes_of(uid)


def test_the_worker_process_is_not_dumpable() -> None:
    code = (
        "import ctypes; from minitemporal.worker.environment import protect_worker_process; "
        "libc = ctypes.CDLL(None); print(libc.prctl(3, 0, 0, 0, 0)); protect_worker_process(); "
        "print(libc.prctl(3, 0, 0, 0, 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0"]
