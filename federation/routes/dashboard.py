"""The dashboard: `/` serves static/index.html, `/static/*` the rest of federation/static/."""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from federation.http import public

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@public
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def setup(app: web.Application) -> None:
    app.router.add_get("/", index, allow_head=False)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
