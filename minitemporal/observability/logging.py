"""Logs: JSON lines in containers, readable text on a terminal. Configured by the CLI at start.

Task lines carry `job_id`, `node_id`, `attempt` and `worker` (pass them with `extra=`); the
formatters print whatever `extra` fields a record has. Secrets never reach a record: URLs are
logged through `redact_url`, tokens not at all.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}
FIELDS_FIRST = ("job_id", "node_id", "attempt", "worker")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    ordered = {k: extras.pop(k) for k in FIELDS_FIRST if k in extras}
    ordered.update(extras)
    return ordered


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that are chatty at INFO: keep their warnings only.
    for noisy in ("uvicorn.access", "uvicorn.error", "psycopg.pool", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redact_url(url: str | None) -> str:
    """The URL without its password, for logs and messages."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def task_fields(job_id: str, node_id: str, attempt: int, worker: str) -> dict[str, Any]:
    return {"job_id": job_id, "node_id": node_id, "attempt": attempt, "worker": worker}
