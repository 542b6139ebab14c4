"""POST /v1/query — stub until the fleet-query planner exists.

To fill in: parse/plan with the engine's public API, select devices with `app[INDEX]` (predicates
from `federation.selection`), stream rows as NDJSON (`application/x-ndjson`) or msgpack, end with
`{"status": {…}}`; count with `app[METRICS].queries_running`, `.query_rows`, `.query_rows_rate`.
Any `QueryError` raised before the response is prepared becomes a 4xx JSON error by itself.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import NotImplementedYet
from federation.http import requires


@requires(Role.READ)
async def run_query(request: web.Request) -> web.StreamResponse:
    raise NotImplementedYet("fleet queries are not implemented yet")


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/query", run_query)
