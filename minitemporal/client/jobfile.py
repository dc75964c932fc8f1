"""Reading a DAG from a JSON or YAML file (or standard input) into a POST /v1/jobs body.

Both the request body `{"job": {...}}` and a bare job `{"name": ..., "nodes": [...]}` are
accepted. YAML goes through `yaml.safe_load` only (no Python objects), and what it yields must
be plain JSON: no dates, no non-string keys, no NaN, and no alias expanded past a bound.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from minitemporal.client.http import UsageProblem

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_VALUES = 1_000_000  # after YAML aliases are expanded: a "billion laughs" stops here


@dataclass(frozen=True, slots=True)
class JobFile:
    body: dict[str, Any]  # what to POST: {"job": {...}}
    wrapped: bool  # the file held a bare job, now under "job" (so are the API's pointers)
    source: str  # the file name, or "standard input"


def load(path: str, stdin: IO[bytes] | None = None) -> JobFile:
    """Read and parse `path` ("-": standard input); raise UsageProblem saying what is wrong."""
    source = "standard input" if path == "-" else path
    raw = _read(path, source, stdin)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageProblem(f"{source}: not UTF-8 text (byte {exc.start})") from None
    document = _parse(text, source, _format(path, text))
    if not isinstance(document, dict):
        raise UsageProblem(
            f"{source}: the top level must be an object (a job), not {_kind(document)}"
        )
    _check_plain(document, source)
    if isinstance(document.get("job"), dict):
        return JobFile(document, False, source)
    return JobFile({"job": document}, True, source)


def _read(path: str, source: str, stdin: IO[bytes] | None) -> bytes:
    try:
        if path == "-":
            if stdin is None:
                raise UsageProblem("no standard input to read")
            raw = stdin.read(MAX_FILE_BYTES + 1)
        else:
            with Path(path).open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UsageProblem(f"{source}: no such file") from None
    except IsADirectoryError:
        raise UsageProblem(f"{source}: is a directory") from None
    except PermissionError:
        raise UsageProblem(f"{source}: permission denied") from None
    except OSError as exc:
        raise UsageProblem(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UsageProblem(f"{source}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if not raw.strip():
        raise UsageProblem(f"{source}: empty")
    return raw


def _format(path: str, text: str) -> str:
    suffix = Path(path).suffix.lower() if path != "-" else ""
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "json" if text.lstrip()[:1] in ("{", "[") else "yaml"


def _parse(text: str, source: str, fmt: str) -> Any:
    if fmt == "json":
        try:
            return json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise UsageProblem(
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except ValueError as exc:
            raise UsageProblem(f"{source}: invalid JSON: {exc}") from None
        except RecursionError:
            raise UsageProblem(f"{source}: nested too deeply") from None
    import yaml  # only when a YAML file is read: it is not needed otherwise

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "cannot parse it"
        raise UsageProblem(f"{source}: invalid YAML{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise UsageProblem(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise UsageProblem(f"{source}: nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _check_plain(document: dict[str, Any], source: str) -> None:
    """Refuse what YAML can say and JSON cannot, pointing at it; iterative and bounded."""
    stack: list[tuple[Any, str]] = [(document, "")]
    seen = 0
    while stack:
        value, where = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise UsageProblem(f"{source}: more than {MAX_VALUES} values (YAML aliases?)")
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise UsageProblem(
                        f"{source}: at {where or '/'}: the key {key!r} must be a string (quote it)"
                    )
                stack.append((child, f"{where}/{_escape(key)}"))
        elif isinstance(value, list):
            stack.extend((child, f"{where}/{i}") for i, child in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise UsageProblem(f"{source}: at {where}: {value} is not a JSON number")
        elif value is not None and not isinstance(value, str | int | float):
            raise UsageProblem(
                f"{source}: at {where}: a {type(value).__name__} is not a JSON value "
                "(quote it to make it a string)"
            )


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
