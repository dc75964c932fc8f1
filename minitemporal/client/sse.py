"""A parser for server-sent events (the WHATWG HTML "event stream" format), fed text in
arbitrary chunks: lines end with CRLF, LF or CR, a CR may end one chunk and its LF start the
next. Pure: the HTTP side hands it decoded text, and it hands back complete events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    event: str  # "message" when the stream gave no `event:` field
    data: str
    id: str  # the last event id in effect when this event was dispatched ("" for none)


class SSEParser:
    """Incremental; `feed` returns the events completed by the chunk. An event cut off by the
    end of the stream (no blank line after it) is never dispatched, as the spec requires."""

    def __init__(self) -> None:
        self.retry_ms: int | None = None  # the last valid `retry:` value
        self.last_event_id = ""
        self.comments = 0  # `:` lines seen (keepalives)
        self._pending = ""  # text after the last line ending
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self._id_buffer = ""

    @property
    def buffered(self) -> int:
        """Characters held for an unfinished line or event: the caller bounds it."""
        return len(self._pending) + self._data_size

    def feed(self, text: str) -> list[Event]:
        if not self._started and (text or self._pending):
            self._started = True
            text = text.removeprefix("\ufeff")  # one BOM at the start of the stream
        if text:
            if self._skip_lf and text.startswith("\n"):
                text = text[1:]
            self._skip_lf = False
        buffer = self._pending + text
        events: list[Event] = []
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, nxt = cr, cr + 1
                if nxt < length and buffer[nxt] == "\n":
                    nxt += 1
                elif nxt == length:
                    self._skip_lf = True  # CRLF may be split across chunks
            else:
                end, nxt = lf, lf + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = nxt
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
        elif field == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None  # any other field is ignored

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id_buffer
        data, event = self._data, self._event
        self._data, self._event, self._data_size = [], "", 0
        if not data:
            return None
        return Event(event or "message", "\n".join(data), self.last_event_id)
