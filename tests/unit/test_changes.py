"""What a job's watchers are told: the diff of two reads of the job, and its proto round trip."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from minitemporal.domain.changes import JobEvent, change_event, diff_jobs
from minitemporal.domain.model import JobStatus, NodeState
from minitemporal.rpc import convert
from tests.support.views import T0, attempt, job, node


def test_nothing_changed_is_no_event() -> None:
    before = job(node("a"), node("b"))
    after = job(node("a"), node("b"))  # equal, not identical
    assert not diff_jobs(before, after)
    assert change_event(before, after) is None


def test_a_state_change_names_the_node_and_the_summary() -> None:
    before = job(node("a", NodeState.QUEUED), node("b"))
    after = job(node("a", NodeState.RUNNING, attempt=1, worker_id="w1"), node("b"))
    change = diff_jobs(before, after)
    assert [n.id for n in change.nodes] == ["a"]
    assert change.nodes[0].state is NodeState.RUNNING
    assert change.summary_changed, "node_counts moved from queued to running"


def test_a_node_change_alone_leaves_the_summary_alone() -> None:
    before = job(node("a", NodeState.RUNNING, attempts=(attempt(1),)))
    started = dataclasses.replace(attempt(1), started_at=T0 + timedelta(seconds=3))
    after = job(node("a", NodeState.RUNNING, attempts=(started,)))
    change = diff_jobs(before, after)
    assert [n.id for n in change.nodes] == ["a"] and not change.summary_changed


def test_explanations_and_output_tails_are_changes() -> None:
    before = job(node("a", NodeState.QUEUED, explanation="2 attempts queued ahead"), node("b"))
    after = job(node("a", NodeState.QUEUED, explanation="1 attempt queued ahead"), node("b"))
    assert [n.id for n in diff_jobs(before, after).nodes] == ["a"]
    ran = node("b", NodeState.SUCCEEDED, attempts=(attempt(1, "succeeded", "hi\n"),))
    more = node("b", NodeState.SUCCEEDED, attempts=(attempt(1, "succeeded", "hi\nthere\n"),))
    assert [n.id for n in diff_jobs(job(ran), job(more)).nodes] == ["b"]


def test_summary_only_changes() -> None:
    a = node("a", NodeState.RUNNING)
    assert diff_jobs(job(a), job(a, cancel_requested=True)).summary_changed
    finished = job(a, status=JobStatus.CANCELLED, finished_at=T0)
    change = diff_jobs(job(a), finished)
    assert change.summary_changed and change.nodes == ()


def test_changed_nodes_keep_the_jobs_order_and_new_nodes_count() -> None:
    before = job(node("a"), node("b"), node("c"))
    after = job(node("a", NodeState.QUEUED), node("b"), node("c", NodeState.QUEUED), node("d"))
    assert [n.id for n in diff_jobs(before, after).nodes] == ["a", "c", "d"]


def test_the_change_event_carries_the_summary_and_says_when_the_job_finished() -> None:
    before = job(node("a", NodeState.RUNNING))
    after = job(node("a", NodeState.SUCCEEDED), status=JobStatus.SUCCEEDED, finished_at=T0)
    event = change_event(before, after)
    assert event is not None and not event.snapshot and event.finished
    assert event.job.nodes == () and event.job.status is JobStatus.SUCCEEDED
    assert [n.state for n in event.nodes] == [NodeState.SUCCEEDED]
    assert not JobEvent(before, snapshot=True).finished


STATES = st.sampled_from(list(NodeState))


@given(st.lists(STATES, min_size=1, max_size=6), st.lists(STATES, min_size=1, max_size=6))
def test_a_watcher_applying_the_changes_holds_the_new_job(
    old: list[NodeState], new: list[NodeState]
) -> None:
    """Replacing the nodes a change names (and the summary) turns `before` into `after`."""
    ids = [f"n{i}" for i in range(max(len(old), len(new)))]
    before = job(*(node(i, s) for i, s in zip(ids, old, strict=False)))
    after = job(*(node(i, s) for i, s in zip(ids, new + old[len(new) :], strict=False)))
    change = diff_jobs(before, after)
    held = {n.id: n for n in before.nodes} | {n.id: n for n in change.nodes}
    assert [held[n.id] for n in after.nodes] == list(after.nodes)
    counts_differ = before.node_counts != after.node_counts
    assert change.summary_changed == (counts_differ or before.nodes_total != after.nodes_total)


def test_events_survive_the_proto_round_trip() -> None:
    done = node("a", NodeState.SUCCEEDED, attempt=1, attempts=(attempt(1, "succeeded", "ok\n"),))
    snapshot = JobEvent(job(done, node("b", NodeState.QUEUED)), snapshot=True)
    assert convert.job_event_from_pb(convert.job_event_to_pb(snapshot)) == snapshot
    change = change_event(job(node("a", NodeState.RUNNING)), job(done))
    assert change is not None
    back = convert.job_event_from_pb(convert.job_event_to_pb(change))
    assert back == change and back.job.nodes == ()
