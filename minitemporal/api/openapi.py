"""The OpenAPI 3.1 description of the REST API, served at GET /openapi.json.

Built from the running limits (so maxima and patterns are the ones this server enforces) and
from whether tokens are configured (then every protected operation declares its scope and its
401 and 403). tests/e2e/test_openapi.py holds it to the real app: every route and every status
the code can answer is described, and schemathesis checks real responses against it.
"""

from __future__ import annotations

import json
from typing import Any

import falcon
import falcon.asgi

from minitemporal import __version__
from minitemporal.api.dashboard import ASSETS, INDEX
from minitemporal.domain.model import JobStatus, NodeState
from minitemporal.domain.validation import (
    ENV_NAME,
    MAX_IDEMPOTENCY_KEY,
    MAX_PAGE,
    RESERVED_ENV_PREFIX,
    Limits,
)

JSON = "application/json"
PROBLEM = "application/problem+json"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


TIME = _nullable({"type": "string", "format": "date-time"})
INT_OR_NULL = {"type": ["integer", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}


def _response_schemas() -> dict[str, Any]:
    output = {
        "type": "object",
        "required": ["tail", "total_bytes", "truncated"],
        "properties": {
            "tail": {"type": "string", "description": "The last bytes, decoded as UTF-8."},
            "total_bytes": {"type": "integer", "minimum": 0},
            "truncated": {"type": "boolean"},
        },
    }
    attempt = {
        "type": "object",
        "required": [
            "attempt",
            "worker_id",
            "reason",
            "exit_code",
            "enqueued_at",
            "claimed_at",
            "started_at",
            "finished_at",
            "stdout",
            "stderr",
        ],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "worker_id": STR_OR_NULL,
            "reason": STR_OR_NULL,
            "exit_code": INT_OR_NULL,
            "enqueued_at": TIME,
            "claimed_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "stdout": _ref("Output"),
            "stderr": _ref("Output"),
        },
    }
    node = {
        "type": "object",
        "required": [
            "id",
            "name",
            "command",
            "depends_on",
            "retries",
            "timeout_seconds",
            "idempotency_key",
            "state",
            "explanation",
            "cached",
            "attempt",
            "worker_id",
            "enqueued_at",
            "started_at",
            "finished_at",
            "next_attempt_at",
            "exit_code",
            "stdout",
            "stderr",
            "attempts",
            "cached_result",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "command": {"type": "string"},
            "depends_on": {"type": "array", "items": {"type": "string"}},
            "retries": {"type": "integer", "minimum": 0},
            "timeout_seconds": {"type": ["number", "null"]},
            "idempotency_key": STR_OR_NULL,
            "state": {"type": "string", "enum": [s.value for s in NodeState]},
            "explanation": {"type": "string"},
            "cached": {"type": "boolean"},
            "attempt": {"type": "integer", "minimum": 0},
            "worker_id": STR_OR_NULL,
            "enqueued_at": TIME,
            "started_at": TIME,
            "finished_at": TIME,
            "next_attempt_at": TIME,
            "exit_code": INT_OR_NULL,
            "stdout": _nullable(_ref("Output")),
            "stderr": _nullable(_ref("Output")),
            "attempts": {"type": "array", "items": _ref("Attempt")},
            "cached_result": _nullable(_ref("Attempt")),
        },
    }
    summary_props: dict[str, Any] = {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in JobStatus]},
        "cancel_requested": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "finished_at": TIME,
        "nodes_total": {"type": "integer", "minimum": 0},
        "node_counts": {
            "type": "object",
            "description": "Nodes by state (states with no node are left out).",
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
    }
    summary = {"type": "object", "required": list(summary_props), "properties": summary_props}
    job = {
        "type": "object",
        "required": list(summary_props),
        "properties": {
            **summary_props,
            "nodes": {
                "type": "array",
                "items": _ref("Node"),
                "description": "Every node (left out with ?nodes=false).",
            },
        },
    }
    problem = {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "description": "Every problem found, each located by a JSON pointer.",
                "items": {
                    "type": "object",
                    "required": ["pointer", "message"],
                    "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    health = {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["ok", "latency_ms"],
                    "properties": {
                        "ok": {"type": "boolean"},
                        "latency_ms": {"type": "number"},
                        "error": {"type": "string"},
                    },
                },
            },
        },
    }
    page = {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("JobSummary")},
            "next_cursor": STR_OR_NULL,
        },
    }

    def sse(names: list[str], schema: str) -> dict[str, Any]:
        return {
            "properties": {
                "event": {"enum": names},
                "data": {"contentMediaType": JSON, "contentSchema": _ref(schema)},
            }
        }

    node_event = {
        "allOf": [
            _ref("Node"),
            {
                "type": "object",
                "required": ["job_id"],
                "properties": {"job_id": {"type": "string", "format": "uuid"}},
            },
        ]
    }
    stream_event = {
        "type": "object",
        "description": "One server-sent event: `data` is one line of JSON.",
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"enum": ["snapshot", "node", "job", "end"]},
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "retry": {"type": "integer"},
            "data": {"type": "string"},
        },
        "oneOf": [
            sse(["snapshot"], "Job"),
            sse(["node"], "NodeEvent"),
            sse(["job", "end"], "JobSummary"),
        ],
    }
    return {
        "Output": output,
        "Attempt": attempt,
        "Node": node,
        "NodeEvent": node_event,
        "JobStreamEvent": stream_event,
        "JobSummary": summary,
        "Job": job,
        "JobPage": page,
        "Problem": problem,
        "Health": health,
    }


def _request_schemas(limits: Limits) -> dict[str, Any]:
    seconds = {"type": "number", "minimum": 0, "maximum": limits.max_backoff_seconds}
    env_name = {
        "pattern": f"^(?:{ENV_NAME.pattern})$",
        "not": {"pattern": "^(?i:" + RESERVED_ENV_PREFIX + ")"},
    }
    node = {
        "type": "object",
        "required": ["id", "command"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "pattern": f"^(?:{limits.id_pattern})$",
                "maxLength": limits.max_name_length,
            },
            "name": _nullable(
                {"type": "string", "minLength": 1, "maxLength": limits.max_name_length}
            ),
            "command": {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.max_command_length,
                "description": "Run by /bin/sh -c on a worker.",
            },
            "retries": _nullable({"type": "integer", "minimum": 0, "maximum": limits.max_retries}),
            "timeout_seconds": _nullable(
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": limits.max_timeout_seconds,
                }
            ),
            "idempotency_key": _nullable(
                {"type": "string", "minLength": 1, "maxLength": limits.max_name_length}
            ),
            "depends_on": _nullable(
                {
                    "type": "array",
                    "maxItems": limits.max_dependencies,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1},
                }
            ),
            "env": _nullable(
                {
                    "type": "object",
                    "maxProperties": limits.max_env_vars,
                    "propertyNames": env_name,
                    "additionalProperties": {
                        "type": "string",
                        "maxLength": limits.max_env_value_length,
                    },
                }
            ),
            "retry_backoff": _nullable(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "base_seconds": seconds,
                        "factor": {"type": "number", "minimum": 1, "maximum": 10},
                        "max_seconds": seconds,
                    },
                }
            ),
        },
    }
    submission = {
        "type": "object",
        "required": ["job"],
        "additionalProperties": False,
        "properties": {
            "job": {
                "type": "object",
                "required": ["name", "nodes"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": limits.max_name_length},
                    "nodes": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": limits.max_nodes,
                        "items": _ref("NodeSpec"),
                    },
                },
            }
        },
    }
    return {"NodeSpec": node, "JobSubmission": submission}


_STATUS_TEXT = {
    400: "The body is not JSON, not UTF-8, or nested too deeply; or a query value does not parse.",
    401: "No token, or a token that matches nothing.",
    403: "The token lacks the scope this operation needs.",
    404: "No such job.",
    408: "The body did not arrive in time.",
    409: "The request contradicts the job's state, or reuses an Idempotency-Key.",
    413: "The body is larger than the configured limit (it was not read).",
    422: "The request (body, query or header) is invalid; `errors` lists every problem.",
    503: "The scheduler (or the store behind it) is unavailable, or the api serves as many "
    "event streams as it may; retry later.",
}


def _problem(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _STATUS_TEXT[status],
        "content": {PROBLEM: {"schema": _ref("Problem")}},
    }
    if status in (401, 403):
        response["headers"] = {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "RFC 6750."}
        }
    return response


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _operation(
    op_id: str,
    summary: str,
    scope: str | None,
    auth: bool,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    **extra: Any,
) -> dict[str, Any]:
    codes = set(errors)
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, **extra}
    if auth and scope is not None:
        operation["security"] = [{"bearer": [scope]}]
        codes |= {401, 403}
    else:
        operation["security"] = []
    operation["responses"] = {**ok, **{str(c): _problem(c) for c in sorted(codes)}}
    return operation


def _dashboard_paths(auth: bool) -> dict[str, Any]:
    """`/` and `/ui/{name}`: the web dashboard's page and files, open (they hold no data)."""

    def served(types: set[str]) -> dict[str, Any]:
        cached = {
            "ETag": {"schema": {"type": "string"}},
            "Cache-Control": {"schema": {"type": "string"}},
            "Content-Security-Policy": {"schema": {"type": "string"}},
        }
        content = {t.split(";")[0]: {"schema": {"type": "string"}} for t in sorted(types)}
        return {
            "200": {"description": "The file.", "headers": cached, "content": content},
            "304": {"description": "Not modified (If-None-Match).", "headers": cached},
        }

    if_none_match = {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
    names = sorted(n for n in ASSETS if n != INDEX)
    ui = _operation("dashboardFile", "A file of the web dashboard", None, auth, {}, ())
    ui["responses"] = {
        **served({ASSETS[n] for n in names}),
        "404": {
            "description": "No such file.",
            "content": {PROBLEM: {"schema": _ref("Problem")}},
        },
    }
    ui["parameters"] = [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": names},
        },
        if_none_match,
    ]
    index = _operation("dashboard", "The web dashboard (HTML)", None, auth, {}, ())
    index["responses"] = served({ASSETS[INDEX]})
    index["parameters"] = [if_none_match]
    return {
        "/": {"get": index, "head": _head(index, "dashboardHead")},
        "/ui/{name}": {"get": ui, "head": _head(ui, "dashboardFileHead")},
    }


def _head(get: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """HEAD of a GET: the same statuses and headers, no body."""
    responses = {
        status: {k: v for k, v in response.items() if k != "content"}
        for status, response in get["responses"].items()
    }
    return {
        **get,
        "operationId": operation_id,
        "summary": get["summary"] + " (headers only)",
        "responses": responses,
    }


def build_openapi(limits: Limits, *, auth: bool, metrics_auth: bool = False) -> dict[str, Any]:
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    paths = {
        "/v1/jobs": {
            "post": _operation(
                "submitJob",
                "Submit a job (a DAG of shell commands)",
                "submit",
                auth,
                {
                    "201": {
                        **_ok("Created.", "JobSummary"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "links": {
                            "GetJob": {
                                "operationId": "getJob",
                                "parameters": {"job_id": "$response.body#/id"},
                            },
                            "CancelJob": {
                                "operationId": "cancelJob",
                                "parameters": {"job_id": "$response.body#/id"},
                            },
                        },
                    },
                    "200": {
                        **_ok(
                            "The job an earlier request with this Idempotency-Key made.",
                            "JobSummary",
                        ),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                },
                (400, 408, 409, 413, 422, 503),
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_IDEMPOTENCY_KEY,
                        },
                    }
                ],
                requestBody={
                    "required": True,
                    "content": {JSON: {"schema": _ref("JobSubmission")}},
                },
            ),
            "get": _operation(
                "listJobs",
                "List jobs, newest first",
                "read",
                auth,
                {"200": _ok("A page of jobs.", "JobPage")},
                (422, 503),
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": [s.value for s in JobStatus]},
                    },
                ],
            ),
        },
        "/v1/jobs/{job_id}": {
            "get": _operation(
                "getJob",
                "A job with every node, attempt and output tail",
                "read",
                auth,
                {"200": _ok("The job.", "Job")},
                (404, 422, 503),
                parameters=[
                    job_id,
                    {
                        "name": "nodes",
                        "in": "query",
                        "schema": {"type": "boolean", "default": True},
                        "description": "false: the job's summary only, cheap to poll.",
                    },
                ],
            )
        },
        "/v1/jobs/{job_id}/events": {
            "get": _operation(
                "watchJob",
                "The job's changes as server-sent events, until it finished",
                "read",
                auth,
                {
                    "200": {
                        "description": "A text/event-stream: `retry: 2000`, then events, each "
                        "with an `id`, an `event` name and one `data` line of JSON. `snapshot` "
                        "(first; again after a reconnect): the job as GET /v1/jobs/{job_id} "
                        "shows it. `node`: a node that changed, as in `nodes`, plus `job_id`. "
                        "`job`: the summary changed (as with ?nodes=false). `end`: the job "
                        "finished (its summary); the stream closes. A `: keepalive` comment "
                        "comes at least every 15 s.",
                        "headers": {
                            "Cache-Control": {"schema": {"type": "string", "const": "no-store"}}
                        },
                        "content": {"text/event-stream": {"schema": _ref("JobStreamEvent")}},
                    }
                },
                (404, 503),
                parameters=[job_id],
            )
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": _operation(
                "cancelJob",
                "Cancel a job: waiting nodes are cancelled, running commands killed",
                "submit",
                auth,
                {"200": _ok("The job, as cancelled.", "Job")},
                (404, 409, 503),
                parameters=[job_id],
            )
        },
        "/healthz": {
            "get": _operation(
                "health",
                "Health of this process's dependencies",
                None,
                auth,
                {
                    "200": _ok("Every dependency answers.", "Health"),
                    "503": _ok("Some dependency does not answer.", "Health"),
                },
                (),
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics",
                "metrics" if metrics_auth else None,
                auth,
                {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                (),
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                None,
                auth,
                {"200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {}}}}},
                (),
            )
        },
        **_dashboard_paths(auth),
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "minitemporal",
            "version": __version__,
            "description": "Submit DAGs of shell commands; watch them run. Errors are RFC 9457 "
            "problem documents.",
        },
        "paths": paths,
        "components": {"schemas": {**_response_schemas(), **_request_schemas(limits)}},
    }
    if auth:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`minitemporal token create`); scopes: read, "
                "submit, metrics.",
            }
        }
    return document


class OpenApiResource:
    def __init__(self, document: dict[str, Any]) -> None:
        self._body = json.dumps(document, indent=1).encode()

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = JSON
        resp.data = self._body
