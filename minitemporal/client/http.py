"""The REST api over http.client: one short connection per request, a connect timeout apart
from the read timeout, and every failure turned into a `ClientError` that says what happened
in one line. The standard library only: the client adds no dependency."""

from __future__ import annotations

import codecs
import contextlib
import http.client
import json
import os
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from minitemporal import __version__
from minitemporal.client import EXIT_API_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, TOKEN_ENV
from minitemporal.client.sse import Event, SSEParser
from minitemporal.errors import MinitemporalError, from_problem

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 60.0  # the server sends a keepalive at least every 15 s
MAX_ANSWER_BYTES = 512 * 1024 * 1024  # a job of many nodes with 64 KiB output tails each


class ClientError(Exception):
    """Something the user should read as one line; `exit_code` says what kind."""

    exit_code = EXIT_API_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageProblem(ClientError):
    """A bad option, file or token, found before anything was sent."""

    exit_code = EXIT_USAGE


class ApiUnreachable(ClientError):
    """No HTTP answer: refused, unresolvable, timed out, dropped, not speaking HTTP/1.1."""

    exit_code = EXIT_UNREACHABLE


class ApiError(ClientError):
    """The api answered with an error status; `error` is the problem document, typed."""

    def __init__(
        self, status: int, error: MinitemporalError, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status}: {error.detail}")
        self.status = status
        self.error = error
        self.retry_after = retry_after


def load_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token: from --token-file, else $MINITEMPORAL_API_TOKEN (never a flag's
    value, which any user could read in `ps`)."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                value = f.read(16 * 1024).strip()
        except OSError as exc:
            raise UsageProblem(f"cannot read the token file {token_file}: {_why(exc)}") from None
        except UnicodeDecodeError:
            raise UsageProblem(f"the token file {token_file} is not UTF-8 text") from None
        where = f"the token file {token_file}"
        if not value:
            raise UsageProblem(f"{where} is empty")
    else:
        value = environ.get(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
        if not value:
            return None
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        raise UsageProblem(f"{where} holds characters a token cannot have (one line, no spaces)")
    return value


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        stream_read_timeout: float = STREAM_READ_TIMEOUT,
    ) -> None:
        parts = urlsplit(base_url.strip())
        bad = f"bad API URL {base_url!r}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageProblem(f"{bad}: expected http://host:port or https://host:port")
        if parts.username or parts.password:
            raise UsageProblem(f"{bad}: give the token in {TOKEN_ENV}, not in the URL")
        if parts.query or parts.fragment:
            raise UsageProblem(f"{bad}: no query or fragment, please")
        try:
            self._port = parts.port
        except ValueError:
            raise UsageProblem(f"{bad}: the port is not a number from 0 to 65535") from None
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._prefix = parts.path.rstrip("/")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._stream_read_timeout = stream_read_timeout
        self._headers = {"User-Agent": f"minitemporal-cli/{__version__}"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.has_token = bool(token)

    # --- the api's operations
    def submit(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Answer:
        data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            if not (idempotency_key.isascii() and idempotency_key.isprintable()):
                raise UsageProblem("the idempotency key must be printable ASCII (it is a header)")
            headers["Idempotency-Key"] = idempotency_key
        return self._json("POST", "/v1/jobs", data, headers)

    def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Any:
        query = {k: v for k, v in (("status", status), ("limit", limit), ("cursor", cursor)) if v}
        path = "/v1/jobs" + (f"?{urlencode(query)}" if query else "")
        return self._json("GET", path).body

    def get_job(self, job_id: str, *, nodes: bool = True) -> Any:
        return self._json("GET", _job_path(job_id) + ("" if nodes else "?nodes=false")).body

    def cancel(self, job_id: str) -> Any:
        return self._json("POST", _job_path(job_id) + "/cancel", b"").body

    def events(self, job_id: str) -> EventStream:
        """Open GET /v1/jobs/{id}/events; an error status raises before any event."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        conn, resp = self._send(
            "GET", _job_path(job_id) + "/events", None, headers, self._stream_read_timeout
        )
        if resp.status != 200:
            try:
                raw = self._read(resp)
            finally:
                conn.close()
            raise self._error(resp, raw)
        kind = resp.getheader("Content-Type", "")
        if not kind.startswith("text/event-stream"):
            conn.close()
            raise ClientError(f"the API at {self.url} answered the event stream with {kind!r}")
        return EventStream(conn, resp, self.url)

    # --- plumbing
    def _json(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        conn, resp = self._send(
            method, path, body, {"Accept": "application/json", **(headers or {})}
        )
        try:
            raw = self._read(resp)
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            raise self._error(resp, raw)
        try:
            return Answer(resp.status, json.loads(raw))
        except ValueError:
            raise ClientError(
                f"the server at {self.url} answered {resp.status} with something that is not "
                "JSON: is it a minitemporal API?"
            ) from None

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        read_timeout: float | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn: http.client.HTTPConnection
        if self._tls:
            conn = http.client.HTTPSConnection(
                self._host,
                self._port,
                timeout=self._connect_timeout,
                context=ssl.create_default_context(),
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(read_timeout or self._read_timeout)
            conn.request(
                method, self._prefix + path, body=body, headers={**self._headers, **headers}
            )
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self.unreachable(exc) from None

    def _read(self, resp: http.client.HTTPResponse) -> bytes:
        try:
            raw = resp.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise self.unreachable(exc) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise ClientError(f"the answer of {self.url} is larger than {MAX_ANSWER_BYTES} bytes")
        return raw

    def _error(self, resp: http.client.HTTPResponse, raw: bytes) -> ApiError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        error = from_problem(body, resp.status)
        if body is None:  # not our problem document: a proxy's page, say
            error = type(error)(f"{resp.reason or 'error'} (not a minitemporal problem document)")
        return ApiError(resp.status, error, _retry_after(resp.headers))

    def unreachable(self, exc: BaseException) -> ApiUnreachable:
        return ApiUnreachable(f"cannot reach the API at {self.url}: {_why(exc)}")


def _job_path(job_id: str) -> str:
    return "/v1/jobs/" + quote(job_id, safe="")  # an id cannot climb out of its path


def _retry_after(headers: Message) -> float | None:
    value = headers.get("Retry-After")
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, min(float(value), 300.0))
    return None


def _why(exc: BaseException) -> str:
    """A short lower-case reason for a network or file error."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection dropped in the middle of the answer"
    if isinstance(exc, http.client.BadStatusLine | http.client.LineTooLong):
        return "the server does not speak HTTP/1.1 (is this the api's port?)"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class EventStream:
    """An open event stream; iterate for events. Ends quietly when the server closes it;
    raises `ApiUnreachable` when the connection drops or stays silent past the read timeout."""

    def __init__(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str
    ) -> None:
        self._conn = conn
        self._resp = resp
        self._url = url
        self.parser = SSEParser()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def __iter__(self) -> Iterator[Event]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                chunk = self._resp.read1(64 * 1024)
            except (OSError, http.client.HTTPException) as exc:
                raise ApiUnreachable(
                    f"the event stream from {self._url} broke: {_why(exc)}"
                ) from None
            yield from self.parser.feed(decoder.decode(chunk, final=not chunk))
            if not chunk:
                return
            if self.parser.buffered > MAX_ANSWER_BYTES:
                raise ClientError(
                    f"an event from {self._url} is larger than {MAX_ANSWER_BYTES} bytes"
                )
