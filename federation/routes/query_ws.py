"""GET /v1/query/ws — stub: a WebSocket to submit, stream and cancel statements.

To fill in: `ws = web.WebSocketResponse(heartbeat=…); await ws.prepare(request)`, then
`track_websocket(request, ws)` (from federation.http) so shutdown closes it with GOING_AWAY.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import NotImplementedYet
from federation.http import requires


@requires(Role.READ)
async def query_socket(request: web.Request) -> web.StreamResponse:
    raise NotImplementedYet("the query WebSocket is not implemented yet")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/query/ws", query_socket, allow_head=False)
