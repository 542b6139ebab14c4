"""Tokens: create (shown once), list (never the secret), revoke (at once: its open WebSockets are
closed with 4003 and its requests in flight cancelled, federation/sessions.py); and `GET /v1/me`,
what the caller's own token may do (the dashboard hides what it may not)."""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role, check_device_id, create_token
from federation.errors import BadRequest, NotFound
from federation.http import json_body, principal, query_flag, requires
from federation.keys import REGISTRY, SESSIONS


@requires(Role.ADMIN)
async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"role", "label", "device"}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}: a token has role, label or device")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > 200:
        raise BadRequest("label must be a string of at most 200 characters")
    registry = request.app[REGISTRY]
    if "device" in body:
        if "role" in body:
            raise BadRequest("give either a role or a device, not both")
        device = registry.require_device(check_device_id(body["device"]))
        record, token = create_token(registry, Role.DEVICE, label=label or "device", device_id=device.id)
    else:
        role = Role.parse(body.get("role", ""))
        if role is Role.DEVICE:
            raise BadRequest("a device token is made with {\"device\": id}, not a role")
        record, token = create_token(registry, role, label=label)
    return web.json_response({**record.to_dict(), "token": token}, status=201)


@requires(Role.ADMIN)
async def list_tokens(request: web.Request) -> web.Response:
    records = request.app[REGISTRY].list_tokens(include_revoked=bool(query_flag(request, "revoked")))
    if query_flag(request, "devices") is False:   # the people's and programs' tokens only
        records = [r for r in records if r.device_id is None]
    return web.json_response({"tokens": [r.to_dict() for r in records]})


@requires(Role.ADMIN)
async def revoke(request: web.Request) -> web.Response:
    try:
        token_id = int(request.match_info["id"])
    except ValueError:
        raise BadRequest("a token id is an integer") from None
    if not request.app[REGISTRY].revoke_token(token_id):
        raise NotFound(f"no active token {token_id}")
    ended = await request.app[SESSIONS].revoke(token_id, "the token was revoked")
    return web.json_response({"revoked": token_id, "closed": ended})


@requires(Role.READ)
async def me(request: web.Request) -> web.Response:
    caller = principal(request)
    record = request.app[REGISTRY].get_token(caller.token_id) if caller.token_id is not None else None
    return web.json_response({
        "role": caller.role.name.lower(), "token_id": caller.token_id,
        "label": record.label if record is not None else None,
        "may": {"read": caller.allows(Role.READ), "deploy": caller.allows(Role.DEPLOY),
                "admin": caller.allows(Role.ADMIN)}})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/me", me, allow_head=False)
    app.router.add_get("/v1/tokens", list_tokens, allow_head=False)
    app.router.add_post("/v1/tokens", create)
    app.router.add_delete("/v1/tokens/{id}", revoke)
