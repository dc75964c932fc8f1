#!/usr/bin/env python3
"""Container health check: exit 0 when this container's minitemporal answers 200 on /healthz.

The image installs it as `minitemporal-healthcheck`, for the Dockerfile's HEALTHCHECK and the
compose file's. A process with the api role serves /healthz on MINITEMPORAL_API_PORT, any
other on MINITEMPORAL_METRICS_PORT. The roles usually come from the command line, which a
health check cannot see, so: MINITEMPORAL_ROLES when it is set, otherwise the api port first
and the metrics port when nothing listens there. Standard library only (it runs every few
seconds; importing minitemporal would cost more than the check).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names, not binds)


def healthz_url(host_var: str, port_var: str, default_port: str) -> str:
    """The /healthz URL of the server configured by these two settings, seen from inside."""
    host = os.environ.get(host_var, "127.0.0.1").strip()
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = os.environ.get(port_var, default_port).strip()
    return f"http://{host}:{port}/healthz"


def candidate_urls() -> list[str]:
    """Where /healthz may be, in the order to try."""
    api = healthz_url("MINITEMPORAL_API_HOST", "MINITEMPORAL_API_PORT", "8080")
    metrics = healthz_url("MINITEMPORAL_METRICS_HOST", "MINITEMPORAL_METRICS_PORT", "8081")
    roles = {r.strip().lower() for r in os.environ.get("MINITEMPORAL_ROLES", "").split(",")}
    roles.discard("")
    if not roles:
        return [api, metrics]
    return [api] if roles & {"all", "api"} else [metrics]


def check(urls: list[str]) -> tuple[bool, str]:
    """(healthy, why). The first URL that answers decides; one that refuses is skipped."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    reasons = []
    for url in urls:
        try:
            with opener.open(url, timeout=TIMEOUT_SECONDS) as reply:
                return reply.status == 200, f"{url}: {reply.status}"
        except urllib.error.HTTPError as exc:
            body = exc.read(300).decode(errors="replace")
            return False, f"{url}: {exc.code} {body}"
        except (urllib.error.URLError, OSError) as exc:
            reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
    return False, "; ".join(reasons) or "nothing to check"


def main() -> int:
    healthy, why = check(candidate_urls())
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
