"""minitemporal: a minimal, production-grade distributed DAG job scheduler."""

import os

__version__ = "0.1.0"

# A worker forks to spawn commands as another user (no vfork then) while grpc's threads are
# busy with its session stream; grpc's fork handlers then run in the child between fork and
# exec and can crash it (SIGSEGV, seen with run-as users). No role ever uses grpc in a forked
# child, so its fork support is off unless an operator turns it on explicitly.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
