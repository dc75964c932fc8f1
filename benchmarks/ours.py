"""minitemporal as a benchmark target, driven over its REST API only.

Every timestamp comes from the system's own records (`GET /v1/jobs/{id}`): a node's
`enqueued_at` (the scheduler's commit), `started_at` (the worker, once the child is spawned) and
`finished_at`. Completion is awaited by polling `GET /v1/jobs?status=running` (cheap: no nodes)
with a deadline; the full job is fetched once, after it finished.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from benchmarks import cpu
from benchmarks.commits import CommitProbe
from benchmarks.load import ClosedLoop, closed_loop, open_loop
from benchmarks.stats import Span
from benchmarks.workloads import FanRun, LatencyRun, Mark, SpanRun, WorkloadError

TERMINAL = {"succeeded", "failed", "cancelled"}
PAGE = 500


def node(node_id: str, command: str, deps: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": node_id,
        "command": command,
        "retries": 0,
        "timeout_seconds": 60,
        "idempotency_key": None,
        "depends_on": list(deps),
    }


def chain_nodes(length: int, command: str) -> list[dict[str, Any]]:
    ids = [f"c{i:03d}" for i in range(length)]
    return [node(i, command, [ids[k - 1]] if k else []) for k, i in enumerate(ids)]


def fan_nodes(width: int, command: str) -> list[dict[str, Any]]:
    mids = [f"m{i:03d}" for i in range(width)]
    return [
        node("root", command),
        *(node(m, command, ["root"]) for m in mids),
        node("sink", command, mids),
    ]


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def node_span(n: dict[str, Any], submitted: float | None = None) -> Span:
    enq, start, fin = _ts(n.get("enqueued_at")), _ts(n.get("started_at")), _ts(n.get("finished_at"))
    if n.get("state") != "succeeded" or enq is None or start is None or fin is None:
        raise WorkloadError(
            f"node {n.get('id')} is {n.get('state')} (enqueued_at={n.get('enqueued_at')}, "
            f"started_at={n.get('started_at')}, finished_at={n.get('finished_at')})"
        )
    return Span(enq, start, fin, submitted)


class Ours:
    name = "minitemporal"

    def __init__(self, api_url: str, command: str = "true", poll_interval: float = 0.1) -> None:
        self.api_url = api_url.rstrip("/")
        self.command = command
        self.poll_interval = poll_interval
        self.http = Rest(self.api_url)
        self.meter: cpu.Meter | None = None  # set by the suite when it started the processes
        self.database_url: str | None = None  # the server to probe during (a), if known

    def close(self) -> None:
        self.http.close()

    # --- REST
    def submit(self, name: str, nodes: list[dict[str, Any]]) -> tuple[str, float]:
        """POST the job; returns its id and the client's clock just before the call."""
        t = time.time()
        status, body = self.http.request(
            "POST", "/v1/jobs", {"job": {"name": name, "nodes": nodes}}
        )
        if status != 201:
            raise WorkloadError(f"POST /v1/jobs answered {status}: {body!r:.300}")
        return str(body["id"]), t

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = self.http.request("GET", f"/v1/jobs/{job_id}")
        if status != 200:
            raise WorkloadError(f"GET /v1/jobs/{job_id} answered {status}: {body!r:.300}")
        return dict(body)

    def running_ids(self) -> set[str]:
        ids: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"status": "running", "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            status, body = self.http.request("GET", f"/v1/jobs?{urlencode(params)}")
            if status != 200:
                raise WorkloadError(f"GET /v1/jobs answered {status}: {body!r:.300}")
            ids.update(j["id"] for j in body["jobs"])
            cursor = body.get("next_cursor")
            if not cursor:
                return ids

    def wait(self, job_ids: Sequence[str], timeout: float) -> None:
        """Poll until none of `job_ids` is running, or raise at the deadline."""
        pending = set(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            pending &= self.running_ids()
            if not pending:
                return
            if time.monotonic() > deadline:
                raise WorkloadError(f"{len(pending)} job(s) still running after {timeout:.0f}s")
            time.sleep(self.poll_interval)

    def finished_job(self, job_id: str) -> dict[str, Any]:
        job = self.job(job_id)
        if job["status"] != "succeeded":
            counts = job.get("node_counts")
            raise WorkloadError(f"job {job_id} ended {job['status']} ({counts})")
        return job

    # --- workloads
    def warmup(self, slots: int) -> None:
        ids = [self.submit("warmup", [node(f"w{i}", self.command) for i in range(slots * 2)])[0]]
        ids.append(self.submit("warmup-chain", chain_nodes(3, self.command))[0])
        self.wait(ids, timeout=60)
        for job_id in ids:
            self.finished_job(job_id)

    def latency(self, rate: float, duration: float) -> LatencyRun:
        nodes = [node("only", self.command)]
        with contextlib.ExitStack() as stack:
            probe = None
            if self.database_url:
                probe = stack.enter_context(CommitProbe(self.database_url))
            paced = open_loop(rate, duration, lambda i: self.submit(f"latency-{i}", nodes))
            ids = [job_id for job_id, _ in paced.results]
            self.wait(ids, timeout=duration + 120)
        spans = [
            node_span(self.finished_job(job_id)["nodes"][0], submitted)
            for job_id, submitted in paced.results
        ]
        return LatencyRun(spans, paced.lateness, probe.summary() if probe else None)

    def _cpu(self) -> cpu.Snapshot | None:
        return self.meter.snapshot() if self.meter else None

    def _mark(self) -> Mark:
        return Mark(self._cpu(), len(self.running_ids()))

    def burst(self, jobs: int, per_job: int) -> SpanRun:
        before = self._cpu()
        since = time.time()
        ids = []
        for j in range(jobs):
            nodes = [node(f"n{i:05d}", self.command) for i in range(per_job)]
            ids.append(self.submit(f"burst-{j}", nodes)[0])
        submitted = time.time()
        self.wait(ids, timeout=120 + jobs * per_job / 10)
        used = cpu.usage(before, self._cpu(), jobs * per_job)
        spans = [node_span(n) for job_id in ids for n in self.finished_job(job_id)["nodes"]]
        return SpanRun(spans, since, submitted, used)

    def chain(self, length: int) -> list[Span]:
        job_id, _ = self.submit("chain", chain_nodes(length, self.command))
        self.wait([job_id], timeout=60 + length)
        by_id = {n["id"]: node_span(n) for n in self.finished_job(job_id)["nodes"]}
        return [by_id[f"c{i:03d}"] for i in range(length)]

    def fan(self, width: int) -> FanRun:
        job_id, _ = self.submit("fan", fan_nodes(width, self.command))
        self.wait([job_id], timeout=60 + width)
        by_id = {n["id"]: node_span(n) for n in self.finished_job(job_id)["nodes"]}
        return FanRun(by_id["root"], [by_id[f"m{i:03d}"] for i in range(width)], by_id["sink"])

    def submission(self, clients: int, duration: float) -> ClosedLoop:
        factory = functools.partial(_submit_client, self.api_url, self.command)
        result = closed_loop(factory, clients, duration, probe=self._mark)
        if result.errors and not result.accepted:
            raise WorkloadError("; ".join(result.errors))
        self.wait(result.ids, timeout=120 + len(result.ids) / 10)
        return result


class Rest:
    """The api over plain keep-alive `http.client` connections, one per thread.

    httpx took 0.83 ms of the client's CPU per POST against 0.32 ms for this, on the cores the
    system under test shares, and inside submit→start. (The CLI's `ApiClient` opens a
    connection per call.) A connection idle for longer than the api keeps it (5 s) is
    replaced before use; a request is never retried, so a POST is sent at most once.
    """

    IDLE_SECONDS = 3.0

    def __init__(self, api_url: str, timeout: float = 60) -> None:
        parts = urlsplit(api_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._timeout = timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - self._local.used <= self.IDLE_SECONDS:
            return conn
        if conn is not None:
            self._drop(conn)
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            self._all.remove(conn)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and the decoded JSON answer (the raw bytes if it is not JSON)."""
        conn = self._conn()
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, data, headers)
            r = conn.getresponse()
            raw = r.read()
        except Exception:
            self._drop(conn)
            raise
        self._local.used = time.monotonic()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _submit_client(api_url: str, command: str, index: int) -> Callable[[], str | None]:
    """One closed-loop client process: POST a one-node job, return its id (201) or raise."""
    rest = Rest(api_url)
    body = {"job": {"name": f"submit-{index}", "nodes": [node("only", command)]}}

    def call() -> str | None:
        status, answer = rest.request("POST", "/v1/jobs", body)
        if status != 201:
            raise RuntimeError(f"HTTP {status}: {answer!r:.200}")
        return str(answer["id"])

    return call
