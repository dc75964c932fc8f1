"""Following a job until it ends, from its event stream (GET /v1/jobs/{id}/events).

A stream that drops before `end` is opened again after the server's `retry` time, doubling
up to 30 s, with jitter; its fresh `snapshot` replaces what the caller held. The watch gives
up after `give_up_after` seconds without an event. Only a server without the events route
(404 for it while GET of the job works) is polled instead, once a second, and the caller is
told so.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from minitemporal.client.http import ApiError, ApiUnreachable, ClientError, EventStream

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
KINDS = frozenset({"snapshot", "node", "job", "end"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
DEFAULT_RETRY = 2.0
MAX_DELAY = 30.0
GIVE_UP_AFTER = 300.0
POLL_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Update:
    """One event of the job: `snapshot`, `node`, `job` or `end`, as the contract defines."""

    kind: Literal["snapshot", "node", "job", "end"]
    data: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """News about the watching itself (a reconnection, the polling fallback), for stderr."""

    message: str


class JobSource(Protocol):
    url: str

    def events(self, job_id: str) -> EventStream: ...

    def get_job(self, job_id: str, *, nodes: bool = True) -> Any: ...


def summary(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "nodes"}


class _Backoff:
    def __init__(self, clock: Callable[[], float], rand: Callable[[], float], limit: float) -> None:
        self._clock, self._rand, self._limit = clock, rand, limit
        self.base = DEFAULT_RETRY
        self._failures = 0
        self._down_since: float | None = None

    def ok(self) -> None:
        self._failures = 0
        self._down_since = None

    def delay(self, error: ClientError, hint: float | None = None) -> float:
        """Seconds to wait before the next try, or raise `error` once the watch gives up."""
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since >= self._limit:
            raise error
        delay = min(MAX_DELAY, self.base * 2**self._failures)
        self._failures += 1
        delay *= 0.5 + self._rand() / 2
        return max(delay, hint or 0.0)


def follow(
    client: JobSource,
    job_id: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    give_up_after: float = GIVE_UP_AFTER,
    poll_interval: float = POLL_INTERVAL,
    retry_at_start: bool = True,
) -> Iterator[Update | Notice]:
    """Updates until (and including) `end`; notices in between when the stream breaks.
    Without `retry_at_start`, an api unreachable at the first try is an error at once."""
    backoff = _Backoff(clock, rand, give_up_after)
    connected = False
    while True:
        hint: float | None = None
        try:
            stream = client.events(job_id)
        except ApiError as exc:
            if exc.status == 404:
                client.get_job(job_id, nodes=False)  # a 404 here too: no such job; raises
                yield Notice(
                    f"the API at {client.url} has no event stream (an older server?): "
                    f"polling the job every {poll_interval:g}s instead"
                )
                yield from _poll(client, job_id, backoff, sleep, poll_interval)
                return
            if exc.status not in RETRYABLE_STATUS:
                raise
            error: ClientError = exc
            hint = exc.retry_after
        except ApiUnreachable as exc:
            if not (connected or retry_at_start):
                raise
            error = exc
        else:
            connected = True
            with stream:
                try:
                    for event in stream:
                        update = _update(event.event, event.data, event.id)
                        if update is None:
                            continue  # an event this client does not know: newer server
                        backoff.ok()
                        yield update
                        if update.kind == "end":
                            return
                    error = ApiUnreachable(
                        f"the event stream from {client.url} ended before the job did"
                    )
                except ApiUnreachable as exc:
                    error = exc
                if stream.parser.retry_ms is not None:
                    backoff.base = max(stream.parser.retry_ms / 1000, 0.1)
        wait = backoff.delay(error, hint)
        yield Notice(f"{error.message}; reconnecting in {wait:.1f}s")
        sleep(wait)


def _update(kind: str, data: str, event_id: str | None) -> Update | None:
    if kind not in KINDS:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        raise ClientError(f"a {kind!r} event carried data that is not JSON") from None
    if not isinstance(document, dict):
        raise ClientError(f"a {kind!r} event carried {type(document).__name__}, not an object")
    return Update(kind, document, event_id or None)  # type: ignore[arg-type]


def _poll(
    client: JobSource,
    job_id: str,
    backoff: _Backoff,
    sleep: Callable[[float], None],
    interval: float,
) -> Iterator[Update | Notice]:
    last: dict[str, Any] | None = None
    while True:
        try:
            job = client.get_job(job_id)
        except (ApiUnreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status not in RETRYABLE_STATUS:
                raise
            wait = backoff.delay(exc, getattr(exc, "retry_after", None))
            yield Notice(f"{exc.message}; trying again in {wait:.1f}s")
            sleep(wait)
            continue
        backoff.ok()
        if not isinstance(job, dict):
            raise ClientError("GET of the job answered something that is not an object")
        if job != last:
            yield Update("snapshot", job)
            last = job
        if job.get("status") in TERMINAL:
            yield Update("end", summary(job))
            return
        sleep(interval)
