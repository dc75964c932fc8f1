"""PostgreSQL backend of the store interface (psycopg 3, async pool)."""

from minitemporal.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
