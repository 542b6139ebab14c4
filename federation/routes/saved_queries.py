"""Saved queries: named statements kept in the registry, shared by name (the dashboard links them
as `#query/saved/<name>`)."""
from __future__ import annotations

import re

from aiohttp import web

from federation.auth import Role
from federation.errors import BadRequest, NotFound
from federation.http import check_statement_size, json_body, principal, requires
from federation.keys import REGISTRY
from federation.statements import principal_name

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:-]{0,99}")


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise BadRequest("a saved query's name is 1 to 100 letters, digits, spaces, '.', '_', ':' or '-', "
                         "starting with a letter or digit")
    return name


@requires(Role.READ)
async def list_saved(request: web.Request) -> web.Response:
    return web.json_response({"queries": request.app[REGISTRY].saved_queries()})


@requires(Role.READ)
async def get_saved(request: web.Request) -> web.Response:
    found = request.app[REGISTRY].saved_query(_name(request))
    if found is None:
        raise NotFound(f"no saved query {request.match_info['name']!r}")
    return web.json_response(found)


@requires(Role.READ)
async def put_saved(request: web.Request) -> web.Response:
    name = _name(request)
    body = await json_body(request)
    unknown = set(body) - {"text", "description"}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}: a saved query has text and description")
    text, description = body.get("text"), body.get("description", "")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("a saved query needs its text")
    if not isinstance(description, str) or len(description) > 1000:
        raise BadRequest("a description is a string of at most 1000 characters")
    check_statement_size(request, text)
    registry = request.app[REGISTRY]
    existed = registry.saved_query(name) is not None
    saved = registry.save_query(name, text, description=description,
                                created_by=principal_name(principal(request)) or "")
    return web.json_response(saved, status=200 if existed else 201)


@requires(Role.READ)
async def delete_saved(request: web.Request) -> web.Response:
    name = _name(request)
    if not request.app[REGISTRY].delete_saved_query(name):
        raise NotFound(f"no saved query {name!r}")
    return web.json_response({"deleted": name})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/saved-queries", list_saved, allow_head=False)
    app.router.add_get("/v1/saved-queries/{name}", get_saved, allow_head=False)
    app.router.add_put("/v1/saved-queries/{name}", put_saved)
    app.router.add_delete("/v1/saved-queries/{name}", delete_saved)
