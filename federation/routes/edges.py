"""Devices: list (filtered through the selection index), provision, show, forget."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from federation.auth import Role, provision
from federation.errors import BadRequest, NotFound
from federation.http import json_body, query_int, requires
from federation.keys import INDEX, REGISTRY
from federation.registry import Device, Registry
from streamql.selection import ID, ONLINE, Eq, In, Predicate, capability, conjunction, meta

MAX_PAGE = 10_000


def _candidates(text: str) -> tuple[Any, ...]:
    """A query-string value as the string itself and, when it parses so, a JSON number or boolean."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return (text,)
    return (text, parsed) if isinstance(parsed, (int, float, bool)) and not isinstance(parsed, str) else (text,)


def predicate_from_query(query) -> Predicate:
    """`?online=true&meta.region=US&meta.region=EU&capability.ram_kb=512&id=a` → a conjunction."""
    parts: list[Predicate] = []
    keys: dict[tuple, list] = {}
    for name, value in query.items():
        if name in ("limit", "offset"):
            continue
        if name == "online":
            flag = value.lower() in ("1", "true", "yes", "on")
            if not flag and value.lower() not in ("0", "false", "no", "off"):
                raise BadRequest(f"query parameter online must be true or false, not {value!r}")
            parts.append(Eq(ONLINE, flag))
        elif name == "id":
            keys.setdefault(ID, []).append(value)
        elif name.startswith("meta.") and len(name) > 5:
            keys.setdefault(meta(name[5:]), []).extend(_candidates(value))
        elif name.startswith("capability.") and len(name) > 11:
            keys.setdefault(capability(name[11:]), []).extend(_candidates(value))
        else:
            raise BadRequest(f"unknown query parameter {name!r}: use online, id, meta.<key>, capability.<key>, "
                             "limit or offset")
    parts += [In(key, tuple(values)) for key, values in keys.items()]
    return conjunction(parts)


def edge_view(device: Device, models: dict | None) -> dict:
    out = device.to_dict()
    out["models"] = {name: mv.to_dict() for name, mv in (models or {}).items()}
    return out


def edge_views(registry: Registry, device_ids: list[str]) -> list[dict]:
    devices = registry.get_devices(device_ids)
    versions = registry.model_versions([d.id for d in devices])
    return [edge_view(d, versions.get(d.id)) for d in devices]


@requires(Role.READ)
async def list_edges(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 1000, high=MAX_PAGE)
    offset = query_int(request, "offset", 0)
    predicate = predicate_from_query(request.query)
    ids = sorted(request.app[INDEX].select(predicate))
    page = ids[offset:offset + limit]
    return web.json_response({"edges": edge_views(request.app[REGISTRY], page), "total": len(ids),
                              "limit": limit, "offset": offset})


@requires(Role.ADMIN)
async def provision_edge(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"id", "metadata", "capabilities"}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}: a device has id, metadata and capabilities")
    if "id" not in body:
        raise BadRequest("a device needs an id")
    done = provision(request.app[REGISTRY], body["id"], body.get("metadata"), body.get("capabilities"))
    return web.json_response({"id": done.device.id, "token": done.token, "edge": edge_view(done.device, {})},
                             status=201, headers={"Location": f"/v1/edges/{done.device.id}"})


@requires(Role.READ)
async def get_edge(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    device = registry.require_device(request.match_info["id"])
    return web.json_response(edge_view(device, registry.model_versions([device.id]).get(device.id)))


@requires(Role.ADMIN)
async def delete_edge(request: web.Request) -> web.Response:
    device_id = request.match_info["id"]
    if not request.app[REGISTRY].delete_device(device_id):
        raise NotFound(f"no device {device_id!r} is registered")
    return web.json_response({"deleted": device_id})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/edges", list_edges, allow_head=False)
    app.router.add_post("/v1/edges", provision_edge)
    app.router.add_get("/v1/edges/{id}", get_edge, allow_head=False)
    app.router.add_delete("/v1/edges/{id}", delete_edge)
