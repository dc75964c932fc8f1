"""What the client prints for people: tables, progress lines, summaries, error lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from minitemporal.client.follow import Update
from minitemporal.client.http import ApiError, ApiUnreachable
from minitemporal.client.render import Progress, clean, error_lines, job_detail, jobs_table, table
from minitemporal.errors import from_problem

T0 = "2025-03-01T10:00:00+00:00"
NOW = datetime(2025, 3, 1, 10, 0, 30, tzinfo=UTC)


def node(node_id: str, state: str, attempt: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "state": state,
        "attempt": attempt,
        "retries": 2,
        "exit_code": None,
        "worker_id": None,
        "explanation": "",
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "next_attempt_at": None,
        "cached": False,
        "attempts": [],
        "cached_result": None,
        **extra,
    }


def job(status: str = "running", nodes: list[dict[str, Any]] | None = None, **extra: Any) -> dict:
    body: dict[str, Any] = {
        "id": "j1",
        "name": "demo",
        "status": status,
        "cancel_requested": False,
        "created_at": T0,
        "finished_at": None,
        "nodes_total": 2,
        "node_counts": {"pending": 1, "running": 1},
        **extra,
    }
    if nodes is not None:
        body["nodes"] = nodes
    return body


def test_table_aligns_columns_without_trailing_blanks() -> None:
    text = table(["A", "LONGER", "C"], [["xxxx", "y", ""], ["z", "w", "last"]])
    assert text.splitlines() == ["A     LONGER  C", "xxxx  y", "z     w       last"]


def test_colour_only_when_asked_and_alignment_ignores_escape_codes() -> None:
    rows = [[("failed", "failed"), "x"], [("succeeded", "succeeded"), "y"]]
    plain = table(["STATE", "N"], rows)
    assert "\x1b[" not in plain
    coloured = table(["STATE", "N"], rows, color=True)
    assert "\x1b[31mfailed   \x1b[0m" in coloured
    assert coloured.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[0m", "") == plain


def test_server_strings_cannot_drive_the_terminal() -> None:
    assert clean("evil\x1b[2J\nname\x07") == "evil\\x1b[2J\\nname\\x07"
    page = {"jobs": [job(name="a\x1b]0;pwned\x07")], "next_cursor": None}
    assert "\x1b" not in jobs_table(page, color=False, tz=UTC, now=NOW)


def test_jobs_table() -> None:
    done = job("succeeded", id="j2", finished_at="2025-03-01T10:00:04.5+00:00")
    done["node_counts"] = {"succeeded": 2}
    text = jobs_table({"jobs": [job(), done]}, color=False, tz=UTC, now=NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "CREATED", "DURATION", "NODES"]
    assert lines[1].split() == [
        *("j1", "demo", "running", "2025-03-01", "10:00:00", "30.0s+"),
        *("1", "pending,", "1", "running"),
    ]
    assert "4.50s" in lines[2] and "2 succeeded" in lines[2]
    assert jobs_table({"jobs": []}, color=False) == "no jobs"


def test_job_detail_has_a_node_table() -> None:
    failed = node(
        "b",
        "failed",
        3,
        exit_code=7,
        started_at="2025-03-01T10:00:01+00:00",
        finished_at="2025-03-01T10:00:03+00:00",
        explanation="failed: attempt 3 of 3 exit code 7",
        attempts=[{"attempt": 3, "reason": "exit_code", "exit_code": 7}],
    )
    timed_out = node(
        "c", "failed", 1, attempts=[{"attempt": 1, "reason": "timeout", "exit_code": None}]
    )
    text = job_detail(
        job(
            "failed",
            [node("a", "pending", explanation="waiting for x"), failed, timed_out],
            finished_at="2025-03-01T10:00:03+00:00",
        ),
        color=False,
        tz=UTC,
        now=NOW,
    )
    head = [line.split(None, 1) for line in text.split("\n\n")[0].splitlines()]
    assert ["status", "failed"] in head
    assert ["finished", "2025-03-01 10:00:03 (took 3.00s)"] in head
    rows = text.split("\n\n")[1].splitlines()
    assert rows[0].split() == ["NODE", "STATE", "ATTEMPT", "EXIT", "DURATION", "EXPLANATION"]
    assert rows[1].split() == ["a", "pending", "-", "-", "-", "waiting", "for", "x"]
    assert rows[2].split()[:5] == ["b", "failed", "3/3", "7", "2.00s"]
    assert rows[3].split()[:4] == ["c", "failed", "1/3", "timeout"]


def snapshot(*nodes: dict[str, Any]) -> Update:
    return Update("snapshot", job(nodes=list(nodes)))


def test_progress_prints_a_line_per_state_change_with_time_attempt_and_outcome() -> None:
    p = Progress(color=False, tz=UTC, now=lambda: NOW)
    first = p.apply(snapshot(node("extract", "queued", 1), node("load", "pending")))
    assert len(first) == 2 and first[0].startswith("10:00:30  extract  queued")
    running = node("extract", "running", 1, worker_id="w1", started_at="2025-03-01T10:00:05+00:00")
    (line,) = p.apply(Update("node", {**running, "job_id": "j1"}))
    assert line.split() == ["10:00:05", "extract", "running", "attempt", "1/3", "on", "w1"]
    assert p.apply(Update("node", {**running, "explanation": "other"})) == [], "no state change"
    waiting = node(
        "extract",
        "retry_wait",
        1,
        exit_code=2,
        next_attempt_at="2025-03-01T10:00:09+00:00",
        attempts=[{"attempt": 1, "reason": "exit_code", "finished_at": "2025-03-01T10:00:06Z"}],
    )
    (line,) = p.apply(Update("node", waiting))
    assert line.split()[:5] == ["10:00:06", "extract", "retry_wait", "attempt", "1/3"]
    assert line.endswith("exit 2, next attempt at 10:00:09")
    (line,) = p.apply(Update("node", node("extract", "queued", 2)))
    assert "attempt 2/3" in line, "a new attempt is a change"


def test_a_later_snapshot_prints_only_what_changed() -> None:
    p = Progress(color=False, tz=UTC, now=lambda: NOW)
    p.apply(snapshot(node("a", "running", 1), node("b", "pending")))
    lines = p.apply(snapshot(node("a", "succeeded", 1, exit_code=0), node("b", "pending")))
    assert len(lines) == 1
    assert lines[0].split() == ["10:00:30", "a", "succeeded", "attempt", "1/3", "exit", "0"]


def test_summary_at_the_end_names_failed_nodes_and_how_to_see_their_output() -> None:
    p = Progress(color=False, tz=UTC, now=lambda: NOW)
    p.apply(snapshot(node("a", "running", 1)))
    p.apply(Update("node", node("a", "failed", 3, exit_code=1)))
    end = job("failed", finished_at="2025-03-01T10:00:12+00:00", node_counts={"failed": 1})
    lines = p.apply(Update("end", end))
    assert lines[0] == "job j1 failed after 12.0s: 1 failed"
    assert "minitemporal jobs logs j1 a" in lines[1]
    assert p.status == "failed"


def test_cancel_request_is_shown_once() -> None:
    p = Progress(color=False, tz=UTC, now=lambda: NOW)
    p.apply(snapshot(node("a", "running", 1)))
    assert p.apply(Update("job", job(cancel_requested=True)))[0].endswith("cancel requested")
    assert p.apply(Update("job", job(cancel_requested=True))) == []


def api_error(status: int, body: object) -> ApiError:
    return ApiError(status, from_problem(body, status))


def test_error_lines() -> None:
    assert error_lines(ApiUnreachable("cannot reach the API at X: connection refused")) == [
        "cannot reach the API at X: connection refused"
    ]
    base = "https://minitemporal.dev/problems/"
    (line,) = error_lines(api_error(401, {"type": base + "unauthenticated", "detail": "no"}))
    assert "MINITEMPORAL_API_TOKEN" in line
    (line,) = error_lines(api_error(403, {"type": base + "forbidden", "detail": "needs submit"}))
    assert "lacks the scope" in line and "needs submit" in line
    invalid = {
        "type": base + "invalid-input",
        "detail": "the job is invalid (2 problem(s))",
        "errors": [
            {"pointer": "/job/nodes/1/id", "message": "duplicate"},
            {"pointer": "/job/nodes", "message": "cycle"},
            "junk",
        ],
    }
    assert error_lines(api_error(422, invalid)) == [
        "the job is invalid (2 problem(s)) (422):",
        "  /job/nodes/1/id: duplicate",
        "  /job/nodes: cycle",
    ]
    assert error_lines(api_error(404, {"type": base + "not-found", "detail": "no job 'x'"})) == [
        "no job 'x' (404)"
    ]
    (line,) = error_lines(api_error(502, None))
    assert line.startswith("the API failed (502)")
