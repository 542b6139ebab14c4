"""GET /v1/edges/connect — stub: the WebSocket edge engines open with their device token.

To fill in: the caller is `principal(request)` (a device principal: `.device_id`); check the
announced id with `principal.may_act_as(announced_id)`; mark presence with
`app[REGISTRY].set_online(id, True/False)` (the index follows), store announced metadata and
capabilities with `update_device`, batch heartbeats with `record_heartbeats([...])`, and send
pending deployments from `open_targets_for(id)`. Register the socket with `track_websocket`.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import NotImplementedYet
from federation.http import requires


@requires(Role.DEVICE)
async def edge_socket(request: web.Request) -> web.StreamResponse:
    raise NotImplementedYet("the edge connection is not implemented yet")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/edges/connect", edge_socket, allow_head=False)
