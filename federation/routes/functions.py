"""GET /v1/functions — every function a statement on this federation may call: the built-in
library, the fleet functions (one per metadata key among them), the functions defined at the
federation (kept in the registry) and the functions the edges announced (they run there)."""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.http import requires
from federation.routes.query import query_service


@requires(Role.READ)
async def list_functions(request: web.Request) -> web.Response:
    service = query_service(request.app)
    return web.json_response({"functions": await service.list_functions()})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/functions", list_functions, allow_head=False)
