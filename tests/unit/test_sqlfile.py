"""Named statements from .sql files, and their PostgreSQL-numbered form."""

from __future__ import annotations

import psycopg
import pytest
from psycopg._queries import PostgresQuery  # the conversion `positional` must match

from minitemporal.store.sqlfile import load_queries, positional


def test_a_name_used_twice_is_one_parameter_numbered_in_order_of_first_use() -> None:
    text, names = positional("SELECT %(b)s, %(a)s::int[], cardinality(%(b)s), 5 %% 2")
    assert text == b"SELECT $1, $2::int[], cardinality($1), 5 % 2"
    assert names == ("b", "a")


def test_a_lone_percent_is_refused_as_psycopg_refuses_it() -> None:
    with pytest.raises(ValueError, match="lone %"):
        positional("SELECT 5 % 2")


@pytest.mark.parametrize("name", sorted(load_queries("minitemporal.store.postgres", "queries.sql")))
def test_every_statement_converts_as_psycopg_converts_it(name: str) -> None:
    """The same text and the same parameter order that psycopg would send."""
    sql = load_queries("minitemporal.store.postgres", "queries.sql")[name]
    text, names = positional(sql)
    args = {n: f"v{i}" for i, n in enumerate(names)}
    pgq = PostgresQuery(psycopg.adapt.Transformer())
    pgq.convert(sql, args)
    assert pgq.query == text
    assert [bytes(p or b"") for p in pgq.params or []] == [
        f"v{i}".encode() for i in range(len(names))
    ]
