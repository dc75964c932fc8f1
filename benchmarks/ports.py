"""Loopback ports for servers about to start, for the benchmark suite and the tests.

Not port 0's answer: that comes from the ephemeral range, where any outgoing connection of
the processes a run starts (pools to PostgreSQL and Redis, gRPC channels) may take it before
the server binds it (seen in CI: a scheduler exiting with "Address already in use"). Below
that range only listeners take ports, and each port is handed out once per process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()
_PORTS_BELOW_EPHEMERAL = 12_000  # how many ports under the ephemeral range to choose from


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, below the ephemeral range, not handed out before."""
    high = _ephemeral_low()
    low = max(1024, high - _PORTS_BELOW_EPHEMERAL)
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or lingering in TIME_WAIT
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}-{high - 1}")
