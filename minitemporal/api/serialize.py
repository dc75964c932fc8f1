"""Domain views -> JSON documents of the REST API. The one place that decides their shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from minitemporal.domain.model import AttemptView, JobView, NodeView, Output


def _t(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def output(o: Output) -> dict[str, Any]:
    return {"tail": o.tail, "total_bytes": o.total_bytes, "truncated": o.truncated}


def attempt(a: AttemptView) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "worker_id": a.worker_id,
        "reason": a.reason,
        "exit_code": a.exit_code,
        "enqueued_at": _t(a.enqueued_at),
        "claimed_at": _t(a.claimed_at),
        "started_at": _t(a.started_at),
        "finished_at": _t(a.finished_at),
        "stdout": output(a.stdout),
        "stderr": output(a.stderr),
    }


def node(n: NodeView) -> dict[str, Any]:
    last = n.attempts[-1] if n.attempts else n.cached_result
    return {
        "id": n.id,
        "name": n.name,
        "command": n.command,
        "depends_on": list(n.depends_on),
        "retries": n.retries,
        "timeout_seconds": n.timeout_seconds,
        "idempotency_key": n.idempotency_key,
        "state": n.state.value,
        "explanation": n.explanation,
        "cached": n.cached,
        "attempt": n.attempt,
        "worker_id": n.worker_id,
        "enqueued_at": _t(n.enqueued_at),
        "started_at": _t(n.started_at),
        "finished_at": _t(n.finished_at),
        "next_attempt_at": _t(n.next_attempt_at),
        "exit_code": n.exit_code,
        "stdout": output(last.stdout) if last else None,
        "stderr": output(last.stderr) if last else None,
        "attempts": [attempt(a) for a in n.attempts],
        "cached_result": attempt(n.cached_result) if n.cached_result else None,
    }


def job(j: JobView, *, with_nodes: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": j.id,
        "name": j.name,
        "status": j.status.value,
        "cancel_requested": j.cancel_requested,
        "created_at": _t(j.created_at),
        "finished_at": _t(j.finished_at),
        "nodes_total": j.nodes_total,
        "node_counts": j.node_counts,
    }
    if with_nodes:
        body["nodes"] = [node(n) for n in j.nodes]
    return body
