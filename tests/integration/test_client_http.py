"""The client's HTTP side without a minitemporal server: options, tokens, and the event
stream read from a real socket (a tiny stdlib server in a thread), chunked and cut off."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from minitemporal.client.http import (
    ApiClient,
    ApiError,
    ApiUnreachable,
    UsageProblem,
    load_token,
)
from minitemporal.client.sse import Event
from minitemporal.errors import InvalidInput, NotFound, Unauthenticated


def test_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert load_token(None, {}) is None
    assert load_token(None, {"MINITEMPORAL_API_TOKEN": " mt_abc \n"}) == "mt_abc"
    path = tmp_path / "token"
    path.write_text("mt_file\n")
    assert load_token(str(path), {"MINITEMPORAL_API_TOKEN": "mt_env"}) == "mt_file"
    with pytest.raises(UsageProblem, match="cannot read the token file"):
        load_token(str(tmp_path / "missing"), {})
    path.write_text("\n")
    with pytest.raises(UsageProblem, match="is empty"):
        load_token(str(path), {})
    with pytest.raises(UsageProblem, match="cannot have"):
        load_token(None, {"MINITEMPORAL_API_TOKEN": "mt_a\r\nX-Injected: 1"})


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://host", "expected http"),
        ("localhost:8080", "expected http"),
        ("http://user:pw@host", "not in the URL"),
        ("http://host:99999", "port"),
        ("http://host/?x=1", "no query"),
    ],
)
def test_bad_api_urls(url: str, words: str) -> None:
    with pytest.raises(UsageProblem, match=words):
        ApiClient(url)


Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                handle(self)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/prefix"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


def test_a_chunked_stream_split_anywhere_is_parsed(serve: Callable[[Handler], str]) -> None:
    seen: dict[str, str] = {}

    def handle(h: BaseHTTPRequestHandler) -> None:
        seen["path"] = h.path
        seen["auth"] = h.headers.get("Authorization", "")
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        body = (
            'retry: 2000\r\n\r\nid: 1\r\nevent: snapshot\r\ndata: {"é": 1}\r\n\r\n: keepalive\r\n'
        )
        body += "id: 2\r\nevent: end\r\ndata: {}\r\n\r\n"
        raw = body.encode()
        for i in range(0, len(raw), 3):  # cuts through CRLFs and the two bytes of é
            _chunk(h, raw[i : i + 3])
        _chunk(h, b"")

    client = ApiClient(serve(handle), "mt_secret")
    with client.events("../../metrics") as stream:
        events = list(stream)
    assert events == [Event("snapshot", '{"é": 1}', "1"), Event("end", "{}", "2")]
    assert stream.parser.retry_ms == 2000 and stream.parser.comments == 1
    assert seen["path"] == "/prefix/v1/jobs/..%2F..%2Fmetrics/events", "ids stay in their segment"
    assert seen["auth"] == "Bearer mt_secret"


def test_a_stream_cut_mid_chunk_raises_unreachable(serve: Callable[[Handler], str]) -> None:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        _chunk(h, b"event: snapshot\ndata: {}\n\n")
        h.wfile.write(b"40\r\nevent: no")  # a chunk promised 64 bytes; the connection ends
        h.wfile.flush()
        h.close_connection = True

    received: list[Event] = []
    with pytest.raises(ApiUnreachable, match="broke"), ApiClient(serve(handle)).events("j") as s:
        received.extend(s)
    assert received == [Event("snapshot", "{}", "")]


def test_a_silent_stream_times_out(serve: Callable[[Handler], str]) -> None:
    release = threading.Event()

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.flush()
        release.wait(10)

    client = ApiClient(serve(handle), stream_read_timeout=0.3)
    try:
        with pytest.raises(ApiUnreachable, match="timed out"), client.events("j") as stream:
            list(stream)
    finally:
        release.set()


def _problem(status: int, body: object, content_type: str = "application/problem+json") -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Retry-After", "3")
        h.end_headers()
        h.wfile.write(data)

    return handle


def test_problem_documents_become_typed_errors(serve: Callable[[Handler], str]) -> None:
    base = "https://minitemporal.dev/problems/"
    invalid = {
        "type": base + "invalid-input",
        "status": 422,
        "detail": "bad",
        "errors": [{"pointer": "/job/nodes", "message": "cycle"}],
    }
    with pytest.raises(ApiError) as info:
        ApiClient(serve(_problem(422, invalid))).submit({"job": {}})
    assert info.value.status == 422 and isinstance(info.value.error, InvalidInput)
    assert [(p.pointer, p.message) for p in info.value.error.problems] == [("/job/nodes", "cycle")]

    with pytest.raises(ApiError) as info:
        ApiClient(serve(_problem(401, {"type": base + "unauthenticated"}))).list_jobs()
    assert isinstance(info.value.error, Unauthenticated)

    with pytest.raises(ApiError) as info:  # an events route that answers 404 before streaming
        ApiClient(serve(_problem(404, {"type": base + "not-found", "detail": "no"}))).events("j")
    assert isinstance(info.value.error, NotFound) and info.value.retry_after == 3

    with pytest.raises(ApiError) as info:  # a proxy's page
        ApiClient(serve(_problem(502, b"<html>bad gateway</html>", "text/html"))).get_job("j")
    assert info.value.status == 502 and "not a minitemporal problem" in info.value.error.detail


def test_an_answer_that_is_not_json(serve: Callable[[Handler], str]) -> None:
    with pytest.raises(Exception, match="not JSON"):
        ApiClient(serve(_problem(200, b"<html>", "text/html"))).list_jobs()


def test_an_idempotency_key_cannot_inject_headers() -> None:
    with pytest.raises(UsageProblem, match="printable ASCII"):
        ApiClient("http://127.0.0.1:1").submit({"job": {}}, "k\r\nX-Evil: 1")
