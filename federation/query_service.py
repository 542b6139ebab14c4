"""The contract between the query routes and the fleet-query service (federation/fleet/).

The routes (`POST /v1/query`, `GET /v1/query/ws`) only know these two protocols:

    result = await app[QUERY_SERVICE].run(text, principal)   # QueryError at once for bad input
    result.columns, result.types, result.kind                # kind: bag | stream | vector | statement
                                                             #       | explain | deployment
    async for row in result.rows(): ...                      # one list per row, the selected columns
    result.status                                            # edge id → {outcome, rows, reason, …}
    await result.aclose()                                    # the client went away: cancel

The service is made at startup by `create_query_service(app)` in `federation/fleet/service.py`
(sync or async; it may use app[REGISTRY], app[INDEX], app[HUB], app[DEPLOYMENTS], app[CONFIG],
app[METRICS]); when the result has `aclose()` or `close()`, it is called at shutdown. Tests and
embedders may instead set app[QUERY_SERVICE] before the app starts.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

log = logging.getLogger("streamql.federation")

SERVICE_MODULE = "federation.fleet.service"
RESULT_KINDS = ("bag", "stream", "vector", "statement", "explain", "deployment")


@runtime_checkable
class FleetResult(Protocol):
    columns: list[str]
    types: list[str]
    kind: str
    message: str | None
    deployment_id: str | None
    status: dict

    def rows(self) -> AsyncIterator[list]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class QueryService(Protocol):
    async def run(self, text: str, principal: Any) -> FleetResult: ...


async def load_query_service(app: web.Application) -> Any | None:
    """The service made by federation/fleet/service.py, or None while that module does not exist."""
    try:
        module = importlib.import_module(SERVICE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in (SERVICE_MODULE, "federation.fleet"):
            return None
        log.exception("the fleet query service cannot be imported; fleet queries answer 501")
        return None
    except Exception:
        log.exception("the fleet query service cannot be imported; fleet queries answer 501")
        return None
    factory = getattr(module, "create_query_service", None)
    if factory is None:
        log.warning("%s has no create_query_service(app); fleet queries answer 501", SERVICE_MODULE)
        return None
    service = factory(app)
    if inspect.isawaitable(service):
        service = await service
    return service


async def close_query_service(service: Any) -> None:
    for name in ("aclose", "close"):
        method = getattr(service, name, None)
        if method is not None:
            done = method()
            if inspect.isawaitable(done):
                await done
            return
