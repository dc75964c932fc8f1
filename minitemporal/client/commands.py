"""What each client command does; cli.py parses the command line and calls these. Every
function returns the process's exit code and never lets a ClientError escape as a traceback."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from minitemporal.client import (
    EXIT_INTERRUPTED,
    EXIT_JOB_NOT_SUCCEEDED,
    EXIT_OK,
)
from minitemporal.client import jobfile as jobfiles
from minitemporal.client.follow import Notice, follow
from minitemporal.client.http import ApiClient, ClientError, load_token
from minitemporal.client.render import Progress, clean, error_lines, job_detail, jobs_table


@dataclass(frozen=True, slots=True)
class Options:
    """The options every client command takes."""

    api_url: str
    token_file: str | None
    as_json: bool


class Console:
    """stdout for results, stderr for notes and errors; colour only on a terminal, and only
    when NO_COLOR is not set."""

    def __init__(
        self,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color = self.out.isatty() and "NO_COLOR" not in environ

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def document(self, value: Any) -> None:
        self.print(json.dumps(value, indent=2, ensure_ascii=False))

    def line(self, value: Any) -> None:
        """One compact JSON object per line (NDJSON)."""
        self.print(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def note(self, text: str) -> None:
        self.err.write(f"minitemporal: {text}\n")
        self.err.flush()

    def error(self, exc: ClientError) -> int:
        for line in error_lines(exc):
            self.note(line)
        return exc.exit_code


def connect(opts: Options) -> ApiClient:
    return ApiClient(opts.api_url, load_token(opts.token_file))


def _job_id(document: Any) -> str:
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        raise ClientError("the API answered without a job id")
    return clean(document["id"])


def submit(
    console: Console,
    opts: Options,
    path: str,
    *,
    idempotency_key: str | None,
    wait: bool,
    stdin: IO[bytes] | None = None,
) -> int:
    try:
        job_file = jobfiles.load(path, stdin if stdin is not None else sys.stdin.buffer)
        client = connect(opts)
        answer = client.submit(job_file.body, idempotency_key)
        job_id = _job_id(answer.body)
    except ClientError as exc:
        return console.error(exc)
    job = answer.body
    if opts.as_json:
        if not wait:
            console.document(job)
            return EXIT_OK
        console.line({"event": "submitted", "id": None, "data": job})
    elif answer.status == 201:
        console.print(
            f"submitted job {job_id} ({clean(job.get('name'))}, {job.get('nodes_total')} nodes)"
        )
    else:
        console.print(
            f"job {job_id} ({clean(job.get('name'))}) was already submitted with this "
            f"idempotency key; it is {clean(job.get('status'))}"
        )
    if not wait:
        if not opts.as_json:
            console.print(f"follow it with: minitemporal jobs watch {job_id}")
        return EXIT_OK
    return _watch(console, client, job_id, as_json=opts.as_json, after_submit=True)


def watch(console: Console, opts: Options, job_id: str) -> int:
    try:
        client = connect(opts)
    except ClientError as exc:
        return console.error(exc)
    return _watch(console, client, job_id, as_json=opts.as_json, after_submit=False)


def _watch(
    console: Console, client: ApiClient, job_id: str, *, as_json: bool, after_submit: bool
) -> int:
    """Print the job's events until it ends; 0 if it succeeded, 1 if it failed or was
    cancelled. `jobs watch` fails at once if the api cannot be reached at all; after a
    submit, the api was there a moment ago, so it is waited for."""
    progress = Progress(color=console.color)
    header = not after_submit
    try:
        for item in follow(client, job_id, retry_at_start=after_submit):
            if isinstance(item, Notice):
                console.note(item.message)
                continue
            if as_json:
                console.line({"event": item.kind, "id": item.id, "data": item.data})
                progress.apply(item)
                continue
            if header and item.kind == "snapshot":
                header = False
                data = item.data
                console.print(
                    f"job {clean(data.get('id'))} ({clean(data.get('name'))}): "
                    f"{clean(data.get('status'))}, {data.get('nodes_total')} nodes"
                )
            for line in progress.apply(item):
                console.print(line)
    except ClientError as exc:
        return console.error(exc)
    except KeyboardInterrupt:
        console.note(
            f"stopped watching; job {job_id} goes on (stop it with: minitemporal jobs cancel "
            f"{job_id})"
        )
        return EXIT_INTERRUPTED
    return EXIT_OK if progress.status == "succeeded" else EXIT_JOB_NOT_SUCCEEDED


def list_jobs(
    console: Console, opts: Options, *, status: str | None, limit: int | None, cursor: str | None
) -> int:
    try:
        page = connect(opts).list_jobs(status=status, limit=limit, cursor=cursor)
    except ClientError as exc:
        return console.error(exc)
    if opts.as_json:
        console.document(page)
        return EXIT_OK
    console.print(jobs_table(page, color=console.color))
    if isinstance(page, dict) and page.get("next_cursor"):
        console.note(f"more jobs: add --cursor {clean(page['next_cursor'])}")
    return EXIT_OK


def get_job(console: Console, opts: Options, job_id: str) -> int:
    try:
        job = connect(opts).get_job(job_id)
    except ClientError as exc:
        return console.error(exc)
    if opts.as_json:
        console.document(job)
    else:
        console.print(job_detail(job, color=console.color))
    return EXIT_OK


def cancel(console: Console, opts: Options, job_id: str) -> int:
    try:
        job = connect(opts).cancel(job_id)
    except ClientError as exc:
        return console.error(exc)
    if opts.as_json:
        console.document(job)
    else:
        console.print(
            f"job {clean(job.get('id'))}: cancel requested (now {clean(job.get('status'))}); "
            "waiting nodes are cancelled, running commands killed within a heartbeat"
        )
    return EXIT_OK


def logs(
    console: Console,
    opts: Options,
    job_id: str,
    node_id: str,
    *,
    attempt: int | None,
    stderr: bool,
) -> int:
    stream = "stderr" if stderr else "stdout"
    try:
        job = connect(opts).get_job(job_id)
        node, record = _pick_attempt(job, job_id, node_id, attempt)
    except ClientError as exc:
        return console.error(exc)
    if node.get("cached") and not node.get("attempts"):
        console.note(
            f"node {clean(node_id)} reused the result of an earlier node with its idempotency "
            "key; this is that result's output"
        )
    if opts.as_json:
        console.document(record)
        return EXIT_OK
    output = record.get(stream) if isinstance(record.get(stream), dict) else {}
    tail = output.get("tail") if isinstance(output.get("tail"), str) else ""
    total = output.get("total_bytes")
    number = record.get("attempt")
    if record.get("finished_at") is None:
        console.note(f"attempt {number} is still running; its output is stored when it ends")
    console.write(tail)
    if output.get("truncated"):
        console.note(
            f"{stream} of attempt {number} was truncated: this is its last "
            f"{len(tail.encode())} bytes (with a marker line) of {total}"
        )
    elif not tail and record.get("finished_at") is not None:
        console.note(f"attempt {number} wrote nothing to {stream}")
    return EXIT_OK


def _pick_attempt(
    job: Any, job_id: str, node_id: str, attempt: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    nodes = [n for n in (job.get("nodes") or []) if isinstance(n, dict)]
    node = next((n for n in nodes if n.get("id") == node_id), None)
    if node is None:
        names = ", ".join(clean(n.get("id")) for n in nodes[:20])
        more = ", ..." if len(nodes) > 20 else ""
        raise ClientError(f"job {job_id} has no node {clean(node_id)!r} (its nodes: {names}{more})")
    attempts = [a for a in node.get("attempts") or [] if isinstance(a, dict)]
    if attempt is not None:
        record = next((a for a in attempts if a.get("attempt") == attempt), None)
        if record is None:
            have = ", ".join(str(a.get("attempt")) for a in attempts) or "none"
            raise ClientError(f"node {clean(node_id)} has no attempt {attempt} (attempts: {have})")
        return node, record
    if attempts:
        return node, attempts[-1]
    cached = node.get("cached_result")
    if isinstance(cached, dict):
        return node, cached
    explanation = clean(node.get("explanation")) or clean(node.get("state"))
    raise ClientError(f"node {clean(node_id)} has not run yet: {explanation}")
