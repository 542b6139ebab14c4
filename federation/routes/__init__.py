"""The HTTP routes, one module per area; each module has `setup(app)` adding its routes.

Modules marked "stub" answer 501 until their owners fill them in (the OpenAPI document in
`federation/openapi.py` already describes them). Order matters: `edges_connect` comes before
`edges` so that `/v1/edges/connect` is not taken for the device id "connect".
"""
from __future__ import annotations

from aiohttp import web

from federation.routes import (
    dashboard,
    deployments,
    edges,
    edges_connect,
    models,
    query,
    query_ws,
    system,
    tokens,
)

ROUTE_MODULES = (
    system,         # /healthz, /metrics, /v1/openapi.json
    query,          # POST /v1/query (stub)
    query_ws,       # GET /v1/query/ws (stub)
    edges_connect,  # GET /v1/edges/connect (stub)
    edges,          # /v1/edges, /v1/edges/{id}
    tokens,         # /v1/tokens, /v1/tokens/{id}
    models,         # GET /v1/models; POST /v1/models (stub)
    deployments,    # GET /v1/deployments[/{id}]
    dashboard,      # / and /static/*
)


def setup_routes(app: web.Application) -> None:
    for module in ROUTE_MODULES:
        module.setup(app)
