"""Load named SQL statements from a .sql file (`-- name: foo` headers), as procrastinate does."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
# What psycopg reads in a statement with named parameters: a placeholder, `%%`, or an error.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")


def load_queries(package: str, filename: str) -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


def positional(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """`sql` as psycopg would send it, with PostgreSQL's own `$n` for its `%(name)s`
    placeholders, and the names in the order of their numbers (a name used twice is one
    parameter). Like psycopg, it reads `%%` as `%` and rejects any other `%`.

    For a statement over 4,096 bytes: psycopg caches its conversion of named placeholders
    only up to that size and converts a longer statement again at every execution (the chain
    step's statement: 8% of the scheduler's CPU in a chain). A raw cursor sends this as is.
    """
    names: dict[str, int] = {}

    def number(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return f"${names.setdefault(m.group(1), len(names) + 1)}"
        if m.group(0) == "%%":
            return "%"
        raise ValueError(f"a lone % at {m.start()}: write %% for the operator")

    text = _PLACEHOLDER.sub(number, sql)
    return text.encode(), tuple(names)


def load_text(package: str, filename: str) -> str:
    return resources.files(package).joinpath(filename).read_text()
