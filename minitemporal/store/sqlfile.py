"""Load named SQL statements from a .sql file (`-- name: foo` headers), as procrastinate does."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(package: str, filename: str) -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


def load_text(package: str, filename: str) -> str:
    return resources.files(package).joinpath(filename).read_text()
