"""A plain server-sent events reader for tests: GET a job's event stream with httpx and parse
it line by line, keeping the raw lines, so tests can check the wire format itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Comment:
    text: str


@dataclass
class EventStream:
    """One open GET /v1/jobs/{id}/events; `items()` yields events and comments until the
    server closes the stream (a read stalled `timeout` seconds fails the test)."""

    response: httpx.Response
    client: httpx.Client
    raw: list[str] = field(default_factory=list)  # every line read so far, as sent
    _items: Iterator[Event | Comment] | None = None

    @classmethod
    def open(
        cls, base_url: str, job_id: str, *, token: str | None = None, timeout: float = 30.0
    ) -> EventStream:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        request = client.build_request("GET", f"/v1/jobs/{job_id}/events")
        return cls(client.send(request, stream=True), client)

    @property
    def status(self) -> int:
        return self.response.status_code

    def read(self) -> httpx.Response:
        """The whole response, for one that is not a stream (a problem document)."""
        self.response.read()
        return self.response

    def body(self) -> dict[str, Any]:
        """The (problem) document of a response that is not a stream."""
        return dict(self.read().json())

    def items(self) -> Iterator[Event | Comment]:
        """The stream's items, read on demand; every call continues where the last stopped."""
        if self._items is None:
            self._items = self._parse()
        return self._items

    def _parse(self) -> Iterator[Event | Comment]:
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in self.response.iter_lines():
            self.raw.append(line)
            if line == "":
                if data:
                    assert len(data) == 1, f"one data line per event, got {data}"
                    assert {"id", "event"} <= set(fields), f"event without id or name: {fields}"
                    yield Event(fields["id"], fields["event"], json.loads(data[0]))
                fields, data = {}, []
            elif line.startswith(":"):
                yield Comment(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value

    def events(self) -> list[Event]:
        """Every event (still unread) until the server closes the stream."""
        return [item for item in self.items() if isinstance(item, Event)]

    def close(self) -> None:
        self.response.close()
        self.client.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
