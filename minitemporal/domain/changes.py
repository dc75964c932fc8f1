"""What changed in a job between two reads of it: the events a watcher of the job is sent.

The store is the only source of truth, so watching a job is reading it again and comparing:
this module is that comparison, pure, shared by the scheduler (which computes the changes) and
the api (which renders them as server-sent events).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from minitemporal.domain.model import JobStatus, JobView, NodeView


@dataclass(frozen=True, slots=True)
class JobChange:
    """The nodes that differ (in the job's node order) and whether the summary does."""

    nodes: tuple[NodeView, ...] = ()
    summary_changed: bool = False

    def __bool__(self) -> bool:
        return self.summary_changed or bool(self.nodes)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One message of a job's watch: the whole job first (`snapshot`), then each change.

    `job` is the job as read; for a change, its `nodes` may be left out (the summary is what
    matters), and `nodes` holds the nodes that changed.
    """

    job: JobView
    snapshot: bool
    nodes: tuple[NodeView, ...] = ()
    summary_changed: bool = False

    @property
    def finished(self) -> bool:
        return self.job.status is not JobStatus.RUNNING


def summary(job: JobView) -> JobView:
    """The job without its nodes: what `?nodes=false` shows."""
    return dataclasses.replace(job, nodes=()) if job.nodes else job


def summary_differs(before: JobView, after: JobView) -> bool:
    return (
        before.status is not after.status
        or before.node_counts != after.node_counts
        or before.cancel_requested != after.cancel_requested
        or before.finished_at != after.finished_at
        or before.nodes_total != after.nodes_total
        or before.name != after.name
        or before.created_at != after.created_at
    )


def diff_jobs(before: JobView, after: JobView) -> JobChange:
    """What a watcher that saw `before` must be told to know `after` (both read with nodes).

    A node is changed when anything a client sees of it differs: state, attempt, times,
    explanation, any attempt record. A node missing from `before` counts as changed.
    """
    seen = {n.id: n for n in before.nodes}
    changed = tuple(n for n in after.nodes if seen.get(n.id) != n)
    return JobChange(nodes=changed, summary_changed=summary_differs(before, after))


def change_event(before: JobView, after: JobView) -> JobEvent | None:
    """The event that brings a watcher from `before` to `after`, or None if nothing changed."""
    change = diff_jobs(before, after)
    if not change:
        return None
    return JobEvent(
        job=summary(after),
        snapshot=False,
        nodes=change.nodes,
        summary_changed=change.summary_changed,
    )
