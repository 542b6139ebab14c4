"""Service routes: liveness, Prometheus metrics, the OpenAPI document."""
from __future__ import annotations

from aiohttp import web

from federation import openapi
from federation.auth import Role
from federation.http import public, requires
from federation.keys import METRICS, REGISTRY
from federation.metrics import CONTENT_TYPE


@public
async def healthz(request: web.Request) -> web.Response:
    request.app[REGISTRY].device_count()  # the registry answers
    return web.json_response({"status": "ok"})


@public
async def metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS].render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


@requires(Role.READ)
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(server_url=f"{request.scheme}://{request.host}"))


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi_json, allow_head=False)
