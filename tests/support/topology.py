"""Helpers for tests that start several processes and break things: fast settings, ledgers,
split topologies, pausing processes. Their fixtures live in tests/conftest.py."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.api import Api
from tests.support.procs import Cluster, Proc

# Small leases and quick sweeps so that every scenario resolves in seconds.
FAST = {
    "MINITEMPORAL_LEASE_SECONDS": "2",
    "MINITEMPORAL_HEARTBEAT_SECONDS": "0.4",
    "MINITEMPORAL_SWEEP_SECONDS": "0.1",
    "MINITEMPORAL_RECONCILE_SECONDS": "1",
    "MINITEMPORAL_RETRY_BASE_SECONDS": "0.2",
    "MINITEMPORAL_RETRY_MAX_SECONDS": "1",
    "MINITEMPORAL_KILL_GRACE_SECONDS": "0.5",
    "MINITEMPORAL_DRAIN_SECONDS": "10",
}


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Ledger:
    """A file every command appends `job node attempt` to when it starts."""

    path: Path

    def cmd(self, then: str = "true") -> str:
        return (
            f'echo "$MINITEMPORAL_JOB_ID $MINITEMPORAL_NODE_ID $MINITEMPORAL_ATTEMPT" '
            f">> {self.path}; {then}"
        )

    def entries(self) -> list[tuple[str, str, int]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            job, node, attempt = line.split()
            out.append((job, node, int(attempt)))
        return out

    def runs(self) -> Counter[tuple[str, str, int]]:
        return Counter(self.entries())


def children_of(pid: int) -> list[int]:
    """Direct children (the commands a worker spawned live in their own sessions)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def pause(proc: Proc, *, with_children: bool = True) -> list[int]:
    """SIGSTOP a process (and the commands it runs): a frozen VM, a long GC pause."""
    pids = [proc.pid, *(children_of(proc.pid) if with_children else [])]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@dataclass
class Topology:
    api: Api
    api_proc: Proc
    schedulers: list[Proc]
    workers: list[Proc]
    grpc_ports: list[int]
    cluster: Cluster

    def add_worker(self, name: str, scheduler: int = 0, env: dict[str, str] | None = None) -> Proc:
        proc = self.cluster.add(
            name, "worker", scheduler_port=self.grpc_ports[scheduler], env=env
        ).start()
        proc.wait_healthy()
        self.workers.append(proc)
        return proc

    def restart(self, proc: Proc) -> Proc:
        """Start a stopped or killed process again with the same settings."""
        proc.start()
        proc.wait_healthy(timeout=60)
        return proc


def start_split(
    cluster: Cluster,
    *,
    schedulers: int = 1,
    workers: int = 1,
    worker_env: dict[str, str] | None = None,
    scheduler_env: dict[str, str] | None = None,
) -> Topology:
    """api, N schedulers (all active) and M workers as separate processes."""
    from tests.support.services import free_port

    ports = [free_port() for _ in range(schedulers)]
    scheds = [
        cluster.add(f"scheduler{i + 1}", "scheduler", grpc_port=port, env=scheduler_env).start()
        for i, port in enumerate(ports)
    ]
    api_proc = cluster.add("api", "api", scheduler_port=ports[0]).start()
    procs = [
        cluster.add(
            f"worker{i + 1}", "worker", scheduler_port=ports[i % schedulers], env=worker_env
        ).start()
        for i in range(workers)
    ]
    for p in [*scheds, api_proc, *procs]:
        p.wait_healthy(timeout=60)
    return Topology(Api(api_proc.http_url), api_proc, scheds, procs, ports, cluster)
