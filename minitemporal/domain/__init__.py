"""The pure core: DAG model and validation, node state machine, retry backoff.

Nothing in this package performs I/O, so every rule here is unit-testable and shared by every
storage backend.
"""
