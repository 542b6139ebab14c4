"""Published records (docs/protocol.md §8): the flows edges publish to, and their records in order.

    GET /v1/flows                                 → {"flows": {name: {records, rows, last_id}}}
    GET /v1/flows/{flow}?after=0&limit=1000&edge= → {"records": [{id, edge, seq, rows, …}], "next": id}
    GET /v1/flows/{flow}?newest=50                → the 50 newest records, oldest first, and `next`

Read a flow incrementally by passing the last `next` as `after`.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.http import query_int, requires
from federation.keys import HUB


@requires(Role.READ)
async def list_flows(request: web.Request) -> web.Response:
    return web.json_response({"flows": request.app[HUB].publish_log.flows()})


@requires(Role.READ)
async def read_flow(request: web.Request) -> web.Response:
    after = query_int(request, "after", 0)
    limit = query_int(request, "limit", 1000, low=1, high=10_000)
    log = request.app[HUB].publish_log
    newest = query_int(request, "newest", 0, high=10_000)
    if newest:   # where to start reading so that the newest records come, oldest first
        after = max(after, log.id_before_newest(flow=request.match_info["flow"], edge=request.query.get("edge"),
                                                n=newest))
        limit = min(limit, newest)
    records = log.read(flow=request.match_info["flow"], edge=request.query.get("edge"), after=after, limit=limit)
    return web.json_response({"records": [r.to_dict() for r in records],
                              "next": records[-1].id if records else after})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/flows", list_flows, allow_head=False)
    app.router.add_get("/v1/flows/{flow}", read_flow, allow_head=False)
