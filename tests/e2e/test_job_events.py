"""GET /v1/jobs/{id}/events against real processes, in each topology: the wire format, a DAG
followed from snapshot to end, 404s, a finished job, keepalives, the stream cap, a scheduler
restarted mid-stream, and SIGTERM of an api with open streams."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import TOPOLOGIES, System, start_topology, topology_cluster
from tests.support.api import Api, node
from tests.support.procs import Cluster, Proc
from tests.support.services import free_port
from tests.support.sse import Comment, Event, EventStream
from tests.support.topology import wait_for

MAX_STREAMS = 3
ENV = {
    "MINITEMPORAL_API_EVENT_KEEPALIVE_SECONDS": "0.5",
    "MINITEMPORAL_API_MAX_EVENT_STREAMS": str(MAX_STREAMS),
}
ORDER = ["pending", "queued", "running", "succeeded"]


@pytest.fixture(scope="module", params=TOPOLOGIES)
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    topology = request.param
    tmp = tmp_path_factory.mktemp(f"events-{topology}")
    with topology_cluster(request, topology, tmp) as cluster:
        cluster.extra_env.update(ENV)
        try:
            api = Api(start_topology(cluster, topology))
            yield System(api, cluster, topology, tmp)
            api.close()
        finally:
            cluster.stop_all()
            for p in cluster.procs:
                assert all(code == 0 for code in p.exit_codes), (p.name, p.exit_codes, p.log())


def url(system: System) -> str:
    return str(system.api.http.base_url)


def gauge(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith(f"minitemporal_{name} "))
    return float(line.split()[1])


def replay(events: list[Event]) -> dict[str, Any]:
    """What a client holds after applying the events as the contract says."""
    held: dict[str, Any] = {}
    for e in events:
        if e.name == "snapshot":
            held = e.data
        elif e.name == "node":
            node = {k: v for k, v in e.data.items() if k != "job_id"}
            held["nodes"] = [node if n["id"] == node["id"] else n for n in held["nodes"]]
        elif e.name in ("job", "end"):
            held = {**e.data, "nodes": held["nodes"]}
    return held


def test_a_dag_from_snapshot_to_end(system: System) -> None:
    job_id = system.api.submit(
        {
            "name": "watched",
            "nodes": [node("a", "sleep 1; echo a"), node("b", "sleep 1; echo b", ["a"])],
        }
    )
    with EventStream.open(url(system), job_id) as stream:
        assert stream.status == 200
        assert stream.response.headers["content-type"] == "text/event-stream"
        assert stream.response.headers["cache-control"] == "no-store"
        assert stream.response.headers["x-accel-buffering"] == "no"
        events = stream.events()  # to the end: the server closes the stream
        assert stream.raw[:2] == ["retry: 2000", ""], "the stream starts with retry: 2000"

    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert events[0].name == "snapshot" and events[-1].name == "end"
    assert [e.name for e in events].count("snapshot") == 1, "no reconnect happened"
    final = system.api.get(job_id)
    snapshot = events[0].data
    assert snapshot["id"] == job_id and set(snapshot) == set(final)
    assert [n["id"] for n in snapshot["nodes"]] == ["a", "b"]

    node_events = [e for e in events if e.name == "node"]
    assert node_events and all(e.data["job_id"] == job_id for e in node_events)
    assert all(set(e.data) == set(final["nodes"][0]) | {"job_id"} for e in node_events)
    for node_id in ("a", "b"):
        first = next(n["state"] for n in snapshot["nodes"] if n["id"] == node_id)
        states = [first] + [e.data["state"] for e in node_events if e.data["id"] == node_id]
        assert states == sorted(states, key=ORDER.index), (node_id, states)
        assert {"running", "succeeded"} <= set(states) and states[-1] == "succeeded"
    b_running = next(
        i
        for i, e in enumerate(events)
        if e.name == "node" and e.data["state"] == "running" and e.data["id"] == "b"
    )
    a_done = next(
        i
        for i, e in enumerate(events)
        if e.name == "node" and e.data["state"] == "succeeded" and e.data["id"] == "a"
    )
    assert a_done < b_running

    jobs = [e for e in events if e.name == "job"]
    assert jobs and jobs[-1].data["status"] == "succeeded" and "nodes" not in jobs[-1].data
    assert events.index(jobs[-1]) == len(events) - 2, "job, then end, last"
    summary = system.api.http.get(f"/v1/jobs/{job_id}", params={"nodes": "false"}).json()
    assert events[-1].data == summary and summary["status"] == "succeeded"
    assert replay(events) == final, "snapshot plus changes is the job"


@pytest.mark.parametrize("job_id", ["3f8e4b8a-1d2c-4e5f-8a9b-0c1d2e3f4a5b", "not-a-job"])
def test_no_such_job_is_a_404_problem(system: System, job_id: str) -> None:
    with EventStream.open(url(system), job_id) as stream:
        assert stream.status == 404
        assert stream.response.headers["content-type"].startswith("application/problem+json")
        assert stream.body()["type"].endswith("/not-found")


def test_no_scheduler_is_a_503_problem(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, None, None)
    api = cluster.add("api", "api", scheduler_port=free_port()).start()
    try:
        wait_for(lambda: listening(api.http_url), 30, "the api to listen")
        with EventStream.open(api.http_url, "3f8e4b8a-1d2c-4e5f-8a9b-0c1d2e3f4a5b") as stream:
            assert stream.status == 503 and stream.response.headers["retry-after"]
            assert stream.body()["type"].endswith("/unavailable")
    finally:
        cluster.stop_all()
    assert api.exit_codes == [0]


def listening(base_url: str) -> bool:
    try:
        httpx.get(base_url + "/healthz", timeout=2)
    except httpx.TransportError:
        return False
    return True


def test_a_finished_job_gets_its_snapshot_then_end(system: System) -> None:
    job_id = system.api.submit({"name": "done", "nodes": [node("a", "false")]})
    final = system.api.wait(job_id)
    assert final["status"] == "failed"
    with EventStream.open(url(system), job_id) as stream:
        events = stream.events()
    assert [(e.id, e.name) for e in events] == [("1", "snapshot"), ("2", "end")]
    assert events[0].data == final
    assert events[1].data == {k: v for k, v in final.items() if k != "nodes"}


def test_a_quiet_stream_carries_keepalives(system: System) -> None:
    job_id = system.api.submit({"name": "quiet", "nodes": [node("a", "sleep 2")]})
    with EventStream.open(url(system), job_id) as stream:
        items = list(stream.items())
    keepalives = [i for i in items if isinstance(i, Comment)]
    assert len(keepalives) >= 2 and {k.text for k in keepalives} == {"keepalive"}
    assert ": keepalive" in stream.raw
    assert isinstance(items[-1], Event) and items[-1].name == "end"


def test_streams_are_capped_and_their_slots_come_back(system: System) -> None:
    job_id = system.api.submit({"name": "capped", "nodes": [node("a", "sleep 30")]})
    streams = [EventStream.open(url(system), job_id) for _ in range(MAX_STREAMS)]
    try:
        assert [s.status for s in streams] == [200] * MAX_STREAMS
        for s in streams:  # each got its snapshot: the slot is held
            assert next(s.items()).name == "snapshot"  # type: ignore[union-attr]
        assert gauge(url(system), "http_event_streams") == MAX_STREAMS
        with EventStream.open(url(system), job_id) as refused:
            assert refused.status == 503 and refused.response.headers["retry-after"]
            assert refused.body()["type"].endswith("/unavailable")
    finally:
        for s in streams:
            s.close()
    # A client that went away is noticed at the next keepalive; its watch ends too.
    wait_for(lambda: gauge(url(system), "http_event_streams") == 0, 30, "streams released")
    split = system.topology == "split"
    scheduler = proc_named(system.cluster, "scheduler").http_url if split else url(system)
    wait_for(lambda: gauge(scheduler, "job_watches") == 0, 30, "watches released")
    with EventStream.open(url(system), job_id) as again:
        assert again.status == 200
    assert system.api.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    with EventStream.open(url(system), job_id) as stream:
        assert stream.events()[-1].data["status"] == "cancelled"


# Only where the scheduler has a process of its own: in one process the api stops with it.
@pytest.mark.parametrize("system", ["split"], indirect=True)
def test_a_scheduler_restart_mid_stream_sends_a_new_snapshot(system: System) -> None:
    job_id = system.api.submit(
        {"name": "restart", "nodes": [node("a", "sleep 2"), node("b", "true", ["a"])]}
    )
    scheduler = proc_named(system.cluster, "scheduler")
    with EventStream.open(url(system), job_id) as stream:
        items = stream.items()
        assert next(items).name == "snapshot"  # type: ignore[union-attr]
        assert scheduler.stop() == 0
        scheduler.start()
        scheduler.wait_healthy(timeout=60)
        events = [i for i in items if isinstance(i, Event)]
    names = [e.name for e in events]
    assert "snapshot" in names, "a fresh snapshot after the reconnect"
    assert names[-1] == "end" and events[-1].data["status"] == "succeeded"
    assert [e.id for e in events] == [str(i) for i in range(2, len(events) + 2)]
    assert replay(events[names.index("snapshot") :]) == system.api.get(job_id)


@pytest.mark.parametrize("topology", ["split", "embedded"])
def test_sigterm_with_open_streams_exits_0_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, topology: str
) -> None:
    with topology_cluster(request, topology, tmp_path) as cluster:
        cluster.extra_env.update(ENV)
        try:
            api = Api(start_topology(cluster, topology))
            # Waiting to retry, not running: an embedded worker would drain a running command.
            backoff = {"base_seconds": 600, "factor": 1, "max_seconds": 600}
            job_id = api.submit(
                {"name": "open", "nodes": [node("a", "false", retries=1, retry_backoff=backoff)]}
            )
            api.wait(job_id, lambda j: j["nodes"][0]["state"] == "retry_wait")
            target = proc_named(cluster, "api" if topology == "split" else topology)
            streams = [EventStream.open(str(api.http.base_url), job_id) for _ in range(2)]
            for s in streams:
                assert next(s.items()).name == "snapshot"  # type: ignore[union-attr]
            started = time.monotonic()
            target.signal(signal.SIGTERM)
            for s in streams:  # closed by the server, without an `end`
                assert [e.name for e in s.events()] == []
            assert target.popen is not None
            assert target.popen.wait(timeout=30) == 0
            assert time.monotonic() - started < 8, "uvicorn did not wait for the streams"
            assert "Traceback" not in target.log(tail=10**6)
            for s in streams:
                s.close()
            api.close()
        finally:
            cluster.stop_all()


def proc_named(cluster: Cluster, name: str) -> Proc:
    return next(p for p in cluster.procs if p.name == name)
