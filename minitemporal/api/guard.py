"""Bounds on a request's headers for uvicorn: a client must finish them within a time limit
and a size limit, or its connection is closed.

The api parses HTTP with httptools (uvicorn's C parser: 80 against 147 us of the api's CPU per
keep-alive request with the pure-Python h11, in a probe). uvicorn bounds the idle time
between requests (`timeout_keep_alive`) but, with httptools, neither the time a client takes
to send its headers (a client that trickles a header byte every few seconds, slowloris, would
hold its connection forever) nor their size (httptools gathers a header however long it is).
Every connection is its own asyncio protocol, so one slow client never delays another; the
deadline frees what it holds, and `limit_concurrency` bounds how many it can hold meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 16 * 1024  # the request line and headers; h11's default bound
LINGER_SECONDS = 1.0  # after a 431, how long the client may go on sending


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose connections are cut when a request's headers are not complete
    within `header_timeout` seconds of their first byte (or of the connection's opening), and
    answered 431 when they pass `max_header_bytes`."""

    header_timeout: float = 10.0
    max_header_bytes: int = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # the next bytes belong to a request's line or headers
        self._header_bytes = 0
        self._header_size = 0
        self._refused = False

    @classmethod
    def with_limits(
        cls, timeout: float, max_bytes: int = MAX_HEADER_BYTES
    ) -> type[GuardedHttpProtocol]:
        return type(
            cls.__name__, (cls,), {"header_timeout": timeout, "max_header_bytes": max_bytes}
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered 431: what else comes is read and dropped until the close
        if self._in_headers:
            self._header_bytes += len(data)  # counted before parsing: httptools keeps them
            self._arm()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)
        if (
            self._in_headers
            and self._header_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._too_large()

    # httptools' callbacks. The bytes counted above bound what a request whose headers never
    # end can make us hold; these count the headers themselves, which may arrive complete in
    # one read of up to 256 KiB.
    def on_message_begin(self) -> None:
        self._header_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._disarm()  # headers complete: the app's own deadlines take over
        if self._refused:
            return  # a request pipelined behind a refused one: never served
        if self._header_size > self.max_header_bytes:
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_headers = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if self._in_headers and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers are late")
            self.transport.close()

    def _too_large(self) -> None:
        """Answer 431, then close the way servers linger: our side first, reading what the
        client still sends for a moment. Closing with unread data would send a reset, which
        can reach the client before the answer."""
        self._disarm()
        self._refused = True
        self.logger.info("closing a connection whose request headers are too large")
        body = b"request headers too large"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
