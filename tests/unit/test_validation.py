"""DAG validation: every problem is reported, with a JSON pointer, and nothing else escapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitemporal.domain.validation import Limits, parse_job_request
from minitemporal.errors import InvalidInput

LIMITS = Limits()


def node(node_id: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "command": "true", "depends_on": deps or [], **extra}


def problems(body: object, limits: Limits = LIMITS) -> dict[str, str]:
    with pytest.raises(InvalidInput) as info:
        parse_job_request(body, limits)
    return {p.pointer: p.message for p in info.value.problems}


def test_example_parses() -> None:
    spec = parse_job_request(
        {
            "job": {
                "name": "example-dag",
                "nodes": [
                    {
                        "id": "extract",
                        "name": "extract",
                        "command": "echo extract",
                        "retries": 2,
                        "timeout_seconds": 10,
                        "idempotency_key": "extract-v1",
                        "depends_on": [],
                    },
                    {
                        "id": "transform",
                        "name": "transform",
                        "command": "echo transform",
                        "retries": 2,
                        "timeout_seconds": 10,
                        "idempotency_key": "transform-v1",
                        "depends_on": ["extract"],
                    },
                ],
            }
        },
        LIMITS,
    )
    assert spec.name == "example-dag"
    assert [n.id for n in spec.nodes] == ["extract", "transform"]
    t = spec.nodes[1]
    assert (t.retries, t.timeout_seconds, t.idempotency_key, t.depends_on) == (
        2,
        10.0,
        "transform-v1",
        ("extract",),
    )
    assert t.max_attempts == 3


def test_defaults() -> None:
    spec = parse_job_request(
        {"job": {"name": "j", "nodes": [{"id": "a", "command": "true"}]}}, LIMITS
    )
    a = spec.nodes[0]
    assert (a.name, a.retries, a.timeout_seconds, a.idempotency_key, a.depends_on) == (
        "a",
        0,
        None,
        None,
        (),
    )


def test_empty_job_and_missing_fields() -> None:
    assert problems({"job": {"name": "j", "nodes": []}}) == {
        "/job/nodes": "a job needs at least one node"
    }
    got = problems({"job": {"nodes": [{"name": "x"}]}})
    assert got == {
        "/job/name": "is required",
        "/job/nodes/0/id": "is required",
        "/job/nodes/0/command": "is required",
    }
    assert problems({}) == {"/job": "is required"}
    assert "" in problems([1, 2])


def test_mistyped_fields_are_all_listed() -> None:
    got = problems(
        {
            "job": {
                "name": 5,
                "nodes": [
                    {
                        "id": 1,
                        "command": ["ls"],
                        "retries": "2",
                        "timeout_seconds": "10",
                        "depends_on": "a",
                        "idempotency_key": 3,
                    },
                    {"id": "b", "command": "true", "retries": True},
                ],
            }
        }
    )
    assert set(got) == {
        "/job/name",
        "/job/nodes/0/id",
        "/job/nodes/0/command",
        "/job/nodes/0/retries",
        "/job/nodes/0/timeout_seconds",
        "/job/nodes/0/depends_on",
        "/job/nodes/0/idempotency_key",
        "/job/nodes/1/retries",
    }
    assert got["/job/nodes/1/retries"] == "must be an integer, got boolean"


def test_duplicates_unknown_and_self_dependencies() -> None:
    got = problems(
        {
            "job": {
                "name": "j",
                "nodes": [
                    node("a"),
                    node("a"),
                    node("b", ["nope", "b", "a", "a"]),
                ],
            }
        }
    )
    assert got["/job/nodes/1/id"].startswith("duplicate node id 'a'")
    assert got["/job/nodes/2/depends_on/0"] == "unknown node 'nope'"
    assert got["/job/nodes/2/depends_on/1"] == "a node cannot depend on itself"
    assert got["/job/nodes/2/depends_on/3"] == "duplicate dependency 'a'"


def test_cycle_is_named() -> None:
    got = problems(
        {
            "job": {
                "name": "j",
                "nodes": [
                    node("a", ["c"]),
                    node("b", ["a"]),
                    node("c", ["b"]),
                    node("d"),
                ],
            }
        }
    )
    message = got["/job/nodes"]
    assert message.startswith("dependency cycle: ")
    path = message.removeprefix("dependency cycle: ").split(" (")[0].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"}


def test_unknown_fields_are_rejected() -> None:
    got = problems({"job": {"name": "j", "nodes": [node("a", depend_on=["x"])], "x": 1}, "y": 2})
    assert got == {
        "/y": "unknown field",
        "/job/x": "unknown field",
        "/job/nodes/0/depend_on": "unknown field",
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retries", -1, "must be between 0 and 100"),
        ("retries", 10**9, "must be between 0 and 100"),
        ("timeout_seconds", 0, "must be greater than 0"),
        ("timeout_seconds", -5, "must be greater than 0"),
        ("timeout_seconds", 1e12, "must be at most 604800 seconds"),
        ("id", "has space", "must match the pattern"),
        ("id", "x" * 300, "must be at most 256 characters"),
        ("command", "", "must not be empty"),
        ("command", "echo \x00", "must not contain NUL characters"),
    ],
)
def test_limits(field: str, value: object, message: str) -> None:
    got = problems({"job": {"name": "j", "nodes": [{**node("a"), field: value}]}})
    assert got[f"/job/nodes/0/{field}"].startswith(message)


def test_configurable_limits() -> None:
    small = Limits(max_nodes=2, max_command_length=5, max_dependencies=1)
    got = problems({"job": {"name": "j", "nodes": [node("a"), node("b"), node("c")]}}, small)
    assert got == {"/job/nodes": "must have at most 2 nodes"}
    got = problems(
        {
            "job": {
                "name": "j",
                "nodes": [
                    {"id": "a", "command": "echo hello"},
                    node("b", ["a", "c"]),
                    node("c"),
                ],
            }
        },
        Limits(max_command_length=5, max_dependencies=1),
    )
    assert got["/job/nodes/0/command"] == "must be at most 5 characters, got 10"
    assert got["/job/nodes/1/depends_on"] == "must have at most 1 entries"


def test_env_and_backoff() -> None:
    spec = parse_job_request(
        {
            "job": {
                "name": "j",
                "nodes": [
                    node(
                        "a",
                        env={"FOO": "1"},
                        retry_backoff={"base_seconds": 0.5, "factor": 3, "max_seconds": 9},
                    ),
                ],
            }
        },
        LIMITS,
    )
    a = spec.nodes[0]
    assert a.env == (("FOO", "1"),)
    assert a.backoff is not None and (
        a.backoff.base_seconds,
        a.backoff.factor,
        a.backoff.max_seconds,
    ) == (0.5, 3.0, 9.0)
    got = problems(
        {
            "job": {
                "name": "j",
                "nodes": [
                    node(
                        "a",
                        env={"MINITEMPORAL_DATABASE_URL": "x", "1BAD": "y"},
                        retry_backoff={"factor": 0},
                    ),
                ],
            }
        }
    )
    assert got["/job/nodes/0/env/MINITEMPORAL_DATABASE_URL"].startswith("names starting with")
    assert got["/job/nodes/0/env/1BAD"].startswith("variable names must match")
    assert got["/job/nodes/0/retry_backoff/factor"] == "must be a number between 1 and 10"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
NODE_KEYS = ["id", "name", "command", "retries", "timeout_seconds", "idempotency_key", "depends_on"]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries({"job": JSON}),
        st.fixed_dictionaries(
            {
                "job": st.fixed_dictionaries(
                    {
                        "name": JSON,
                        "nodes": st.lists(
                            st.dictionaries(st.sampled_from(NODE_KEYS), JSON), max_size=5
                        ),
                    }
                )
            }
        ),
    )
)
def test_any_input_gives_a_spec_or_invalid_input(body: object) -> None:
    """Invariant 5: malformed input never raises anything but InvalidInput."""
    try:
        spec = parse_job_request(body, LIMITS)
    except InvalidInput as exc:
        assert exc.problems, "an InvalidInput always says what is wrong"
        json.dumps([p.pointer for p in exc.problems])
    else:
        assert spec.nodes
