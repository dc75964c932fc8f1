"""Graph algorithms over a job's nodes: topological order and cycle finding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, stable in the mapping's order; raises ValueError on a cycle.

    `deps` maps each node to the nodes it depends on; every dependency must be a key.
    """
    remaining = {node: len(set(parents)) for node, parents in deps.items()}
    children: dict[str, list[str]] = {node: [] for node in deps}
    for node, parents in deps.items():
        for parent in dict.fromkeys(parents):
            children[parent].append(node)
    ready = [node for node, count in remaining.items() if count == 0]
    order: list[str] = []
    while ready:
        batch, ready = ready, []
        for node in batch:
            order.append(node)
            for child in children[node]:
                remaining[child] -= 1
                if remaining[child] == 0:
                    ready.append(child)
    if len(order) != len(deps):
        raise ValueError("graph has a cycle")
    return order


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a closed path [a, b, ..., a] (a depends on b ...), or None if acyclic.

    Iterative DFS so that a 10,000-node chain does not hit the recursion limit. Unknown
    dependencies are ignored here; validation reports them separately.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        stack: list[Iterable[str]] = [iter(deps[root])]
        colour[root] = grey
        while stack:
            advanced = False
            for nxt in stack[-1]:
                if nxt not in colour:
                    continue
                if colour[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if colour[nxt] == white:
                    colour[nxt] = grey
                    path.append(nxt)
                    stack.append(iter(deps[nxt]))
                    advanced = True
                    break
            if not advanced:
                colour[path.pop()] = black
                stack.pop()
    return None


def descendants(children: Mapping[str, Sequence[str]], start: str) -> set[str]:
    """Every node reachable from `start` along child edges, `start` excluded."""
    seen: set[str] = set()
    todo = list(children.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(children.get(node, ()))
    return seen
