"""An api told to stop answers the requests it has already begun, with a scheduler that still
answers them: its own (one process) or another process's."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import start_topology, topology_cluster
from tests.support.api import Api, node
from tests.support.procs import Proc


def read_until(sock: socket.socket, marker: bytes | None, deadline: float) -> bytes:
    """What the api sent until `marker` (None: until it closed the connection)."""
    data = b""
    while marker is None or marker not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def wait_for_log(proc: Proc, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log(tail=10**6):
        assert time.monotonic() < deadline, f"{proc.name} never logged {text!r}"
        time.sleep(0.02)


@pytest.mark.parametrize("topology", ["split", "embedded"])
def test_sigterm_answers_a_submission_already_begun(
    request: pytest.FixtureRequest, tmp_path: Path, topology: str
) -> None:
    with topology_cluster(request, topology, tmp_path) as cluster:
        try:
            base = start_topology(cluster, topology)
            target = next(p for p in cluster.procs if p.name in ("api", topology))
            body = json.dumps({"job": {"name": "late", "nodes": [node("a", "true")]}}).encode()
            url = urlsplit(base)
            assert url.hostname is not None and url.port is not None
            deadline = time.monotonic() + 20
            with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
                # `Expect: 100-continue`: the api says when its handler waits for the body,
                # so the request has surely begun when the signal comes.
                sock.sendall(
                    b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                    b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                assert b" 100 " in read_until(sock, b"\r\n\r\n", deadline)
                target.signal(signal.SIGTERM)
                wait_for_log(target, "stopping gracefully")
                sock.sendall(body)
                answer = read_until(sock, None, deadline)  # a stopping api closes after it
            status = answer.split(b"\r\n", 1)[0]
            assert status == b"HTTP/1.1 201 Created", answer
            job_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"]
            assert target.popen is not None and target.popen.wait(timeout=30) == 0
            assert "Traceback" not in target.log(tail=10**6)
            if topology == "split":  # the job was stored: another api reads it
                target.start()
                target.wait_healthy()
                api = Api(target.http_url)
                try:
                    assert api.wait(job_id, timeout=30)["status"] == "succeeded"
                finally:
                    api.close()
        finally:
            cluster.stop_all()
