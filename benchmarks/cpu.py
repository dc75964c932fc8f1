"""Where the cores went during a workload: CPU time of each process of a system, from /proc.

A figure such as the submission rate is set by CPU when the machine is saturated, and then
the table alone cannot say why one system is slower; the seconds each process spent can.
A group is a process and its live descendants, plus the children it has reaped (the
commands a worker ran, a prefork pool's children); a server (PostgreSQL, Redis) is every
process of that name on the machine, shared by whatever used it meanwhile. Linux only:
elsewhere `Meter.snapshot` returns None and the figures are left out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    comm: str
    own: float  # seconds: user + system of the process itself
    reaped: float  # seconds: user + system of its children that it has waited for


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name is in brackets and may hold spaces or
    brackets itself, so the fields are counted from the last `)`."""
    head, _, rest = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    fields = rest.split()
    # fields[0] is field 3 (state): ppid is field 4; utime..cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcStat(
        pid=int(pid_text),
        ppid=int(fields[1]),
        comm=comm,
        own=(utime + stime) / _TICK,
        reaped=(cutime + cstime) / _TICK,
    )


def scan(root: Path = PROC) -> dict[int, ProcStat]:
    out: dict[int, ProcStat] = {}
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            out[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile, or is not ours to read
    return out


def tree_seconds(procs: Mapping[int, ProcStat], pid: int) -> float:
    """CPU seconds of `pid`, its live descendants and every child any of them reaped."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen or current not in procs:
            continue
        seen.add(current)
        total += procs[current].own + procs[current].reaped
        todo.extend(children.get(current, ()))
    return total


def named_seconds(procs: Mapping[int, ProcStat], comm: str) -> float:
    return sum(p.own + p.reaped for p in procs.values() if p.comm == comm)


def machine_jiffies(stat: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all cores from /proc/stat's first line."""
    values = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


@dataclass(frozen=True)
class Snapshot:
    seconds: dict[str, float]
    busy: int
    total: int
    at: float


class Meter:
    """Snapshots of the CPU seconds of named process groups and servers.

    `groups`: name -> pid of a process whose tree is the group (`api`, `worker`...);
    `servers`: name -> command name of a server's processes (`postgres`, `redis-server`).
    """

    def __init__(self, groups: Mapping[str, int], servers: Mapping[str, str]) -> None:
        self.groups = dict(groups)
        self.servers = dict(servers)

    def snapshot(self) -> Snapshot | None:
        try:
            procs = scan()
            busy, total = machine_jiffies((PROC / "stat").read_text())
        except OSError:
            return None
        seconds = {name: tree_seconds(procs, pid) for name, pid in self.groups.items()}
        seconds.update({name: named_seconds(procs, c) for name, c in self.servers.items()})
        return Snapshot(seconds, busy, total, time.monotonic())


def usage(
    before: Snapshot | None,
    after: Snapshot | None,
    units: int,
    clients: Sequence[float] = (),
) -> dict[str, Any] | None:
    """CPU between two snapshots, in all and per unit of work (a node, an accepted job).

    `clients`: CPU seconds that client processes measured themselves over the same span
    (they have exited before the second snapshot could see them). The machine's busy share
    is over all its cores, whoever used them."""
    if before is None or after is None or units <= 0:
        return None
    seconds = {k: max(0.0, after.seconds[k] - before.seconds.get(k, 0.0)) for k in after.seconds}
    if clients:
        seconds["clients"] = float(sum(clients))
    total = sum(seconds.values())
    elapsed = after.total - before.total
    return {
        "units": units,
        "wall_s": after.at - before.at,
        "seconds": seconds,
        "total_s": total,
        "ms_per_unit": {
            **{k: v * 1000 / units for k, v in seconds.items()},
            "total": total * 1000 / units,
        },
        "machine_busy_percent": 100.0 * (after.busy - before.busy) / elapsed if elapsed else None,
    }


def breakdown(cpu: Mapping[str, Any] | None, unit: str) -> str | None:
    """`3.41 ms per accepted job: api 0.57, scheduler 0.86, ... (machine 98% busy)`."""
    if not cpu:
        return None
    per = cpu["ms_per_unit"]
    parts = ", ".join(f"{k} {v:.2f}" for k, v in per.items() if k != "total")
    busy = cpu.get("machine_busy_percent")
    tail = f" (machine {busy:.0f}% busy)" if busy is not None else ""
    return f"{per['total']:.2f} ms per {unit}: {parts}{tail}"
