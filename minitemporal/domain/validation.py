"""Turn an untrusted JSON document into a `JobSpec`, or list every problem with it.

Runs before anything is stored, in the api (to answer fast) and again in the scheduler (the
authority: anyone holding the gRPC secret could bypass the api). Never raises anything but
`InvalidInput`, whatever the input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from minitemporal.domain.dag import find_cycle
from minitemporal.domain.model import JobSpec, NodeSpec, RetryPolicy
from minitemporal.errors import InvalidInput, Problem


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits; every one is a setting (see config.py) with these defaults."""

    max_nodes: int = 10_000
    max_name_length: int = 256
    max_command_length: int = 65_536
    max_dependencies: int = 1_000
    max_retries: int = 100
    max_timeout_seconds: float = 7 * 24 * 3600.0
    max_backoff_seconds: float = 24 * 3600.0
    max_env_vars: int = 64
    max_env_value_length: int = 8_192
    id_pattern: str = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
    _id_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_id_re", re.compile(self.id_pattern))

    def valid_id(self, value: str) -> bool:
        return self._id_re.fullmatch(value) is not None


MAX_IDEMPOTENCY_KEY = 256  # characters of the Idempotency-Key header
MAX_PAGE = 500  # jobs in one page of GET /v1/jobs
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED_ENV_PREFIX = "MINITEMPORAL_"
NODE_FIELDS = frozenset(
    {
        "id",
        "name",
        "command",
        "retries",
        "timeout_seconds",
        "idempotency_key",
        "depends_on",
        "env",
        "retry_backoff",
    }
)
BACKOFF_FIELDS = frozenset({"base_seconds", "factor", "max_seconds"})


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, pointer: str, message: str) -> None:
        self.problems.append(Problem(pointer, message))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not isinstance(value, bool)


def _text(
    out: _Collector, pointer: str, value: object, *, max_length: int, allow_empty: bool = False
) -> str | None:
    if not isinstance(value, str):
        out.add(pointer, f"must be a string, got {_kind(value)}")
        return None
    if not value and not allow_empty:
        out.add(pointer, "must not be empty")
        return None
    if len(value) > max_length:
        out.add(pointer, f"must be at most {max_length} characters, got {len(value)}")
        return None
    if "\x00" in value:
        out.add(pointer, "must not contain NUL characters")
        return None
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        out.add(pointer, "must be valid Unicode text (lone surrogate)")
        return None
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _positive_seconds(
    out: _Collector, pointer: str, value: object, *, maximum: float, allow_zero: bool = False
) -> float | None:
    if not _is_number(value):
        out.add(pointer, f"must be a number of seconds, got {_kind(value)}")
        return None
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        out.add(pointer, "must be finite")
        return None
    if number < 0 or (number == 0 and not allow_zero):
        out.add(pointer, "must be greater than 0" if not allow_zero else "must not be negative")
        return None
    if number > maximum:
        out.add(pointer, f"must be at most {maximum:g} seconds")
        return None
    return number


def _node(
    out: _Collector, pointer: str, raw: object, limits: Limits
) -> tuple[NodeSpec | None, dict[int, str]]:
    """The node's spec (None if it has problems) and its well-formed dependencies by index,
    so unknown dependencies are reported even for a node with other problems."""
    if not isinstance(raw, dict):
        out.add(pointer, f"must be an object, got {_kind(raw)}")
        return None, {}
    before = len(out.problems)
    for key in sorted(set(raw) - NODE_FIELDS):
        out.add(f"{pointer}/{_escape(key)}", "unknown field")

    node_id = None
    if "id" not in raw:
        out.add(f"{pointer}/id", "is required")
    else:
        node_id = _text(out, f"{pointer}/id", raw["id"], max_length=limits.max_name_length)
        if node_id is not None and not limits.valid_id(node_id):
            out.add(f"{pointer}/id", f"must match the pattern {limits.id_pattern}")
            node_id = None

    name = raw.get("name")
    if name is not None:
        name = _text(out, f"{pointer}/name", name, max_length=limits.max_name_length)

    command = None
    if "command" not in raw:
        out.add(f"{pointer}/command", "is required")
    else:
        command = _text(
            out, f"{pointer}/command", raw["command"], max_length=limits.max_command_length
        )

    retries = raw.get("retries", 0)
    if retries is None:
        retries = 0
    if not _is_int(retries):
        out.add(f"{pointer}/retries", f"must be an integer, got {_kind(retries)}")
    elif not 0 <= retries <= limits.max_retries:
        out.add(f"{pointer}/retries", f"must be between 0 and {limits.max_retries}")

    timeout = raw.get("timeout_seconds")
    if timeout is not None:
        timeout = _positive_seconds(
            out, f"{pointer}/timeout_seconds", timeout, maximum=limits.max_timeout_seconds
        )

    key = raw.get("idempotency_key")
    if key is not None:
        key = _text(out, f"{pointer}/idempotency_key", key, max_length=limits.max_name_length)

    depends_on: list[str] = []
    dep_index: dict[int, str] = {}
    deps_raw = raw.get("depends_on", [])
    if deps_raw is None:
        deps_raw = []
    if not isinstance(deps_raw, list):
        out.add(f"{pointer}/depends_on", f"must be an array, got {_kind(deps_raw)}")
    elif len(deps_raw) > limits.max_dependencies:
        out.add(f"{pointer}/depends_on", f"must have at most {limits.max_dependencies} entries")
    else:
        for j, dep in enumerate(deps_raw):
            dep_text = _text(
                out, f"{pointer}/depends_on/{j}", dep, max_length=limits.max_name_length
            )
            if dep_text is None:
                continue
            if dep_text in depends_on:
                out.add(f"{pointer}/depends_on/{j}", f"duplicate dependency {dep_text!r}")
            elif dep_text == node_id:
                out.add(f"{pointer}/depends_on/{j}", "a node cannot depend on itself")
            else:
                depends_on.append(dep_text)
                dep_index[j] = dep_text

    env = _env(out, f"{pointer}/env", raw.get("env"), limits)
    backoff = _backoff(out, f"{pointer}/retry_backoff", raw.get("retry_backoff"), limits)

    if len(out.problems) > before or node_id is None or command is None:
        return None, dep_index
    return NodeSpec(
        id=node_id,
        command=command,
        name=name or node_id,
        retries=retries,
        timeout_seconds=timeout,
        idempotency_key=key,
        depends_on=tuple(depends_on),
        env=env,
        backoff=backoff,
    ), dep_index


def _env(out: _Collector, pointer: str, raw: object, limits: Limits) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        out.add(pointer, f"must be an object of strings, got {_kind(raw)}")
        return ()
    if len(raw) > limits.max_env_vars:
        out.add(pointer, f"must have at most {limits.max_env_vars} variables")
        return ()
    pairs: list[tuple[str, str]] = []
    for name, value in raw.items():
        where = f"{pointer}/{_escape(name)}"
        if not ENV_NAME.fullmatch(name):
            out.add(where, "variable names must match [A-Za-z_][A-Za-z0-9_]*")
            continue
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            out.add(where, f"names starting with {RESERVED_ENV_PREFIX} are reserved")
            continue
        text = _text(out, where, value, max_length=limits.max_env_value_length, allow_empty=True)
        if text is not None:
            pairs.append((name, text))
    return tuple(pairs)


def _backoff(out: _Collector, pointer: str, raw: object, limits: Limits) -> RetryPolicy | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        out.add(pointer, f"must be an object, got {_kind(raw)}")
        return None
    for key in sorted(set(raw) - BACKOFF_FIELDS):
        out.add(f"{pointer}/{_escape(key)}", "unknown field")
    default = RetryPolicy()
    base = raw.get("base_seconds", default.base_seconds)
    base = _positive_seconds(
        out, f"{pointer}/base_seconds", base, maximum=limits.max_backoff_seconds, allow_zero=True
    )
    maximum = raw.get("max_seconds", max(default.max_seconds, base or 0.0))
    maximum = _positive_seconds(
        out, f"{pointer}/max_seconds", maximum, maximum=limits.max_backoff_seconds, allow_zero=True
    )
    factor = raw.get("factor", default.factor)
    if not _is_number(factor) or not math.isfinite(float(factor)) or not 1 <= factor <= 10:
        out.add(f"{pointer}/factor", "must be a number between 1 and 10")
        factor = None
    if base is None or maximum is None or factor is None:
        return None
    return RetryPolicy(base_seconds=base, factor=float(factor), max_seconds=maximum)


def _escape(key: object) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def parse_job_request(body: object, limits: Limits) -> JobSpec:
    """Validate the body of `POST /v1/jobs` (`{"job": {...}}`) and return the job's spec."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", [Problem("", "must be an object")])
    out = _Collector()
    for key in sorted(set(body) - {"job"}):
        out.add(f"/{_escape(key)}", "unknown field")
    if "job" not in body:
        out.add("/job", "is required")
        raise InvalidInput("the job is invalid", out.problems)
    return _job(out, "/job", body["job"], limits)


def parse_job(raw: object, limits: Limits) -> JobSpec:
    """Validate a job object (the value under `job`)."""
    return _job(_Collector(), "", raw, limits)


def _job(out: _Collector, pointer: str, raw: object, limits: Limits) -> JobSpec:
    if not isinstance(raw, dict):
        out.add(pointer, f"must be an object, got {_kind(raw)}")
        raise InvalidInput("the job is invalid", out.problems)
    for key in sorted(set(raw) - {"name", "nodes"}):
        out.add(f"{pointer}/{_escape(key)}", "unknown field")
    name = None
    if "name" not in raw:
        out.add(f"{pointer}/name", "is required")
    else:
        name = _text(out, f"{pointer}/name", raw["name"], max_length=limits.max_name_length)

    nodes_raw = raw.get("nodes")
    nodes: list[NodeSpec] = []
    if nodes_raw is None:
        out.add(f"{pointer}/nodes", "is required")
    elif not isinstance(nodes_raw, list):
        out.add(f"{pointer}/nodes", f"must be an array, got {_kind(nodes_raw)}")
    elif not nodes_raw:
        out.add(f"{pointer}/nodes", "a job needs at least one node")
    elif len(nodes_raw) > limits.max_nodes:
        out.add(f"{pointer}/nodes", f"must have at most {limits.max_nodes} nodes")
    else:
        nodes = _graph(out, f"{pointer}/nodes", nodes_raw, limits)

    if out.problems or name is None:
        raise InvalidInput(f"the job is invalid ({len(out.problems)} problem(s))", out.problems)
    return JobSpec(name=name, nodes=tuple(nodes))


def _graph(
    out: _Collector, pointer: str, raw_nodes: list[object], limits: Limits
) -> list[NodeSpec]:
    nodes: list[NodeSpec] = []
    positions: dict[str, int] = {}
    all_deps: list[dict[int, str]] = []
    for i, raw in enumerate(raw_nodes):
        node, deps_of_node = _node(out, f"{pointer}/{i}", raw, limits)
        all_deps.append(deps_of_node)
        if node is None:
            # Still reserve its id, so that its dependants do not report it unknown.
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                positions.setdefault(raw["id"], i)
            continue
        if node.id in positions:
            out.add(
                f"{pointer}/{i}/id",
                f"duplicate node id {node.id!r} (also at {pointer}/{positions[node.id]})",
            )
            continue
        positions[node.id] = i
        nodes.append(node)

    for i, deps_of_node in enumerate(all_deps):
        for j, dep in deps_of_node.items():
            if dep not in positions:
                out.add(f"{pointer}/{i}/depends_on/{j}", f"unknown node {dep!r}")

    deps: Mapping[str, tuple[str, ...]] = {n.id: n.depends_on for n in nodes}
    cycle = find_cycle(deps)
    if cycle is not None:
        out.add(pointer, "dependency cycle: " + " -> ".join(cycle) + " (each depends on the next)")
    return nodes
