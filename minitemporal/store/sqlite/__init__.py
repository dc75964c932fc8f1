"""Embedded backend of the store interface: SQLite, for one process with nothing installed."""

from minitemporal.store.sqlite.store import SqliteStore, describe, sqlite_path

__all__ = ["SqliteStore", "describe", "sqlite_path"]
