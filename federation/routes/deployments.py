"""Deployment progress: the list, and one deployment per device (optionally waiting for it to settle).

Deployments are created by `deploy`, `rollback` and `undeploy` statements (POST /v1/query), which
the query service hands to the deployment manager (federation/deployments.py).
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import BadRequest
from federation.http import query_int, requires
from federation.keys import DEPLOYMENTS, REGISTRY
from federation.registry import DEPLOYMENT_STATES, TARGET_STATES

MAX_WAIT_S = 60


@requires(Role.READ)
async def list_deployments(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in DEPLOYMENT_STATES:
        raise BadRequest(f"unknown deployment state {state!r}: one of {', '.join(DEPLOYMENT_STATES)}")
    registry = request.app[REGISTRY]
    found = registry.list_deployments(state=state, limit=query_int(request, "limit", 100, high=10_000),
                                      offset=query_int(request, "offset", 0))
    return web.json_response({"deployments": [
        {**d.to_dict(), "id": str(d.id), "model": d.bundle,
         "counts": {**dict.fromkeys(TARGET_STATES, 0), **registry.target_counts(d.id)}} for d in found]})


@requires(Role.READ)
async def get_deployment(request: web.Request) -> web.Response:
    manager = request.app[DEPLOYMENTS]
    wait = query_int(request, "wait", 0, high=MAX_WAIT_S)
    deployment_id = request.match_info["id"]
    if wait:
        return web.json_response(await manager.wait(deployment_id, timeout=wait))
    return web.json_response(manager.progress(deployment_id))


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/deployments", list_deployments, allow_head=False)
    app.router.add_get("/v1/deployments/{id}", get_deployment, allow_head=False)
