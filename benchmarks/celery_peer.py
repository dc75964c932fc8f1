"""The Celery peer: one task that runs a shell command the way a minitemporal worker does.

Started by the suite as `celery -A benchmarks.celery_peer worker ...`; Celery's CLI needs the
app at module level, so it is built here from BENCH_CELERY_* variables that the suite sets (in
its own process and the worker's) before importing this module.

Configured for latency as Celery's documentation advises: prefetch multiplier 1, late acks,
prefork pool with as many processes as minitemporal has worker slots. Every key lives under a
private prefix (`global_keyprefix`) and the queue has a private name, so the suite never
touches another user's keys.

Timestamps (seconds since the epoch, this machine's clock):
- enqueued: the `mt_enq` header, set by the client just before `apply_async`; for tasks
  published by Celery itself (group members, chain links, chord parts) set by the
  `before_task_publish` signal, just before the message is sent;
- started: right after `subprocess.Popen` returned (the child was spawned);
- finished: right after the child exited and its output was read.
The task writes `[enqueued, started, finished, exit code]` into a Redis hash of the run.

Results are ignored (`ignore_result=True`, as Celery's performance guide advises for results
nobody reads), except for the parts of a chord, which Celery needs to count: the suite turns
them on per signature.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import before_task_publish

TASK_NAME = "mt_bench.run"
ENQUEUED_HEADER = "mt_enq"


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is not set: the benchmark suite sets it before starting Celery")
    return value


BROKER_URL = _env("BENCH_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = _env("BENCH_CELERY_KEY_PREFIX", "mt-bench-celery:")
QUEUE = _env("BENCH_CELERY_QUEUE", "mt-bench-celery")

app = Celery("mt_bench", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_transport_options={"global_keyprefix": KEY_PREFIX},
    result_backend_transport_options={"global_keyprefix": KEY_PREFIX},
    result_expires=3600,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)

_records: redis.Redis | None = None


def records() -> redis.Redis:
    """A Redis client of this process (created after the prefork fork, on first use)."""
    global _records
    if _records is None:
        _records = redis.Redis.from_url(BROKER_URL)
    return _records


def record_key(label: str) -> str:
    return f"{KEY_PREFIX}rec:{label}"


@before_task_publish.connect
def _stamp_enqueue(
    sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    if sender == TASK_NAME and headers is not None:
        headers.setdefault(ENQUEUED_HEADER, time.time())


@app.task(bind=True, name=TASK_NAME, ignore_result=True)
def run(self: Any, command: str, label: str, item: str) -> int:
    enqueued = getattr(self.request, ENQUEUED_HEADER, None)
    proc = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    started = time.time()
    proc.communicate()
    finished = time.time()
    records().hset(
        record_key(label), item, json.dumps([enqueued, started, finished, proc.returncode])
    )
    return int(proc.returncode)
