"""Topological order and cycle finding, including property tests on random DAGs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitemporal.domain.dag import descendants, find_cycle, topological_order


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """Random DAGs: node i may only depend on nodes before it, then the order is shuffled."""
    n = draw(st.integers(min_value=1, max_value=40))
    names = [f"n{i}" for i in range(n)]
    deps = {
        names[i]: draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=4)) if i else []
        for i in range(n)
    }
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


@settings(max_examples=200, deadline=None)
@given(dags())
def test_topological_order_respects_every_edge(deps: dict[str, list[str]]) -> None:
    order = topological_order(deps)
    assert sorted(order) == sorted(deps)
    position = {name: i for i, name in enumerate(order)}
    for node, parents in deps.items():
        for parent in parents:
            assert position[parent] < position[node]
    assert find_cycle(deps) is None


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_a_back_edge_makes_a_cycle_that_is_found(
    deps: dict[str, list[str]], data: st.DataObject
) -> None:
    order = topological_order(deps)
    if len(order) < 2:
        return
    i = data.draw(st.integers(0, len(order) - 2))
    j = data.draw(st.integers(i + 1, len(order) - 1))
    early, late = order[i], order[j]
    # Make `early` depend on `late`, and make sure `late` depends on `early`, closing a loop.
    deps = {k: list(v) for k, v in deps.items()}
    deps[early].append(late)
    if early not in deps[late]:
        deps[late].append(early)
    cycle = find_cycle(deps)
    assert cycle is not None and cycle[0] == cycle[-1]
    for a, b in itertools.pairwise(cycle):
        assert b in deps[a], "each step of the reported cycle is a real dependency"
    with pytest.raises(ValueError, match="cycle"):
        topological_order(deps)


def test_long_chain_does_not_recurse() -> None:
    deps = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(20_000)}
    assert find_cycle(deps) is None
    assert topological_order(deps)[-1] == "n19999"


def test_descendants() -> None:
    children = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    assert descendants(children, "a") == {"b", "c", "d"}
    assert descendants(children, "d") == set()
