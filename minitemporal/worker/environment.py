"""What a command sees: a clean environment and a fresh private working directory.

Only an allowlist of the worker's variables passes through; never its settings, URLs or
secrets (every MINITEMPORAL_* variable of the worker is dropped).
"""

from __future__ import annotations

import os
import shutil
import tempfile
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


def make_workdir(task: ClaimedTask, parent: str | None) -> str:
    """A fresh directory only this worker's user can enter (mode 0700)."""
    return tempfile.mkdtemp(prefix=f"minitemporal-{task.ref.node}-{task.ref.attempt}-", dir=parent)


def remove_workdir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
