"""What a command sees: a clean environment, a fresh private working directory and, when the
worker runs as root, an unprivileged user of its own.

Only an allowlist of the worker's variables passes through; never its settings, URLs or
secrets (every MINITEMPORAL_* variable of the worker is dropped). The worker also makes itself
non-dumpable, so that a command running as the worker's own user cannot read the worker's
environment or memory through /proc; only a separate run-as user keeps commands out of the
worker's files.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import grp
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from minitemporal.domain.model import ClaimedTask
from minitemporal.errors import ConfigurationError

log = logging.getLogger("minitemporal.worker")
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_PR_SET_DUMPABLE = 4


def command_env(
    task: ClaimedTask, workdir: str, worker_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    source = os.environ if worker_env is None else worker_env
    env = {k: source[k] for k in PASSED_THROUGH if k in source}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(task.env)  # validated: never MINITEMPORAL_*
    env.update(
        {
            "MINITEMPORAL_JOB_ID": task.job_id,
            "MINITEMPORAL_NODE_ID": task.node_id,
            "MINITEMPORAL_ATTEMPT": str(task.ref.attempt),
            "MINITEMPORAL_WORKDIR": workdir,
            "TMPDIR": workdir,
        }
    )
    return env


PREFIX = "minitemporal-attempt-"
_OWNER = re.compile(
    r"minitemporal-attempt-(?P<host>[A-Za-z0-9._]+)-(?P<pid>[0-9]+)-(?P<start>[0-9]+)-[^/]+"
)


def _host_tag(host: str | None) -> str:
    name = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() if host is None else host)
    return name or "host"


def _started(pid: int) -> int | None:
    """When the process started (clock ticks since boot, from /proc), None if it is gone;
    0 where there is no /proc to tell (then the pid alone has to do)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text.rpartition(")")[2].split()[19])
    except FileNotFoundError:
        if not Path("/proc/self/stat").exists():
            return 0 if _pid_exists(pid) else None
        return None
    except (OSError, ValueError, IndexError):
        return 0


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def owner_tag(host: str | None = None, pid: int | None = None) -> str:
    """`HOST-PID-START`: which process made a directory, so that a later worker on this host
    can tell whether its maker is gone. The start time tells a pid used again (a container
    restarted with the same pid, a reused one) from the process that made the directory."""
    pid = os.getpid() if pid is None else pid
    return f"{_host_tag(host)}-{pid}-{_started(pid) or 0}"


def sweep_orphans(parent: str | None, host: str | None = None) -> int:
    """Remove the working directories that workers of this host left when they died (a
    worker stopped by a signal it cannot handle leaves its ready directories and those of
    the attempts it was running, with whatever the commands wrote in them). Only a
    directory whose maker no longer runs on this host, and that is ours (or we are root);
    `rmtree` does not follow symlinks, nor a directory swapped for one meanwhile. The
    number removed."""
    base = parent or tempfile.gettempdir()
    mine = _host_tag(host)
    euid = os.geteuid()
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        match = _OWNER.fullmatch(entry.name)
        if match is None or match["host"] != mine:
            continue
        started = _started(int(match["pid"]))
        if started is not None and started in (0, int(match["start"])):
            continue  # its maker still runs (or, without /proc, its pid is taken)
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (st.st_uid != euid and euid != 0):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.lexists(entry.path)
    return removed


def _remove(path: str) -> None:
    """Remove a used working directory: most commands leave theirs empty, and `rmdir` is
    half the CPU of `rmtree` (which opens and lists it first). `rmdir` does not follow a
    symlink put in its place, and neither does the `rmtree` it falls back to."""
    try:
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


class WorkdirPool:
    """Fresh, empty working directories (mode 0700), made ahead of time off the event loop.

    Creating and removing a directory costs 0.1-2 ms on a busy disk; on the path from claim to
    spawn that is latency every task pays. One background thread keeps `size` directories
    ready and removes used ones; each directory serves exactly one attempt. Their names say
    which process made them (`minitemporal-attempt-HOST-PID-START-...`): a pool that starts removes
    those of dead workers of this host first (`sweep_orphans`).
    """

    def __init__(self, parent: str | None, *, size: int) -> None:
        self._parent = parent
        self._prefix = f"{PREFIX}{owner_tag()}-"
        self._size = max(1, size)
        self._ready: collections.deque[str] = collections.deque()
        self._used: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def _make(self) -> str:
        return tempfile.mkdtemp(prefix=self._prefix, dir=self._parent)

    def start(self) -> None:
        removed = sweep_orphans(self._parent)
        if removed:
            log.info("removed %d working directories of dead workers", removed)
        self._thread = threading.Thread(target=self._keep, name="workdirs", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._closed:
            while self._used:
                _remove(self._used.popleft())
            while len(self._ready) < self._size and not self._closed:
                self._ready.append(self._make())
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def take(self, owner: RunAs | None = None) -> str:
        """A fresh directory; with `owner`, given to that user (who alone can then enter it)."""
        if len(self._ready) <= self._size // 2:
            # Refills happen as used directories come back (`discard`); only a run on the
            # pool wakes the thread here, on the way to a spawn it would compete with.
            self._wake.set()
        try:
            path = self._ready.popleft()
        except IndexError:
            path = self._make()
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
        return path

    def discard(self, path: str) -> None:
        self._used.append(path)
        if len(self._used) >= self._size:
            # One wake per `size` directories (a refill in `take` or the thread's timeout
            # removes fewer): each wake costs the event loop a hand-over of the GIL.
            self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for queue in (self._ready, self._used):
            while queue:
                shutil.rmtree(queue.popleft(), ignore_errors=True)


def protect_worker_process() -> None:
    """PR_SET_DUMPABLE=0: processes of our own user can no longer read /proc/<worker>/environ
    or attach to us. Children are dumpable again after their exec; best effort off Linux."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class RunAs:
    """An unprivileged identity for commands."""

    name: str
    uid: int
    gid: int

    def env(self, env: dict[str, str], workdir: str) -> dict[str, str]:
        """The command's environment as this user: its name, and a home it can write."""
        return {**env, "USER": self.name, "LOGNAME": self.name, "HOME": workdir}


def parse_run_as(spec: str) -> list[RunAs]:
    """`name`, `uid` or `uid:gid` (a group name works too), comma separated; never root."""
    users = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        user, _, group = item.partition(":")
        try:
            if user.isdigit():
                uid = int(user)
                try:
                    entry = pwd.getpwuid(uid)
                    name, gid = entry.pw_name, entry.pw_gid
                except KeyError:
                    name, gid = user, uid
            else:
                entry = pwd.getpwnam(user)
                name, uid, gid = entry.pw_name, entry.pw_uid, entry.pw_gid
            if group:
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigurationError(
                f"MINITEMPORAL_RUN_AS_USER: no such user or group in {item!r}"
            ) from None
        if uid == 0 or gid == 0:
            raise ConfigurationError("MINITEMPORAL_RUN_AS_USER must not be root (uid or gid 0)")
        users.append(RunAs(name, uid, gid))
    if not users:
        raise ConfigurationError("MINITEMPORAL_RUN_AS_USER names no user")
    if len({u.uid for u in users}) != len(users):
        raise ConfigurationError("MINITEMPORAL_RUN_AS_USER lists a user twice")
    return users


class UserPool:
    """Who runs the next command: one user shared by all commands, or (with at least as many
    users as slots) a user of its own per running command, so that concurrent attempts cannot
    read each other's files or processes, and whatever one leaves behind is killed before its
    user runs another."""

    def __init__(self, users: list[RunAs], slots: int) -> None:
        if os.geteuid() != 0 and any(u.uid != os.geteuid() for u in users):
            raise ConfigurationError(
                "MINITEMPORAL_RUN_AS_USER needs a worker running as root (it switches users)"
            )
        if 1 < len(users) < slots:
            raise ConfigurationError(
                f"MINITEMPORAL_RUN_AS_USER lists {len(users)} users for {slots} slots: "
                "give one user (shared) or at least one per slot"
            )
        self.exclusive = len(users) > 1
        self._free = list(users)

    def acquire(self) -> RunAs:
        if not self.exclusive:
            return self._free[0]
        return self._free.pop(0)  # never empty: at most `slots` commands run at once

    def release(self, user: RunAs) -> None:
        if self.exclusive:
            kill_processes_of(user.uid)
            self._free.append(user)


def kill_processes_of(uid: int) -> int:
    """SIGKILL every process of `uid` (what a finished attempt left running, even outside its
    process group). Looks pids up in /proc: never kill(-1), and never root or ourselves."""
    if uid in (0, os.geteuid()):
        raise ValueError(f"refusing to sweep the processes of uid {uid}")
    killed = 0
    for _ in range(3):  # a process may fork while we sweep
        found = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            if uid not in _uids(entry):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)
                found += 1
        killed += found
        if not found:
            break
    if killed:
        log.info("killed %d leftover process(es) of uid %d", killed, uid)
    return killed


def _uids(pid: str) -> set[int]:
    """Real, effective, saved and filesystem uid of a process (from status: a process that
    made itself non-dumpable shows root as the owner of its /proc directory)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return {int(v) for v in line.split()[1:]}
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return set()
