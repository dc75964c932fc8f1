"""The one place that converts between protobuf messages and domain objects."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from minitemporal.domain.changes import JobEvent, summary
from minitemporal.domain.model import (
    AttemptView,
    Beat,
    ClaimedTask,
    JobSpec,
    JobStatus,
    JobView,
    NodeSpec,
    NodeState,
    NodeView,
    Outcome,
    Output,
    RetryPolicy,
    Submission,
    TaskRef,
    TaskResult,
)
from minitemporal.errors import InvalidInput, Problem
from minitemporal.rpc.gen import scheduler_pb2 as pb


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return out


def from_ts(msg: object, field: str) -> datetime | None:
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    stamp: Timestamp = getattr(msg, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _opt(msg: object, field: str) -> object | None:
    return getattr(msg, field) if msg.HasField(field) else None  # type: ignore[attr-defined]


# --- specs
def node_spec_to_pb(n: NodeSpec) -> pb.NodeSpec:
    msg = pb.NodeSpec(
        id=n.id,
        name=n.name,
        command=n.command,
        retries=n.retries,
        depends_on=list(n.depends_on),
        env=[pb.EnvVar(name=k, value=v) for k, v in n.env],
    )
    if n.timeout_seconds is not None:
        msg.timeout_seconds = n.timeout_seconds
    if n.idempotency_key is not None:
        msg.idempotency_key = n.idempotency_key
    if n.backoff is not None:
        msg.retry_backoff.CopyFrom(
            pb.RetryBackoff(
                base_seconds=n.backoff.base_seconds,
                factor=n.backoff.factor,
                max_seconds=n.backoff.max_seconds,
            )
        )
    return msg


def node_spec_from_pb(m: pb.NodeSpec) -> NodeSpec:
    backoff = None
    if m.HasField("retry_backoff"):
        b = m.retry_backoff
        backoff = RetryPolicy(
            base_seconds=b.base_seconds, factor=b.factor, max_seconds=b.max_seconds
        )
    return NodeSpec(
        id=m.id,
        name=m.name,
        command=m.command,
        retries=m.retries,
        timeout_seconds=m.timeout_seconds if m.HasField("timeout_seconds") else None,
        idempotency_key=m.idempotency_key if m.HasField("idempotency_key") else None,
        depends_on=tuple(m.depends_on),
        env=tuple((e.name, e.value) for e in m.env),
        backoff=backoff,
    )


def job_spec_to_pb(
    spec: JobSpec, idempotency_key: str | None, request_digest: str | None
) -> pb.SubmitJobRequest:
    msg = pb.SubmitJobRequest(name=spec.name, nodes=[node_spec_to_pb(n) for n in spec.nodes])
    if idempotency_key is not None:
        msg.idempotency_key = idempotency_key
    if request_digest is not None:
        msg.request_digest = request_digest
    return msg


def job_spec_from_pb(m: pb.SubmitJobRequest) -> JobSpec:
    return JobSpec(name=m.name, nodes=tuple(node_spec_from_pb(n) for n in m.nodes))


def submission_to_pb(s: Submission) -> pb.SubmitJobRequest:
    return job_spec_to_pb(s.spec, s.idempotency_key, s.request_digest)


def submission_from_pb(m: pb.SubmitJobRequest) -> Submission:
    return Submission(
        job_spec_from_pb(m),
        m.idempotency_key if m.HasField("idempotency_key") else None,
        m.request_digest if m.HasField("request_digest") else None,
    )


# --- views
def _output_to_pb(o: Output) -> pb.Output:
    return pb.Output(tail=o.tail, total_bytes=o.total_bytes)


def _output_from_pb(m: pb.Output) -> Output:
    return Output(tail=m.tail, total_bytes=m.total_bytes)


def _set_ts(msg: object, field: str, value: datetime | None) -> None:
    if value is not None:
        getattr(msg, field).CopyFrom(ts(value))


def job_to_pb(job: JobView) -> pb.Job:
    msg = pb.Job(
        id=job.id,
        name=job.name,
        status=job.status.value,
        nodes_total=job.nodes_total,
        node_counts=job.node_counts,
        cancel_requested=job.cancel_requested,
    )
    _set_ts(msg, "created_at", job.created_at)
    _set_ts(msg, "finished_at", job.finished_at)
    for n in job.nodes:
        _fill_node(msg.nodes.add(), n)
    return msg


def _fill_node(node: pb.Node, n: NodeView) -> None:
    node.id = n.id
    node.name = n.name
    node.command = n.command
    node.state = n.state.value
    node.retries = n.retries
    node.depends_on.extend(n.depends_on)
    node.attempt = n.attempt
    node.cached = n.cached
    node.explanation = n.explanation
    if n.timeout_seconds is not None:
        node.timeout_seconds = n.timeout_seconds
    if n.idempotency_key is not None:
        node.idempotency_key = n.idempotency_key
    if n.worker_id is not None:
        node.worker_id = n.worker_id
    if n.exit_code is not None:
        node.exit_code = n.exit_code
    for field in ("enqueued_at", "started_at", "finished_at", "next_attempt_at"):
        _set_ts(node, field, getattr(n, field))
    node.attempts.extend(_attempt_to_pb(a) for a in n.attempts)
    if n.cached_result is not None:
        node.cached_result.CopyFrom(_attempt_to_pb(n.cached_result))


def _attempt_to_pb(a: AttemptView) -> pb.Attempt:
    att = pb.Attempt(
        attempt=a.attempt, stdout=_output_to_pb(a.stdout), stderr=_output_to_pb(a.stderr)
    )
    if a.worker_id is not None:
        att.worker_id = a.worker_id
    if a.exit_code is not None:
        att.exit_code = a.exit_code
    if a.reason is not None:
        att.reason = a.reason
    for field in ("enqueued_at", "claimed_at", "started_at", "finished_at"):
        _set_ts(att, field, getattr(a, field))
    return att


def _attempt_from_pb(a: pb.Attempt) -> AttemptView:
    return AttemptView(
        attempt=a.attempt,
        worker_id=a.worker_id if a.HasField("worker_id") else None,
        enqueued_at=from_ts(a, "enqueued_at"),
        claimed_at=from_ts(a, "claimed_at"),
        started_at=from_ts(a, "started_at"),
        finished_at=from_ts(a, "finished_at"),
        exit_code=a.exit_code if a.HasField("exit_code") else None,
        reason=a.reason if a.HasField("reason") else None,
        stdout=_output_from_pb(a.stdout),
        stderr=_output_from_pb(a.stderr),
    )


def _node_from_pb(n: pb.Node) -> NodeView:
    return NodeView(
        id=n.id,
        name=n.name,
        command=n.command,
        state=NodeState(n.state),
        retries=n.retries,
        timeout_seconds=n.timeout_seconds if n.HasField("timeout_seconds") else None,
        idempotency_key=n.idempotency_key if n.HasField("idempotency_key") else None,
        depends_on=tuple(n.depends_on),
        attempt=n.attempt,
        enqueued_at=from_ts(n, "enqueued_at"),
        started_at=from_ts(n, "started_at"),
        finished_at=from_ts(n, "finished_at"),
        next_attempt_at=from_ts(n, "next_attempt_at"),
        worker_id=n.worker_id if n.HasField("worker_id") else None,
        exit_code=n.exit_code if n.HasField("exit_code") else None,
        cached=n.cached,
        explanation=n.explanation,
        attempts=tuple(_attempt_from_pb(a) for a in n.attempts),
        cached_result=_attempt_from_pb(n.cached_result) if n.HasField("cached_result") else None,
    )


def job_from_pb(m: pb.Job) -> JobView:
    nodes = tuple(_node_from_pb(n) for n in m.nodes)
    created = from_ts(m, "created_at")
    return JobView(
        id=m.id,
        name=m.name,
        status=JobStatus(m.status),
        created_at=created or datetime.fromtimestamp(0, UTC),
        finished_at=from_ts(m, "finished_at"),
        nodes_total=m.nodes_total,
        node_counts=dict(m.node_counts),
        nodes=nodes,
        cancel_requested=m.cancel_requested,
    )


# --- watching a job
def job_event_to_pb(event: JobEvent) -> pb.JobEvent:
    if event.snapshot:
        return pb.JobEvent(snapshot=job_to_pb(event.job))
    msg = pb.JobEvent(summary=job_to_pb(summary(event.job)), summary_changed=event.summary_changed)
    for n in event.nodes:
        _fill_node(msg.nodes.add(), n)
    return msg


def job_event_from_pb(m: pb.JobEvent) -> JobEvent:
    if m.WhichOneof("job") == "snapshot":
        return JobEvent(job=job_from_pb(m.snapshot), snapshot=True)
    return JobEvent(
        job=job_from_pb(m.summary),
        snapshot=False,
        nodes=tuple(_node_from_pb(n) for n in m.nodes),
        summary_changed=m.summary_changed,
    )


# --- tasks
def ref_to_pb(r: TaskRef) -> pb.TaskRef:
    return pb.TaskRef(node=r.node, attempt=r.attempt)


def ref_from_pb(m: pb.TaskRef) -> TaskRef:
    return TaskRef(m.node, m.attempt)


def task_to_pb(t: ClaimedTask) -> pb.Task:
    msg = pb.Task(
        ref=ref_to_pb(t.ref),
        job_id=t.job_id,
        node_id=t.node_id,
        command=t.command,
        env=[pb.EnvVar(name=k, value=v) for k, v in t.env],
        has_dependents=t.has_dependents,
    )
    if t.timeout_seconds is not None:
        msg.timeout_seconds = t.timeout_seconds
    return msg


def task_from_pb(m: pb.Task) -> ClaimedTask:
    return ClaimedTask(
        ref=ref_from_pb(m.ref),
        job_id=m.job_id,
        node_id=m.node_id,
        command=m.command,
        timeout_seconds=m.timeout_seconds if m.HasField("timeout_seconds") else None,
        env=tuple((e.name, e.value) for e in m.env),
        has_dependents=m.has_dependents,
    )


def beat_to_pb(b: Beat) -> pb.Beat:
    msg = pb.Beat(ref=ref_to_pb(b.ref))
    _set_ts(msg, "started_at", b.started_at)
    return msg


def beat_from_pb(m: pb.Beat) -> Beat:
    return Beat(ref=ref_from_pb(m.ref), started_at=from_ts(m, "started_at"))


def result_to_pb(r: TaskResult) -> pb.TaskResult:
    msg = pb.TaskResult(
        ref=ref_to_pb(r.ref),
        outcome=r.outcome.value,
        stdout=_output_to_pb(r.stdout),
        stderr=_output_to_pb(r.stderr),
    )
    if r.exit_code is not None:
        msg.exit_code = r.exit_code
    _set_ts(msg, "started_at", r.started_at)
    _set_ts(msg, "finished_at", r.finished_at)
    return msg


def result_from_pb(m: pb.TaskResult, index: int) -> TaskResult:
    try:
        outcome = Outcome(m.outcome)
    except ValueError:
        raise InvalidInput(
            "unknown outcome", [Problem(f"/results/{index}/outcome", f"unknown {m.outcome!r}")]
        ) from None
    finished = from_ts(m, "finished_at")
    if finished is None:
        raise InvalidInput(
            "missing finished_at", [Problem(f"/results/{index}/finished_at", "is required")]
        )
    return TaskResult(
        ref=ref_from_pb(m.ref),
        outcome=outcome,
        exit_code=m.exit_code if m.HasField("exit_code") else None,
        started_at=from_ts(m, "started_at"),
        finished_at=finished,
        stdout=_output_from_pb(m.stdout),
        stderr=_output_from_pb(m.stderr),
    )
