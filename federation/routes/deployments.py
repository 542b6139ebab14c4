"""Deployments: the list, one deployment's progress per device (optionally waiting for it to
settle), a preflight before one starts, and the operator's cancel, abort, retry and rollback.

Deployments are created by `deploy`, `rollback` and `undeploy` statements (POST /v1/query), which
the query service hands to the deployment manager (federation/deployments.py); the operator's
actions are in federation/deployment_control.py.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import BadRequest
from federation.http import json_body, principal, query_int, requires
from federation.keys import DEPLOYMENTS, QUERY_SERVICE, REGISTRY
from federation.registry import DEPLOYMENT_STATES, TARGET_STATES
from federation.statements import principal_name

MAX_WAIT_S = 60


def _states(text: str | None, known: tuple[str, ...], what: str) -> tuple[str, ...] | None:
    """`a,b` → ("a", "b"), each checked; None when not given."""
    if not text:
        return None
    states = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in states if s not in known]
    if unknown:
        raise BadRequest(f"unknown {what} {unknown[0]!r}: one of {', '.join(known)}")
    return states


@requires(Role.READ)
async def list_deployments(request: web.Request) -> web.Response:
    states = _states(request.query.get("state"), DEPLOYMENT_STATES, "deployment state")
    registry = request.app[REGISTRY]
    found = registry.list_deployments(state=states, limit=query_int(request, "limit", 100, high=10_000),
                                      offset=query_int(request, "offset", 0))
    return web.json_response({"deployments": [
        {**d.to_dict(), "id": str(d.id), "model": d.bundle,
         "counts": {**dict.fromkeys(TARGET_STATES, 0), **registry.target_counts(d.id)}} for d in found]})


@requires(Role.READ)
async def get_deployment(request: web.Request) -> web.Response:
    manager = request.app[DEPLOYMENTS]
    wait = query_int(request, "wait", 0, high=MAX_WAIT_S)
    deployment_id = request.match_info["id"]
    device_state = _states(request.query.get("device_state"), TARGET_STATES, "device state")
    limit = query_int(request, "device_limit", -1, low=-1)
    listing = {"device_state": device_state, "device_limit": None if limit < 0 else limit,
               "device_offset": query_int(request, "device_offset", 0)}
    if wait:   # the progress it returns lists what was asked (not every device, then again)
        return web.json_response(await manager.wait(deployment_id, timeout=wait, **listing))
    return web.json_response(manager.progress(deployment_id, **listing))


def _by(request: web.Request) -> str:
    return principal_name(principal(request)) or "an operator"


@requires(Role.DEPLOY)
async def preflight(request: web.Request) -> web.Response:
    body = await json_body(request)
    text = body.get("statement") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise BadRequest('a preflight needs {"statement": "deploy model … to Edge e where …;"}')
    return web.json_response(await request.app[QUERY_SERVICE].preflight(text, principal(request)))


@requires(Role.DEPLOY)
async def cancel_deployment(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DEPLOYMENTS].cancel(request.match_info["id"], _by(request)))


@requires(Role.DEPLOY)
async def abort_deployment(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    rollback = body.get("rollback", False) if isinstance(body, dict) else False
    if not isinstance(rollback, bool):
        raise BadRequest("rollback is true or false")
    return web.json_response(await request.app[DEPLOYMENTS].abort(request.match_info["id"], _by(request),
                                                                  rollback=rollback))


@requires(Role.DEPLOY)
async def retry_deployment(request: web.Request) -> web.Response:
    manager = request.app[DEPLOYMENTS]
    new_id = await manager.retry_failed(request.match_info["id"], _by(request))
    return web.json_response({"deployment_id": new_id, "deployment": manager.progress(new_id, device_limit=0)},
                             status=201, headers={"Location": f"/v1/deployments/{new_id}"})


@requires(Role.DEPLOY)
async def rollback_deployment(request: web.Request) -> web.Response:
    manager = request.app[DEPLOYMENTS]
    new_id = await manager.roll_back(request.match_info["id"], _by(request))
    return web.json_response({"deployment_id": new_id, "deployment": manager.progress(new_id, device_limit=0)},
                             status=201, headers={"Location": f"/v1/deployments/{new_id}"})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/deployments", list_deployments, allow_head=False)
    app.router.add_post("/v1/deployments/preflight", preflight)
    app.router.add_get("/v1/deployments/{id}", get_deployment, allow_head=False)
    app.router.add_post("/v1/deployments/{id}/cancel", cancel_deployment)
    app.router.add_post("/v1/deployments/{id}/abort", abort_deployment)
    app.router.add_post("/v1/deployments/{id}/retry", retry_deployment)
    app.router.add_post("/v1/deployments/{id}/rollback", rollback_deployment)
