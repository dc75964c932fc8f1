"""How watch messages become server-sent events: names, documents, one line of JSON each."""

from __future__ import annotations

import json

from minitemporal.api import serialize
from minitemporal.api.events import encode, render
from minitemporal.domain.changes import JobEvent, change_event, summary
from minitemporal.domain.model import JobStatus, NodeState
from tests.support.views import T0, job, node


def test_render_snapshot_nodes_job_and_end() -> None:
    running = job(node("a", NodeState.RUNNING), node("b"))
    [(name, data)] = render(JobEvent(running, snapshot=True))
    assert name == "snapshot" and data == serialize.job(running)

    done = job(
        node("a", NodeState.SUCCEEDED),
        node("b", NodeState.SUCCEEDED),
        status=JobStatus.SUCCEEDED,
        finished_at=T0,
    )
    event = change_event(running, done)
    assert event is not None
    items = render(event)
    assert [name for name, _ in items] == ["node", "node", "job", "end"]
    assert items[0][1] == {**serialize.node(done.nodes[0]), "job_id": done.id}
    assert items[2][1] == items[3][1] == serialize.job(summary(done), with_nodes=False)
    assert "nodes" not in items[2][1]


def test_a_finished_snapshot_is_followed_by_end() -> None:
    done = job(node("a", NodeState.FAILED), status=JobStatus.FAILED, finished_at=T0)
    assert [name for name, _ in render(JobEvent(done, snapshot=True))] == ["snapshot", "end"]


def test_event_data_is_one_compact_ascii_line() -> None:
    data = {"tail": "line one\nline two\r\n\u2028 caf\u00e9 \U0001f600", "n": [1, 2]}
    raw = encode(data)
    assert b"\n" not in raw and b"\r" not in raw and b", " not in raw
    assert raw.isascii() and json.loads(raw) == data
