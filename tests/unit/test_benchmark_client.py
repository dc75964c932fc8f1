"""The suite's REST client for minitemporal: keep-alive connections, one per thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from benchmarks.ours import Rest, _submit_client


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the api's uvicorn
    seen: list[tuple[int, str, Any]]
    status = 201

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.client_address[1], self.path, body))
        reply = json.dumps({"id": f"job-{len(self.seen)}"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"seen": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_posts_a_one_node_job_and_returns_its_id_over_one_connection(
    server: tuple[str, type[_Recorder]],
) -> None:
    url, handler = server
    call = _submit_client(url, "true", 3)
    assert [call(), call(), call()] == ["job-1", "job-2", "job-3"]
    ports = {port for port, _, _ in handler.seen}
    assert len(ports) == 1, "each call opened a connection of its own"
    _, path, body = handler.seen[0]
    assert path == "/v1/jobs"
    assert body["job"]["name"] == "submit-3"
    assert [n["command"] for n in body["job"]["nodes"]] == ["true"]


def test_a_refused_submission_raises(server: tuple[str, type[_Recorder]]) -> None:
    url, handler = server
    handler.status = 429
    call = _submit_client(url, "true", 0)
    with pytest.raises(RuntimeError, match="HTTP 429"):
        call()


def test_each_thread_has_its_connection_and_an_idle_one_is_replaced(
    server: tuple[str, type[_Recorder]],
) -> None:
    url, handler = server
    rest = Rest(url)
    try:
        assert rest.request("POST", "/v1/jobs", {"job": {}}) == (201, {"id": "job-1"})
        other = threading.Thread(target=rest.request, args=("POST", "/v1/jobs", {"job": {}}))
        other.start()
        other.join()
        rest.IDLE_SECONDS = 0.0  # every connection counts as idle now
        rest.request("POST", "/v1/jobs", {"job": {}})
    finally:
        rest.close()
    first, second, third = (port for port, _, _ in handler.seen)
    assert first != second, "two threads shared one connection"
    assert third not in (first, second), "an idle connection was used again"
