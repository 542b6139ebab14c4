"""Typed keys for what the application and each request carry (instead of string keys).

The hub, the deployer and the query service are typed by name (their modules import this one).
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from aiohttp import web

from federation.auth import Principal
from federation.config import FederationConfig
from federation.fleet_table import FleetTable
from federation.heartbeats import HeartbeatBuffer
from federation.index import SelectionIndex
from federation.metrics import FederationMetrics
from federation.registry import Registry

if TYPE_CHECKING:
    from federation.deployments import DeploymentManager
    from federation.hub import EdgeHub
    from federation.limits import RequestLimiter, UploadSlots
    from federation.sessions import Sessions
    from federation.statements import QueryService

CONFIG = web.AppKey("config", FederationConfig)
REGISTRY = web.AppKey("registry", Registry)  # set while the app runs (cleanup_ctx)
INDEX = web.AppKey("index", SelectionIndex)  # in sync with REGISTRY
FLEET = web.AppKey("fleet", FleetTable)  # every device's listing row, in sync with REGISTRY and heartbeats
METRICS = web.AppKey("metrics", FederationMetrics)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet)  # every open WebSocketResponse, closed on shutdown
HEARTBEATS = web.AppKey("heartbeats", HeartbeatBuffer)  # add(Heartbeat(…)); flushed every second
BOOTSTRAP_TOKEN = web.AppKey("bootstrap_token", str)  # only on the first start of a data directory
HUB = web.AppKey["EdgeHub"]("hub")  # connected edges: fragments, published records, sending frames
DEPLOYMENTS = web.AppKey["DeploymentManager"]("deployments")  # start / progress / wait
# The statement service (federation/statements.py: `create_query_service(app)`); tests and
# embedders may set it before the app starts.
QUERY_SERVICE = web.AppKey["QueryService"]("query_service")
SESSIONS = web.AppKey["Sessions"]("sessions")  # open WebSockets and requests per token id (revocation)
LIMITER = web.AppKey["RequestLimiter"]("limiter")  # per-token request rate and concurrency
UPLOADS = web.AppKey["UploadSlots"]("uploads")  # bundle uploads checked at once

# the authenticated caller of a request (absent on public routes)
PRINCIPAL = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "streamql.principal"
