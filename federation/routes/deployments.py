"""Deployment progress from the registry; the deployer (written later) creates and drives them."""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import BadRequest, NotFound
from federation.http import query_int, requires
from federation.keys import REGISTRY
from federation.registry import DEPLOYMENT_STATES


@requires(Role.READ)
async def list_deployments(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in DEPLOYMENT_STATES:
        raise BadRequest(f"unknown deployment state {state!r}: one of {', '.join(DEPLOYMENT_STATES)}")
    registry = request.app[REGISTRY]
    found = registry.list_deployments(state=state, limit=query_int(request, "limit", 100, high=10_000))
    return web.json_response({"deployments": [{**d.to_dict(), "counts": registry.target_counts(d.id)}
                                              for d in found]})


@requires(Role.READ)
async def get_deployment(request: web.Request) -> web.Response:
    try:
        deployment_id = int(request.match_info["id"])
    except ValueError:
        raise BadRequest("a deployment id is an integer") from None
    registry = request.app[REGISTRY]
    deployment = registry.get_deployment(deployment_id)
    if deployment is None:
        raise NotFound(f"no deployment {deployment_id}")
    return web.json_response({**deployment.to_dict(), "counts": registry.target_counts(deployment_id),
                              "targets": [t.to_dict() for t in registry.deployment_targets(deployment_id)]})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/deployments", list_deployments, allow_head=False)
    app.router.add_get("/v1/deployments/{id}", get_deployment, allow_head=False)
