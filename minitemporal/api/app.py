"""The REST application: `create_app(deps)` builds it; resources get their dependencies passed in.

Every error leaves as an RFC 9457 problem document (`application/problem+json`) with a stable
`type`; domain errors are mapped in errors.py, falcon's own (404 route, 405) here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import falcon
import falcon.asgi

from minitemporal.api import serialize
from minitemporal.api.auth import AuthMiddleware, TokenSet
from minitemporal.api.dashboard import AssetResource, IndexResource, load_assets
from minitemporal.api.events import EventStreams
from minitemporal.api.openapi import OpenApiResource, build_openapi
from minitemporal.api.problems import install_problem_handlers
from minitemporal.domain.model import JobStatus
from minitemporal.domain.validation import MAX_IDEMPOTENCY_KEY, MAX_PAGE, Limits, parse_job_request
from minitemporal.errors import (
    InvalidInput,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    Problem,
    RequestTimeout,
)
from minitemporal.observability.health import Health
from minitemporal.observability.http import HealthResource, MetricsResource
from minitemporal.observability.metrics import ApiMetrics, Metrics
from minitemporal.rpc.client import SchedulerClient

MAX_CURSOR = 1024
_CURSOR = re.compile(r"[A-Za-z0-9_\-]*")


@dataclass(frozen=True, slots=True)
class ApiDeps:
    scheduler: SchedulerClient
    limits: Limits
    max_body_bytes: int
    metrics: Metrics
    health: Health
    tokens: TokenSet | None = None  # None: no authentication (loopback or --insecure-no-auth)
    metrics_auth: bool = False
    max_json_depth: int = 32
    body_timeout: float = 30.0
    events: EventStreams | None = None  # None: a default one (256 streams) of its own


async def read_json(
    req: falcon.asgi.Request, max_bytes: int, *, max_depth: int = 32, timeout: float = 30.0
) -> Any:
    """The body as JSON, refusing oversized bodies before reading them, slow ones when their
    time is up, and documents nested deeper than `max_depth`."""
    if req.content_length is not None and req.content_length > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout) as deadline:
        async for chunk in req.stream:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
            chunks.append(chunk)
    if deadline.cancelled_caught:
        raise RequestTimeout(f"the body did not arrive within {timeout:g}s")
    raw = b"".join(chunks)
    if not raw:
        raise MalformedRequest("the body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedRequest("the body is nested too deeply") from None
    except ValueError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    if _depth_exceeds(document, max_depth):
        raise MalformedRequest(f"the body nests arrays and objects deeper than {max_depth}")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        children = container.values() if isinstance(container, dict) else container
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _digest(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _query_int(req: falcon.asgi.Request, name: str, default: int) -> int:
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"bad {name}", [Problem(f"/{name}", "must be an integer")]) from None


def _query_bool(req: falcon.asgi.Request, name: str, default: bool) -> bool:
    raw = req.get_param(name)
    if raw is None:
        return default
    if raw in ("true", "false"):
        return raw == "true"
    raise InvalidInput(f"bad {name}", [Problem(f"/{name}", "must be true or false")])


def _job_id(raw: str) -> str:
    """Job ids are UUIDs: anything else names no job, and need not travel to the scheduler."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no job {raw[:80]!r}") from None


class JobsResource:
    def __init__(self, deps: ApiDeps) -> None:
        self._d = deps

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        key = req.get_header("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidInput(
                "bad Idempotency-Key",
                [
                    Problem(
                        "/headers/Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
                    )
                ],
            )
        body = await read_json(
            req,
            self._d.max_body_bytes,
            max_depth=self._d.max_json_depth,
            timeout=self._d.body_timeout,
        )
        spec = parse_job_request(body, self._d.limits)
        job, created = await self._d.scheduler.submit_job(
            spec, idempotency_key=key, request_digest=_digest(body) if key else None
        )
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.location = f"/v1/jobs/{job.id}"
        resp.media = serialize.job(job, with_nodes=False)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        limit = _query_int(req, "limit", 50)
        cursor, status = req.get_param("cursor"), req.get_param("status")
        problems = []
        if not 1 <= limit <= MAX_PAGE:  # here: the proto would turn 0 into "the default"
            problems.append(Problem("/limit", f"must be between 1 and {MAX_PAGE}"))
        if cursor is not None and not (len(cursor) <= MAX_CURSOR and _CURSOR.fullmatch(cursor)):
            problems.append(Problem("/cursor", "not a cursor we issued"))
        if status is not None and status not in {s.value for s in JobStatus}:
            choices = ", ".join(s.value for s in JobStatus)
            problems.append(Problem("/status", f"must be one of {choices}"))
        if problems:
            raise InvalidInput("bad query parameters", problems)
        page = await self._d.scheduler.list_jobs(limit=limit, cursor=cursor, status=status)
        resp.media = {
            "jobs": [serialize.job(j, with_nodes=False) for j in page.jobs],
            "next_cursor": page.next_cursor,
        }


class JobResource:
    def __init__(self, deps: ApiDeps) -> None:
        self._d = deps

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, job_id: str
    ) -> None:
        # ?nodes=false: the summary only (status, counts), cheap to poll for a large job.
        with_nodes = _query_bool(req, "nodes", default=True)
        job = await self._d.scheduler.get_job(_job_id(job_id), include_nodes=with_nodes)
        resp.media = serialize.job(job, with_nodes=with_nodes)


class JobEventsResource:
    """GET /v1/jobs/{job_id}/events: server-sent events (see api/events.py)."""

    def __init__(self, streams: EventStreams) -> None:
        self._streams = streams

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, job_id: str
    ) -> None:
        # The snapshot arrives before the response starts: no job is a 404, no scheduler 503.
        stream = await self._streams.open(_job_id(job_id))
        resp.content_type = "text/event-stream"
        resp.cache_control = ["no-store"]
        resp.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        resp.sse = stream.events()


class CancelResource:
    def __init__(self, deps: ApiDeps) -> None:
        self._d = deps

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, job_id: str
    ) -> None:
        resp.media = serialize.job(await self._d.scheduler.cancel_job(_job_id(job_id)))


class MetricsMiddleware:
    """Requests by route template (never by raw path: ids would explode the label set)."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._m = metrics

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: object, ok: bool
    ) -> None:
        route = req.uri_template or "unmatched"
        status = str(resp.status).split()[0] if resp.status else "500"
        self._m.requests.labels(req.method, route, status).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            self._m.duration.labels(req.method, route).observe(time.perf_counter() - started)


# The scope each operation needs when tokens are configured; routes not listed are open.
SCOPES = {
    ("/v1/jobs", "GET"): "read",
    ("/v1/jobs", "POST"): "submit",
    ("/v1/jobs/{job_id}", "GET"): "read",
    ("/v1/jobs/{job_id}/events", "GET"): "read",
    ("/v1/jobs/{job_id}/cancel", "POST"): "submit",
    ("/metrics", "GET"): "metrics",
}


def create_app(deps: ApiDeps) -> falcon.asgi.App:
    middleware: list[object] = [MetricsMiddleware(deps.metrics.api)]
    if deps.tokens is not None:
        middleware.append(AuthMiddleware(deps.tokens, SCOPES, open_routes(deps.metrics_auth)))
    app = falcon.asgi.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = True  # `?limit=` is a bad limit, not "no limit given"
    install_problem_handlers(app)
    assets = load_assets()
    app.add_route("/", IndexResource(assets))
    app.add_route("/ui/{name}", AssetResource(assets))
    app.add_route("/v1/jobs", JobsResource(deps))
    app.add_route("/v1/jobs/{job_id}", JobResource(deps))
    app.add_route("/v1/jobs/{job_id}/cancel", CancelResource(deps))
    events = deps.events if deps.events is not None else EventStreams(deps.scheduler)
    app.add_route("/v1/jobs/{job_id}/events", JobEventsResource(events))
    app.add_route("/healthz", HealthResource(deps.health))
    app.add_route("/metrics", MetricsResource(deps.metrics.registry))
    app.add_route(
        "/openapi.json",
        OpenApiResource(
            build_openapi(deps.limits, auth=deps.tokens is not None, metrics_auth=deps.metrics_auth)
        ),
    )
    return app


def open_routes(metrics_auth: bool) -> set[str]:
    """Routes that need no token: probes, the API's description, the dashboard's files (they
    hold no data: the page asks for a token to fetch it), and maybe /metrics."""
    always = {"/healthz", "/openapi.json", "/", "/ui/{name}"}
    return always | (set() if metrics_auth else {"/metrics"})
