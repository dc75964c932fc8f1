"""API documents -> text for people: aligned plain tables, progress lines, summaries, error
lines. Pure (the clock and the time zone are parameters), so every format is unit-tested.

Strings that come from the server (names, explanations, worker ids) are shown with control
characters escaped: a job name must not be able to drive the reader's terminal.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from minitemporal.client.follow import Update
from minitemporal.client.http import ApiError, ClientError
from minitemporal.errors import (
    Conflict,
    InvalidInput,
    MalformedRequest,
    PermissionDenied,
    Unauthenticated,
)

STATES = (
    "pending",
    "queued",
    "running",
    "retry_wait",
    "succeeded",
    "failed",
    "upstream_failed",
    "cancelled",
)
_COLORS = {
    "succeeded": "32",  # green
    "failed": "31",  # red
    "upstream_failed": "31",
    "cancelled": "33",  # yellow
    "retry_wait": "33",
    "running": "36",  # cyan
}
STATE_WIDTH = max(len(s) for s in STATES)

Cell = str | tuple[str, str | None]  # text, or (text, state whose colour it takes)


def clean(value: object) -> str:
    """One line of printable text: control characters become visible escapes."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def paint(text: str, state: str | None, color: bool) -> str:
    code = _COLORS.get(state or "")
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, color: bool = False) -> str:
    """Columns padded to their widest cell; the last one is not padded (no trailing blanks)."""
    cells = [[(h, None) for h in headers]] + [
        [c if isinstance(c, tuple) else (c, None) for c in row] for row in rows
    ]
    widths = [max(len(row[i][0]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = []
        for i, (text, state) in enumerate(row):
            padded = text if i == len(row) - 1 else text.ljust(widths[i])
            parts.append(paint(padded, state, color) if state else padded)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local_time(value: object, tz: tzinfo | None, *, date: bool = True) -> str:
    parsed = parse_time(value)
    if parsed is None:
        return "-"
    return parsed.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def between(start: object, end: object, now: datetime) -> tuple[float | None, bool]:
    """Seconds from start to end (or to now, if it has not ended), and whether it is ongoing."""
    begun = parse_time(start)
    if begun is None:
        return None, False
    finished = parse_time(end)
    return ((finished or now) - begun).total_seconds(), finished is None


def counts(job: dict[str, Any]) -> str:
    raw = job.get("node_counts") or {}
    if not isinstance(raw, dict):
        return ""
    order = [s for s in STATES if raw.get(s)] + sorted(
        s for s in raw if s not in STATES and raw.get(s)
    )
    return ", ".join(f"{raw[s]} {clean(s)}" for s in order)


def attempt_of(node: dict[str, Any]) -> str:
    attempt = node.get("attempt") or 0
    retries = node.get("retries")
    if not attempt:
        return "-"
    return f"{attempt}/{retries + 1}" if isinstance(retries, int) else str(attempt)


def _last_attempt(node: dict[str, Any]) -> dict[str, Any]:
    attempts = node.get("attempts") or []
    last = attempts[-1] if attempts else node.get("cached_result")
    return last if isinstance(last, dict) else {}


def outcome(node: dict[str, Any], *, short: bool = False) -> str:
    """The exit code, or why there is none (timeout, lost, ...), of the latest attempt."""
    code = node.get("exit_code")
    reason = _last_attempt(node).get("reason")
    exit_code = str(code) if short else f"exit {code}"
    if reason in (None, "succeeded", "exit_code") and code is not None:
        return exit_code
    return clean(reason) if reason else ("-" if code is None else exit_code)


# --- jobs list / jobs get
def jobs_table(
    page: dict[str, Any], *, color: bool, tz: tzinfo | None = None, now: datetime | None = None
) -> str:
    now = now or datetime.now(UTC)
    rows: list[list[Cell]] = []
    for job in page.get("jobs") or []:
        took, ongoing = between(job.get("created_at"), job.get("finished_at"), now)
        status = clean(job.get("status"))
        rows.append(
            [
                clean(job.get("id")),
                clean(job.get("name")),
                (status, status),
                local_time(job.get("created_at"), tz),
                duration(took) + ("+" if ongoing and took is not None else ""),
                counts(job),
            ]
        )
    if not rows:
        return "no jobs"
    return table(["ID", "NAME", "STATUS", "CREATED", "DURATION", "NODES"], rows, color=color)


def job_detail(
    job: dict[str, Any], *, color: bool, tz: tzinfo | None = None, now: datetime | None = None
) -> str:
    now = now or datetime.now(UTC)
    status = clean(job.get("status"))
    took, ongoing = between(job.get("created_at"), job.get("finished_at"), now)
    head = [
        ("id", clean(job.get("id"))),
        ("name", clean(job.get("name"))),
        ("status", paint(status, status, color)),
        ("created", local_time(job.get("created_at"), tz)),
    ]
    if ongoing:
        head.append(("running for", duration(took)))
    else:
        head.append(
            ("finished", f"{local_time(job.get('finished_at'), tz)} (took {duration(took)})")
        )
    head.append(("nodes", f"{job.get('nodes_total', '?')}: {counts(job)}"))
    if job.get("cancel_requested"):
        head.append(("cancel", "requested"))
    width = max(len(k) for k, _ in head)
    lines = [f"{k.ljust(width)}  {v}" for k, v in head]
    rows: list[list[Cell]] = []
    for node in job.get("nodes") or []:
        state = clean(node.get("state"))
        finished = node.get("state") in ("succeeded", "failed", "retry_wait", "cancelled")
        took, ongoing = between(node.get("started_at"), node.get("finished_at"), now)
        rows.append(
            [
                clean(node.get("id")),
                (state, state),
                attempt_of(node),
                outcome(node, short=True) if finished and node.get("attempt") else "-",
                duration(took) + ("+" if ongoing and took is not None else ""),
                clean(node.get("explanation")),
            ]
        )
    if rows:
        lines += [
            "",
            table(
                ["NODE", "STATE", "ATTEMPT", "EXIT", "DURATION", "EXPLANATION"], rows, color=color
            ),
        ]
    return "\n".join(lines)


# --- live progress (jobs watch, submit --wait)
class Progress:
    """Holds the job as the events describe it; each update gives the lines to print: one per
    node whose state or attempt changed, and a summary at the end. A snapshot replaces the
    whole picture and prints only what changed since the last one (after a reconnection)."""

    def __init__(
        self,
        *,
        color: bool,
        tz: tzinfo | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.color = color
        self.tz = tz
        self.now = now
        self.job: dict[str, Any] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.width = 4

    @property
    def status(self) -> str | None:
        status = self.job.get("status")
        return status if isinstance(status, str) else None

    def apply(self, update: Update) -> list[str]:
        data = update.data
        if update.kind == "snapshot":
            nodes = [n for n in data.get("nodes") or [] if isinstance(n, dict)]
            ids = [clean(n.get("id")) for n in nodes]
            self.width = min(max([4, *(len(i) for i in ids)]), 32)
            before, self.nodes = self.nodes, {str(n.get("id")): n for n in nodes}
            self.job = {k: v for k, v in data.items() if k != "nodes"}
            return [self.line(n) for n in nodes if _changed(before.get(str(n.get("id"))), n)]
        if update.kind == "node":
            node = {k: v for k, v in data.items() if k != "job_id"}
            key = str(node.get("id"))
            before = self.nodes.get(key)
            self.nodes[key] = node
            return [self.line(node)] if _changed(before, node) else []
        if update.kind == "job":
            was = self.job.get("cancel_requested")
            self.job = dict(data)
            if data.get("cancel_requested") and not was:
                return [f"{self._clock(None)}  job: cancel requested"]
            return []
        self.job = dict(data)
        return self.summary()

    def line(self, node: dict[str, Any]) -> str:
        state = clean(node.get("state"))
        attempt = node.get("attempt") or 0
        parts = [
            self._clock(node),
            clean(node.get("id")).ljust(self.width),
            paint(state.ljust(STATE_WIDTH), state, self.color),
            f"attempt {attempt_of(node)}".ljust(13) if attempt else " " * 13,
        ]
        detail = self._detail(node)
        return "  ".join([*parts, detail]).rstrip()

    def _detail(self, node: dict[str, Any]) -> str:
        state = node.get("state")
        if state == "running":
            return f"on {clean(node.get('worker_id'))}" if node.get("worker_id") else ""
        if state == "succeeded":
            return outcome(node) + (" (cached result)" if node.get("cached") else "")
        if state == "failed":
            return outcome(node)
        if state == "retry_wait":
            when = local_time(node.get("next_attempt_at"), self.tz, date=False)
            return f"{outcome(node)}, next attempt at {when}"
        if state in ("pending", "upstream_failed", "cancelled"):
            return clean(node.get("explanation"))
        return ""

    def _clock(self, node: dict[str, Any] | None) -> str:
        """When the change happened, by the clock of the component that owns it."""
        field = {
            "queued": "enqueued_at",
            "running": "started_at",
            "succeeded": "finished_at",
            "failed": "finished_at",
            "retry_wait": "finished_at",
            "cancelled": "finished_at",
        }.get(str((node or {}).get("state")))
        for source in (node or {}, _last_attempt(node or {})):
            if field and parse_time(source.get(field)) is not None:
                return local_time(source.get(field), self.tz, date=False)
        return self.now().astimezone(self.tz).strftime("%H:%M:%S")

    def summary(self) -> list[str]:
        job = self.job
        status = clean(job.get("status"))
        took, _ = between(job.get("created_at"), job.get("finished_at"), self.now())
        verb = "in" if status == "succeeded" else "after"
        lines = [
            f"job {clean(job.get('id'))} {paint(status, status, self.color)} "
            f"{verb} {duration(took)}: {counts(job)}"
        ]
        for node in self.nodes.values():
            if node.get("state") == "failed":
                command = shlex.join(
                    ["minitemporal", "jobs", "logs", str(job.get("id")), str(node.get("id"))]
                )
                lines.append(
                    f"  {clean(node.get('id'))} failed ({outcome(node)}); "
                    f"its output: {clean(command)} [--stderr]"
                )
        return lines


def _changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    if before is None:
        return True
    return (before.get("state"), before.get("attempt")) != (
        after.get("state"),
        after.get("attempt"),
    )


# --- errors
def error_lines(exc: ClientError) -> list[str]:
    """What to print (each line prefixed by the caller) for a failed client call."""
    if not isinstance(exc, ApiError):
        return [exc.message]
    error, status = exc.error, exc.status
    if isinstance(error, Unauthenticated):
        return [
            f"the API refused the request ({status}): {error.detail}; "
            "set MINITEMPORAL_API_TOKEN (or --token-file) to a token it accepts"
        ]
    if isinstance(error, PermissionDenied):
        return [f"the token lacks the scope this needs ({status}): {error.detail}"]
    if isinstance(error, InvalidInput | MalformedRequest) and error.problems:
        return [f"{error.detail} ({status}):"] + [
            f"  {clean(p.pointer) or '/'}: {clean(p.message)}" for p in error.problems
        ]
    if isinstance(error, Conflict):
        return [f"{clean(error.detail)} ({status})"]
    if status >= 500:
        return [f"the API failed ({status}): {clean(error.detail)}"]
    return [f"{clean(error.detail)} ({status})"]
