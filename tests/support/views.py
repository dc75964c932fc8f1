"""Builders of domain views (jobs, nodes, attempts) for pure tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from minitemporal.domain.model import AttemptView, JobStatus, JobView, NodeState, NodeView, Output

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def node(node_id: str, state: NodeState = NodeState.PENDING, **changes: object) -> NodeView:
    base = NodeView(
        id=node_id,
        name=node_id,
        command=f"echo {node_id}",
        state=state,
        retries=1,
        timeout_seconds=10.0,
        idempotency_key=None,
        depends_on=(),
        attempt=0,
        enqueued_at=None,
        started_at=None,
        finished_at=None,
        next_attempt_at=None,
        worker_id=None,
        exit_code=None,
        cached=False,
        attempts=(),
        explanation="waits for nothing",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def job(*nodes: NodeView, status: JobStatus = JobStatus.RUNNING, **changes: object) -> JobView:
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.state.value] = counts.get(n.state.value, 0) + 1
    base = JobView(
        id="7f1c1b7e-0000-4000-8000-000000000001",
        name="j",
        status=status,
        created_at=T0,
        finished_at=None,
        nodes_total=len(nodes),
        node_counts=counts,
        nodes=nodes,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def attempt(n: int, reason: str | None = None, tail: str = "") -> AttemptView:
    return AttemptView(
        attempt=n,
        worker_id="w1",
        enqueued_at=T0,
        claimed_at=T0,
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=2) if reason else None,
        exit_code=0 if reason == "succeeded" else None,
        reason=reason,
        stdout=Output(tail, len(tail)),
        stderr=Output(),
    )
