"""minitemporal: a minimal, production-grade distributed DAG job scheduler."""

__version__ = "0.1.0"
