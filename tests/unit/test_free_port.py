"""The port picker of the tests and the benchmarks: ports below the kernel's ephemeral range
(which outgoing connections draw from), never the same one twice, and free when handed out."""

from __future__ import annotations

import socket

import pytest

from benchmarks import ports
from benchmarks.ports import _ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < _ephemeral_low() for p in ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    busy_port, free = free_port(), free_port()
    ports._HANDED_OUT.difference_update({busy_port, free})  # offered again, unless busy
    candidates = iter([busy_port, free])
    monkeypatch.setattr(ports.random, "randrange", lambda low, high: next(candidates))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        assert free_port() == free
