"""Hostile input against a real api: oversized, deep, malformed and absurd bodies get a 4xx
listing every problem and store nothing; slow and idle clients are cut without holding up
anyone else."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import fresh_cluster
from tests.support.api import Api, node
from tests.support.services import free_port

LIMITS = {
    "MINITEMPORAL_MAX_BODY_BYTES": "4096",
    "MINITEMPORAL_MAX_JSON_DEPTH": "8",
    "MINITEMPORAL_MAX_NODES": "5",
    "MINITEMPORAL_MAX_ENV_VARS": "2",
    "MINITEMPORAL_MAX_NAME_LENGTH": "16",
    "MINITEMPORAL_MAX_RETRIES": "5",
    "MINITEMPORAL_HTTP_HEADER_TIMEOUT_SECONDS": "1.5",
    "MINITEMPORAL_HTTP_BODY_TIMEOUT_SECONDS": "1.5",
}


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin_url: str,
    pg_template: str,
    redis_server_url: str,
) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("limits")
    with fresh_cluster(tmp, pg_admin_url, pg_template, redis_server_url, LIMITS) as cluster:
        proc = cluster.add("all", "all", grpc_port=free_port()).start()
        proc.wait_healthy()
        client = Api(proc.http_url)
        yield client
        client.close()


def stored(api: Api) -> int:
    return len(api.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"])


def raw_post(api: Api, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return api.http.post("/v1/jobs", content=body, headers={"Content-Type": content_type})


def problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


def read_reply(s: socket.socket) -> str:
    """Everything the server sends until it closes or goes quiet."""
    data = b""
    s.settimeout(3)
    with contextlib.suppress(OSError):
        while chunk := s.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.endswith(b"}"):
                break
    return data.decode(errors="replace")


def _address(api: Api) -> tuple[str, int]:
    url = httpx.URL(str(api.http.base_url))
    return url.host, int(url.port or 80)


def test_oversized_bodies_are_refused_before_parsing(api: Api) -> None:
    before = stored(api)
    big = json.dumps({"job": {"name": "big", "nodes": [node("a", "x" * 5000)]}}).encode()
    problem(raw_post(api, big), 413)

    # Chunked, without Content-Length: counted as it arrives.
    with socket.create_connection(_address(api), timeout=10) as s:
        s.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(OSError):  # the server may answer and hang up mid-upload
            for _ in range(64):
                s.sendall(b"400\r\n" + b"[" * 1024 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        reply = read_reply(s)
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "payload-too-large" in reply
    assert stored(api) == before


def test_malformed_text_and_numbers_are_400(api: Api) -> None:
    before = stored(api)
    deep = b'{"job": {"name": "d", "nodes": ' + b"[" * 20 + b"]" * 20 + b"}}"
    very_deep = b"[" * 100_000 + b"]" * 100_000
    cases = {
        b'{"job": {"name": "\xff\xfe"}}': "not UTF-8",
        b'{"job": {"name": "x", "nodes": [{"id": "a", "command": "true", "retries": NaN}]}}': (
            "NaN"
        ),
        b'{"job": {"name": "x", "nodes": [{"id": "a", "command": "true", '
        b'"timeout_seconds": Infinity}]}}': "Infinity",
        deep: "deeper than 8",
        b"": "empty",
        b"{": "not valid JSON",
    }
    for body, fragment in cases.items():
        assert fragment in str(problem(raw_post(api, body), 400)["detail"]), body[:60]
    problem(raw_post(api, very_deep[:4000]), 400)
    assert stored(api) == before


def test_invalid_jobs_list_every_problem(api: Api) -> None:
    before = stored(api)
    job = {
        "name": "n" * 17,
        "nodes": [
            {"id": "a", "command": "echo \u0000", "retries": -1, "timeout_seconds": 1e400},
            {"id": "b\ud800", "command": "true", "retries": 10**6},
            {
                "id": "c",
                "command": "true",
                "timeout_seconds": -5,
                "env": {"A": "1", "B": "2", "C": "3"},
            },
            {"id": "d", "command": "true", "retries": 1.5, "env": {"MINITEMPORAL_X": "y"}},
            {"id": "e", "command": "true", "depends_on": ["zzz"], "extra": 1},
        ],
    }
    body = json.dumps({"job": job}, allow_nan=True).replace("Infinity", "1e400").encode()
    errors = problem(raw_post(api, body), 422)["errors"]
    pointers = {e["pointer"] for e in errors}  # type: ignore[attr-defined]
    assert {
        "/job/name",
        "/job/nodes/0/command",
        "/job/nodes/0/retries",
        "/job/nodes/0/timeout_seconds",
        "/job/nodes/1/id",
        "/job/nodes/1/retries",
        "/job/nodes/2/timeout_seconds",
        "/job/nodes/2/env",
        "/job/nodes/3/retries",
        "/job/nodes/3/env/MINITEMPORAL_X",
        "/job/nodes/4/depends_on/0",
        "/job/nodes/4/extra",
    } <= pointers, pointers
    too_many = {"name": "many", "nodes": [node(f"n{i}") for i in range(6)]}
    problem(api.http.post("/v1/jobs", json={"job": too_many}), 422)
    assert stored(api) == before


def test_bad_query_and_path_values_are_4xx(api: Api) -> None:
    assert api.http.get("/v1/jobs/%00").status_code == 404
    assert api.http.get("/v1/jobs/%ED%A0%80").status_code == 404
    assert api.http.post("/v1/jobs/x%00y/cancel").status_code == 404
    bad = [{"cursor": "\x00"}, {"cursor": "é"}, {"status": "\x00"}, {"limit": "1e9"}]
    bad += [{"limit": "0"}, {"limit": ""}, {"status": ""}]
    for params in bad:
        problem(api.http.get("/v1/jobs", params=params), 422)
    job_id = api.submit({"name": "q", "nodes": [node("a")]})
    for value in ("", "1", "yes", "TRUE"):
        problem(api.http.get(f"/v1/jobs/{job_id}", params={"nodes": value}), 422)
    assert "nodes" not in api.http.get(f"/v1/jobs/{job_id}", params={"nodes": "false"}).json()


def test_a_trickling_client_is_cut_and_holds_up_nobody(api: Api) -> None:
    host, port = _address(api)
    slow = socket.create_connection((host, port), timeout=10)
    idle = socket.create_connection((host, port), timeout=10)
    slow.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    closed_after = None
    served = 0
    while time.monotonic() - started < 10:
        try:
            slow.sendall(b"a")
        except OSError:
            closed_after = time.monotonic() - started
            break
        # Others are served at once meanwhile.
        t0 = time.monotonic()
        assert api.http.get("/healthz").status_code == 200
        assert time.monotonic() - t0 < 1.0
        served += 1
        slow.settimeout(0.2)
        try:
            if slow.recv(1) == b"":
                closed_after = time.monotonic() - started
                break
        except TimeoutError:
            pass
    assert closed_after is not None and closed_after < 5, "the slow client was cut"
    assert served >= 3
    idle.settimeout(5)
    assert idle.recv(1) == b"", "an idle connection is closed too"
    slow.close()
    idle.close()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_headers_get_431_and_the_connection_is_closed(api: Api) -> None:
    with socket.create_connection(_address(api), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(48):  # 48 KiB of headers, never complete: more after the answer too
            s.sendall(b"X-Big: " + b"a" * 1015 + b"\r\n")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    # Complete but too large, in one write (one read on the server), with a body and a
    # second request pipelined behind: one 431, nothing served.
    with socket.create_connection(_address(api), timeout=10) as s:
        big = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        big += b"X-Big: " + b"a" * 20_000 + b"\r\nContent-Length: 2\r\n\r\n{}"
        s.sendall(big + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 431 ") and answer.count(b"HTTP/1.1") == 1, answer[:200]
    # A body, however large, is not a header: small headers and 100 KB of body in one write.
    with socket.create_connection(_address(api), timeout=10) as s:
        body = b'{"job": {"name": "' + b"n" * 100_000 + b'", "nodes": []}}'
        head = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        s.sendall(head + body)
        answer = _read_all(s)
    assert answer.startswith((b"HTTP/1.1 413 ", b"HTTP/1.1 422 ")), answer[:80]
    # Headers within the bound are served, on a kept-alive connection too.
    with socket.create_connection(_address(api), timeout=10) as s:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12_000 + b"\r\n\r\n"
        s.sendall(request + request.replace(b"HTTP/1.1", b"HTTP/1.0"))
        answer = _read_all(s)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:200]


def test_a_stalled_body_gets_408(api: Api) -> None:
    before = stored(api)
    with socket.create_connection(_address(api), timeout=10) as s:
        s.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"job": '
        )
        started = time.monotonic()
        reply = read_reply(s)
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 5
    assert stored(api) == before
