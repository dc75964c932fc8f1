"""What a command sees: a clean environment and a fresh private working directory.

Only an allowlist of the worker's variables passes through; never its settings, URLs or
secrets (every MINITEMPORAL_* variable of the worker is dropped).
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping

from minitemporal.domain.model import ClaimedTask

PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


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


class WorkdirPool:
    """Fresh, empty working directories (mode 0700), made ahead of time off the event loop.

    Creating and removing a directory costs 0.1-2 ms on a busy disk; on the path from claim to
    spawn that is latency every task pays. One background thread keeps `size` directories
    ready and removes used ones; each directory serves exactly one attempt.
    """

    def __init__(self, parent: str | None, *, size: int) -> None:
        self._parent = parent
        self._size = max(1, size)
        self._ready: collections.deque[str] = collections.deque()
        self._used: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def _make(self) -> str:
        return tempfile.mkdtemp(prefix=PREFIX, dir=self._parent)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._keep, name="workdirs", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._closed:
            while self._used:
                shutil.rmtree(self._used.popleft(), ignore_errors=True)
            while len(self._ready) < self._size and not self._closed:
                self._ready.append(self._make())
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def take(self) -> str:
        self._wake.set()
        try:
            return self._ready.popleft()
        except IndexError:
            return self._make()

    def discard(self, path: str) -> None:
        self._used.append(path)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for queue in (self._ready, self._used):
            while queue:
                shutil.rmtree(queue.popleft(), ignore_errors=True)
