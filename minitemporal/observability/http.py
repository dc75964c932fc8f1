"""/healthz and /metrics as falcon resources, and the small app that serves only them (the
scheduler or worker in a process without the api role)."""

from __future__ import annotations

import falcon
import falcon.asgi
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from minitemporal.api.problems import install_problem_handlers
from minitemporal.observability.health import Health


class HealthResource:
    def __init__(self, health: Health) -> None:
        self._health = health

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        ok, results = await self._health.run()
        resp.status = falcon.HTTP_200 if ok else falcon.HTTP_503
        resp.set_header("Cache-Control", "no-store")
        resp.media = {
            "status": "ok" if ok else "unavailable",
            "checks": {
                r.name: {
                    "ok": r.ok,
                    "latency_ms": r.latency_ms,
                    **({"error": r.error} if r.error else {}),
                }
                for r in results
            },
        }


class MetricsResource:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)


def create_ops_app(
    health: Health, registry: CollectorRegistry, middleware: list[object] | None = None
) -> falcon.asgi.App:
    """`middleware`: the api's authentication, when /metrics needs a token."""
    app = falcon.asgi.App(middleware=middleware or [])
    install_problem_handlers(app)
    app.add_route("/healthz", HealthResource(health))
    app.add_route("/metrics", MetricsResource(registry))
    return app
