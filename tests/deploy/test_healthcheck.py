"""deploy/healthcheck.py, the image's HEALTHCHECK, against small local HTTP servers."""

from __future__ import annotations

import http.server
import importlib.util
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.deploy.compose import HEALTHCHECK_SCRIPT
from tests.support.services import free_port


@pytest.fixture(scope="module")
def hc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ROLES", "API_HOST", "API_PORT", "METRICS_HOST", "METRICS_PORT"):
        monkeypatch.delenv(f"MINITEMPORAL_{name}", raising=False)
    return monkeypatch


class Server:
    """Answers /healthz with a fixed status."""

    def __init__(self, status: int) -> None:
        self.port = free_port()
        code = status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b'{"status": "ok"}' if code == 200 else b'{"status": "unavailable"}'
                self.send_response(code if self.path == "/healthz" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.close()


def test_defaults_try_the_api_port_then_the_metrics_port(
    hc: ModuleType, clean_env: pytest.MonkeyPatch
) -> None:
    assert hc.candidate_urls() == [
        "http://127.0.0.1:8080/healthz",
        "http://127.0.0.1:8081/healthz",
    ]


def test_wildcard_and_ipv6_hosts(hc: ModuleType, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MINITEMPORAL_API_HOST", "0.0.0.0")
    clean_env.setenv("MINITEMPORAL_METRICS_HOST", "::1")
    clean_env.setenv("MINITEMPORAL_METRICS_PORT", "9100")
    assert hc.candidate_urls() == ["http://127.0.0.1:8080/healthz", "http://[::1]:9100/healthz"]


@pytest.mark.parametrize(
    ("roles", "expected"),
    [("api", "8080"), ("all", "8080"), ("scheduler,worker", "8081"), ("worker", "8081")],
)
def test_roles_in_the_environment_pick_one_port(
    hc: ModuleType, clean_env: pytest.MonkeyPatch, roles: str, expected: str
) -> None:
    clean_env.setenv("MINITEMPORAL_ROLES", roles)
    assert hc.candidate_urls() == [f"http://127.0.0.1:{expected}/healthz"]


def test_healthy_when_the_metrics_port_answers_and_the_api_port_is_closed(
    hc: ModuleType, servers: list[Server]
) -> None:
    servers.append(Server(200))
    closed = f"http://127.0.0.1:{free_port()}/healthz"
    ok, why = hc.check([closed, f"http://127.0.0.1:{servers[0].port}/healthz"])
    assert ok, why


def test_a_503_is_unhealthy_even_if_another_port_would_answer(
    hc: ModuleType, servers: list[Server]
) -> None:
    servers.extend([Server(503), Server(200)])
    ok, why = hc.check([f"http://127.0.0.1:{s.port}/healthz" for s in servers])
    assert not ok and "503" in why and "unavailable" in why


def test_nothing_listening_is_unhealthy(hc: ModuleType) -> None:
    ok, why = hc.check([f"http://127.0.0.1:{free_port()}/healthz" for _ in range(2)])
    assert not ok and why.count("/healthz") == 2


def test_main_exit_code(
    hc: ModuleType,
    clean_env: pytest.MonkeyPatch,
    servers: list[Server],
    capsys: pytest.CaptureFixture[str],
) -> None:
    servers.append(Server(200))
    clean_env.setenv("MINITEMPORAL_ROLES", "worker")
    clean_env.setenv("MINITEMPORAL_METRICS_PORT", str(servers[0].port))
    assert hc.main() == 0
    assert capsys.readouterr().out.startswith("healthy")
    clean_env.setenv("MINITEMPORAL_ROLES", "api")
    clean_env.setenv("MINITEMPORAL_API_PORT", str(free_port()))
    assert hc.main() == 1
    assert capsys.readouterr().out.startswith("unhealthy")
