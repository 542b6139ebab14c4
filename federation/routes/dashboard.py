"""The dashboard: `/` serves static/index.html, `/static/*` the rest of federation/static/ (our own
HTML, JavaScript modules and CSS; nothing is fetched from anywhere else).

The page is served with a strict Content-Security-Policy (scripts, styles and connections only to
this origin, so a token kept by the page cannot be sent elsewhere), no referrer (a `?token=` in
the address never leaks), and `no-cache` so a federation upgrade is picked up at the next load.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from federation.http import public

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",  # fetch and the query WebSocket (same host and port)
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@public
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/") and response.status < 400:
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidated (Last-Modified), never stale
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")


def setup(app: web.Application) -> None:
    app.router.add_get("/", index, allow_head=False)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    app.on_response_prepare.append(_static_headers)
