"""The HTTP routes, one module per area; each module has `setup(app)` adding its routes.

Adding or filling in a route:
1. describe it in `federation/openapi.py` (`OPERATIONS`: summary, `x-streamql-role`, bodies);
2. write the handler in its module here, marked `@requires(Role.READ | DEPLOY | ADMIN | DEVICE)`
   or `@public` (unmarked handlers need admin), using the helpers of `federation.http`
   (`principal`, `json_body`, `read_body` with `@body_limit()`, `track_websocket`) and the app's
   typed keys in `federation.keys` (`REGISTRY`, `INDEX`, `METRICS`, `HEARTBEATS`, `CONFIG`);
3. raise `federation.errors` (or any `QueryError`) for bad input: the error middleware answers
   `{"error": {kind, message, line, column}}` with its 4xx status;
4. resources with a lifetime go in `app.cleanup_ctx` in `federation/app.py`, in dependency order
   (registry → heartbeats → hub → deployments → query service), each with its `web.AppKey` in
   `federation/keys.py` (`HUB`, `DEPLOYMENTS`, `QUERY_SERVICE`).
A test (tests/federation/test_federation_app.py) checks that the served routes, their roles and
the OpenAPI document agree.

The query routes reach the statement service (federation/statements.py) through app[QUERY_SERVICE].
Order matters: `edges_connect` comes before `edges` so that `/v1/edges/connect` is not taken for the
device id "connect".
"""
from __future__ import annotations

from aiohttp import web

from federation.routes import (
    dashboard,
    deployments,
    edges,
    edges_connect,
    flows,
    functions,
    models,
    query,
    query_ws,
    saved_queries,
    system,
    tokens,
)

ROUTE_MODULES = (
    system,         # /healthz, /metrics, /v1/openapi.json
    query,          # POST /v1/query
    functions,      # GET /v1/functions
    query_ws,       # GET /v1/query/ws
    edges_connect,  # GET /v1/edges/connect (the edge hub)
    edges,          # /v1/edges, /v1/edges/{id}
    tokens,         # /v1/tokens, /v1/tokens/{id}
    models,         # GET /v1/models; POST /v1/models
    deployments,    # GET /v1/deployments[/{id}]
    flows,          # GET /v1/flows[/{flow}]: published records
    saved_queries,  # /v1/saved-queries[/{name}]
    dashboard,      # / and /static/*
)


def setup_routes(app: web.Application) -> None:
    for module in ROUTE_MODULES:
        module.setup(app)
