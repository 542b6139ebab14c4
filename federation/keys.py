"""Typed keys for what the application and each request carry (instead of string keys).

Parts written later add their own here, next to these: e.g. the edge hub
(`HUB = web.AppKey("hub", EdgeHub)`), the query service and the deployer.
"""
from __future__ import annotations

import weakref

from aiohttp import web

from federation.auth import Principal
from federation.config import FederationConfig
from federation.heartbeats import HeartbeatBuffer
from federation.index import SelectionIndex
from federation.metrics import FederationMetrics
from federation.registry import Registry

CONFIG = web.AppKey("config", FederationConfig)
REGISTRY = web.AppKey("registry", Registry)  # set while the app runs (cleanup_ctx)
INDEX = web.AppKey("index", SelectionIndex)  # in sync with REGISTRY
METRICS = web.AppKey("metrics", FederationMetrics)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet)  # every open WebSocketResponse, closed on shutdown
HEARTBEATS = web.AppKey("heartbeats", HeartbeatBuffer)  # add(Heartbeat(…)); flushed every second
BOOTSTRAP_TOKEN = web.AppKey("bootstrap_token", str)  # only on the first start of a data directory

# the authenticated caller of a request (absent on public routes)
PRINCIPAL = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "streamql.principal"
