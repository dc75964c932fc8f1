"""The REST application: `create_app(deps)` builds it; resources get their dependencies passed in.

Every error leaves as an RFC 9457 problem document (`application/problem+json`) with a stable
`type`; domain errors are mapped in errors.py, falcon's own (404 route, 405) here.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi

from minitemporal.api import serialize
from minitemporal.api.problems import install_problem_handlers
from minitemporal.domain.validation import Limits, parse_job_request
from minitemporal.errors import InvalidInput, MalformedRequest, PayloadTooLarge, Problem
from minitemporal.observability.health import Health
from minitemporal.observability.http import HealthResource, MetricsResource
from minitemporal.observability.metrics import ApiMetrics, Metrics
from minitemporal.rpc.client import SchedulerClient

MAX_IDEMPOTENCY_KEY = 256


@dataclass(frozen=True, slots=True)
class ApiDeps:
    scheduler: SchedulerClient
    limits: Limits
    max_body_bytes: int
    metrics: Metrics
    health: Health


async def read_json(req: falcon.asgi.Request, max_bytes: int) -> Any:
    """The body as JSON, refusing oversized bodies before reading them."""
    if req.content_length is not None and req.content_length > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in req.stream:
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise MalformedRequest("the body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedRequest("the body is nested too deeply") from None
    except ValueError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
        body = await read_json(req, self._d.max_body_bytes)
        spec = parse_job_request(body, self._d.limits)
        job, created = await self._d.scheduler.submit_job(
            spec, idempotency_key=key, request_digest=_digest(body) if key else None
        )
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.location = f"/v1/jobs/{job.id}"
        resp.media = serialize.job(job, with_nodes=False)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        page = await self._d.scheduler.list_jobs(
            limit=_query_int(req, "limit", 50),
            cursor=req.get_param("cursor"),
            status=req.get_param("status"),
        )
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
        with_nodes = req.get_param_as_bool("nodes", default=True)
        job = await self._d.scheduler.get_job(job_id, include_nodes=with_nodes)
        resp.media = serialize.job(job, with_nodes=with_nodes)


class CancelResource:
    def __init__(self, deps: ApiDeps) -> None:
        self._d = deps

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, job_id: str
    ) -> None:
        resp.media = serialize.job(await self._d.scheduler.cancel_job(job_id))


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


def create_app(deps: ApiDeps) -> falcon.asgi.App:
    app = falcon.asgi.App(middleware=[MetricsMiddleware(deps.metrics.api)])
    app.req_options.strip_url_path_trailing_slash = True
    install_problem_handlers(app)
    app.add_route("/v1/jobs", JobsResource(deps))
    app.add_route("/v1/jobs/{job_id}", JobResource(deps))
    app.add_route("/v1/jobs/{job_id}/cancel", CancelResource(deps))
    app.add_route("/healthz", HealthResource(deps.health))
    app.add_route("/metrics", MetricsResource(deps.metrics.registry))
    return app
