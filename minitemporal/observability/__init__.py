"""Metrics, health checks and logs. Everything is built by the composition root, never at import."""
