"""Dispatch: a hint of which attempts are ready. One interface (base.py), one module a backend.

The queue holds nothing that PostgreSQL cannot rebuild: losing it costs latency, never work.
"""
