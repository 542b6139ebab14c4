"""GET /v1/edges/connect — the WebSocket edge engines open with their device token.

The middleware has refused a missing or wrong token (401) and any non-device token (403) before
the upgrade; the hub (federation/hub.py, federation/edge_link.py) does the rest of
docs/protocol.md: hello → welcome, a device speaking only as itself, frames until the socket closes.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.http import principal, requires
from federation.keys import HUB


@requires(Role.DEVICE)
async def edge_socket(request: web.Request) -> web.StreamResponse:
    return await request.app[HUB].serve(request, principal(request))


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/edges/connect", edge_socket, allow_head=False)
