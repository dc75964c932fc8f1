"""Errors as RFC 9457 problem documents: domain errors and falcon's own (404 route, 405)."""

from __future__ import annotations

import json
from typing import Any

import falcon
import falcon.asgi

from minitemporal.errors import PROBLEM_BASE, AccessError, MinitemporalError

PROBLEM_JSON = "application/problem+json"


async def _domain_error(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    exc: MinitemporalError,
    params: dict[str, Any],
) -> None:
    resp.status = exc.http_status
    resp.content_type = PROBLEM_JSON
    resp.text = json.dumps(exc.to_problem(instance=req.path))
    if exc.http_status == 503:
        resp.set_header("Retry-After", "1")
    if isinstance(exc, AccessError) and exc.challenge:
        resp.set_header("WWW-Authenticate", exc.challenge)


def _http_error_serializer(
    req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError
) -> None:
    slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
        exc.status_code, "http-error"
    )
    body = {
        "type": PROBLEM_BASE + slug,
        "title": exc.title,
        "status": exc.status_code,
        "detail": exc.description or exc.title,
        "instance": req.path,
    }
    resp.content_type = PROBLEM_JSON
    resp.text = json.dumps(body)


def install_problem_handlers(app: falcon.asgi.App) -> None:
    app.add_error_handler(MinitemporalError, _domain_error)
    app.set_error_serializer(_http_error_serializer)
