"""The web dashboard: static files of minitemporal/api/static, served by the api itself.

The files hold no data (the page fetches it from /v1 with the user's token), so their routes
are open. Only the files named in ASSETS are served, read once at start: no path from a
request ever reaches the file system. Every answer carries a strict Content-Security-Policy
(no inline script or style, nothing from another origin), so job names, commands and output
shown by the page can never run as code even if the page's own escaping had a hole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import falcon
import falcon.asgi

from minitemporal.errors import NotFound

INDEX = "index.html"

# File name -> content type. A new file in static/ is served only once it is listed here.
ASSETS = {
    INDEX: "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
    "sse.js": "text/javascript; charset=utf-8",
    "dag.js": "text/javascript; charset=utf-8",
    "jobs.js": "text/javascript; charset=utf-8",
    "job.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Revalidate every time (a 304 is cheap): a new release's files are picked up at once, since
# their URLs carry no version.
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every listed file, read from the installed package (a missing one fails the start)."""
    folder = resources.files("minitemporal.api") / "static"
    assets = {}
    for name, content_type in ASSETS.items():
        body = (folder / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


def _send(req: falcon.asgi.Request, resp: falcon.asgi.Response, asset: Asset) -> None:
    for header, value in SECURITY_HEADERS.items():
        resp.set_header(header, value)
    resp.set_header("Cache-Control", CACHE_CONTROL)
    resp.set_header("ETag", asset.etag)
    resp.content_type = asset.content_type
    if _matches(req.get_header("If-None-Match"), asset.etag):
        resp.status = falcon.HTTP_304
        return
    resp.data = asset.body


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates


class IndexResource:
    """`/`: the page itself."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self._index = assets[INDEX]

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        _send(req, resp, self._index)

    on_head = on_get  # `curl -I` and uptime checks: the headers, no body (falcon drops it)


class AssetResource:
    """`/ui/{name}`: the page's scripts, style sheet and icon; nothing else."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self._assets = assets

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        asset = self._assets.get(name)
        if asset is None or name == INDEX:
            raise NotFound(f"no dashboard file {name[:80]!r}")
        _send(req, resp, asset)

    on_head = on_get
