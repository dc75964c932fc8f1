"""Following a job across dropped streams, with a scripted stand-in for the api (the real one
is in tests/e2e/test_cli.py): reconnection with backoff, giving up, the polling fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from minitemporal.client.follow import Notice, Update, follow
from minitemporal.client.http import ApiError, ApiUnreachable, ClientError
from minitemporal.client.sse import Event, SSEParser
from minitemporal.errors import NotFound, Unavailable

JOB = {"id": "j", "status": "running", "nodes": [{"id": "a", "state": "queued"}]}
END = {"id": "j", "status": "succeeded"}


def ev(kind: str, data: Any, event_id: str = "1") -> Event:
    return Event(kind, json.dumps(data), event_id)


class FakeStream:
    def __init__(self, events: list[Event | Exception], retry_ms: int | None = 2000) -> None:
        self._events = events
        self.parser = SSEParser()
        self.parser.retry_ms = retry_ms
        self.closed = False

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def __iter__(self) -> Iterator[Event]:
        for item in self._events:
            if isinstance(item, Exception):
                raise item
            yield item


class FakeApi:
    url = "http://api"

    def __init__(self, opens: list[FakeStream | Exception], job: Any = None) -> None:
        self.opens = opens
        self.job = job
        self.streams: list[FakeStream] = []
        self.gets = 0

    def events(self, job_id: str) -> FakeStream:
        item = self.opens.pop(0)
        if isinstance(item, Exception):
            raise item
        self.streams.append(item)
        return item

    def get_job(self, job_id: str, *, nodes: bool = True) -> Any:
        self.gets += 1
        item = self.job.pop(0) if isinstance(self.job, list) else self.job
        if isinstance(item, Exception):
            raise item
        return item


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(api: FakeApi, clock: Clock, **kw: Any) -> list[Update | Notice]:
    return list(
        follow(api, "j", sleep=clock.sleep, clock=lambda: clock.now, rand=lambda: 1.0, **kw)
    )


def kinds(items: list[Update | Notice]) -> list[str]:
    return [i.kind if isinstance(i, Update) else "notice" for i in items]


def test_one_stream_to_its_end() -> None:
    api = FakeApi([FakeStream([ev("snapshot", JOB), ev("node", {"id": "a"}), ev("end", END)])])
    items = run(api, Clock())
    assert kinds(items) == ["snapshot", "node", "end"]
    assert items[0] == Update("snapshot", JOB, "1")
    assert api.streams[0].closed


def test_unknown_events_are_skipped_and_bad_data_is_an_error() -> None:
    api = FakeApi([FakeStream([ev("snapshot", JOB), ev("future", {}), ev("end", END)])])
    assert kinds(run(api, Clock())) == ["snapshot", "end"]
    api = FakeApi([FakeStream([Event("snapshot", "{not json", "1")])])
    with pytest.raises(ClientError, match="not JSON"):
        run(api, Clock())


def test_a_dropped_stream_is_reopened_after_the_retry_time_doubling() -> None:
    dropped = ApiUnreachable("the event stream broke: connection reset")
    api = FakeApi(
        [
            FakeStream([ev("snapshot", JOB), dropped], retry_ms=1000),
            ApiUnreachable("cannot reach the API at http://api: connection refused"),
            FakeStream([ev("snapshot", JOB)]),  # ends before `end`: dropped too
            FakeStream([ev("snapshot", JOB), ev("end", END)]),
        ]
    )
    clock = Clock()
    items = run(api, clock)
    assert kinds(items) == [
        "snapshot",
        "notice",
        "notice",
        "snapshot",
        "notice",
        "snapshot",
        "end",
    ]
    assert clock.sleeps == [1.0, 2.0, 2.0], "retry 1 s, doubled; reset once events came"
    notices = [i.message for i in items if isinstance(i, Notice)]
    assert notices[0] == "the event stream broke: connection reset; reconnecting in 1.0s"
    assert "ended before the job did" in notices[2]


def test_busy_server_is_retried_after_its_retry_after() -> None:
    busy = ApiError(503, Unavailable("too many event streams"), retry_after=7)
    api = FakeApi([busy, FakeStream([ev("snapshot", JOB), ev("end", END)])])
    clock = Clock()
    assert kinds(run(api, clock)) == ["notice", "snapshot", "end"]
    assert clock.sleeps == [7]


def test_it_gives_up_when_the_api_stays_away() -> None:
    down = ApiUnreachable("cannot reach the API at http://api: connection refused")
    api = FakeApi([down] * 100)
    clock = Clock()
    with pytest.raises(ApiUnreachable, match="connection refused"):
        run(api, clock, give_up_after=60)
    assert 60 <= clock.now < 100
    assert max(clock.sleeps) == 30, "the delay is capped"


def test_other_errors_end_the_watch_at_once() -> None:
    api = FakeApi([ApiError(401, Unavailable("no"))])
    with pytest.raises(ApiError):
        run(api, Clock())


def test_an_unknown_job_is_a_404() -> None:
    missing = ApiError(404, NotFound("no job 'j'"))
    api = FakeApi([missing], job=missing)
    with pytest.raises(ApiError) as info:
        run(api, Clock())
    assert info.value is missing and api.gets == 1


def test_a_server_without_the_events_route_is_polled() -> None:
    no_route = ApiError(404, NotFound("no route"))
    finished = {**JOB, "status": "succeeded"}
    api = FakeApi(
        [no_route],
        job=[
            {"id": "j", "status": "running"},  # the check that the job exists
            JOB,
            JOB,  # unchanged: no event
            ApiUnreachable("cannot reach the API: connection refused"),
            finished,
        ],
    )
    clock = Clock()
    items = run(api, clock, poll_interval=1.0)
    assert kinds(items) == ["notice", "snapshot", "notice", "snapshot", "end"]
    assert "polling" in items[0].message  # type: ignore[union-attr]
    assert items[-1] == Update("end", {"id": "j", "status": "succeeded"})
    assert clock.sleeps == [1.0, 1.0, 2.0]


def test_without_retry_at_start_an_absent_api_is_an_error_at_once() -> None:
    down = ApiUnreachable("cannot reach the API at http://api: connection refused")
    clock = Clock()
    with pytest.raises(ApiUnreachable):
        run(FakeApi([down]), clock, retry_at_start=False)
    assert clock.sleeps == []
    dropped = FakeStream([ev("snapshot", JOB), ApiUnreachable("broke")])
    api = FakeApi([dropped, down, FakeStream([ev("snapshot", JOB), ev("end", END)])])
    assert kinds(run(api, clock, retry_at_start=False))[-2:] == ["snapshot", "end"], (
        "once connected, it reconnects"
    )
