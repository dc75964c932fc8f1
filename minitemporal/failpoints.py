"""Failpoints: named places where a test can make a process die, as FoundationDB and TiKV do.

`MINITEMPORAL_FAILPOINTS=scheduler.after_submit_commit=exit` makes the scheduler exit at once
(as kill -9 would: no cleanup) right after committing a job and before pushing it to Redis,
the window the design says must lose nothing. Unset (always, in production), every check is
one dictionary lookup.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("minitemporal.failpoints")
KNOWN = frozenset({"scheduler.after_submit_commit", "scheduler.after_complete_commit"})


class Failpoints:
    def __init__(self, spec: str | None) -> None:
        self._actions: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in (spec or "").split(","))):
            name, _, action = item.partition("=")
            if name not in KNOWN or action != "exit":
                raise ValueError(f"unknown failpoint {item!r}; known: {sorted(KNOWN)} (=exit)")
            self._actions[name] = action
        if self._actions:
            log.warning("failpoints armed (testing only): %s", sorted(self._actions))

    def hit(self, name: str) -> None:
        if self._actions.get(name) == "exit":
            log.critical("failpoint %s: exiting now", name)
            os._exit(137)
