"""Devices: fleet views (filtered, sorted, paged and projected from the fleet table; a summary),
provision, show, forget."""
from __future__ import annotations

import json
import re

from aiohttp import web

from federation.auth import Role, provision, provision_many
from federation.errors import BadRequest, NotFound
from federation.fleet_table import FleetTable, honest_health
from federation.fleet_views import selected_rows, sort_key
from federation.http import json_body, query_int, requires
from federation.keys import FLEET, REGISTRY
from federation.registry import Device, Registry

MAX_PAGE = 10_000
MAX_PROVISION_BATCH = 1000   # devices one POST /v1/edges {"devices": [...]} may register
EDGE_CAPABILITIES = ("ram_kb", "flash_kb", "cpu")   # what an edge's config may declare of itself


def edge_view(device: Device, models: dict | None) -> dict:
    out = device.to_dict()
    out["health"] = honest_health(device)
    out["models"] = {name: mv.to_dict() for name, mv in (models or {}).items()}
    return out


def edge_views(registry: Registry, device_ids: list[str]) -> list[dict]:
    devices = registry.get_devices(device_ids)
    versions = registry.model_versions([d.id for d in devices])
    return [edge_view(d, versions.get(d.id)) for d in devices]


@requires(Role.READ)
async def list_edges(request: web.Request) -> web.Response:
    """A page of the fleet view (federation/fleet_views.py); with `since=<cursor>`, of the page's
    devices only those that changed after it (`ids` keeps the page's order)."""
    limit = query_int(request, "limit", 1000, high=MAX_PAGE)
    offset = query_int(request, "offset", 0)
    fields = request.query.get("fields", "full")
    if fields not in ("full", "compact"):
        raise BadRequest(f"fields must be full or compact, not {fields!r}")
    since = query_int(request, "since", -1, low=-1) if request.query.get("since") else None
    key = sort_key(request.query)
    table: FleetTable = request.app[FLEET]
    rows, missing_after_s = await selected_rows(request)
    page = table.sort(rows, key)[offset:offset + limit]
    now = table.clock()
    shown = page if since is None else [r for r in page if r.changed > since]
    view = (lambda r: r.compact(now, missing_after_s)) if fields == "compact" else (lambda r: r.full(now, missing_after_s))
    out = {"edges": [view(r) for r in shown], "total": len(rows), "limit": limit, "offset": offset,
           "sort": key, "cursor": table.cursor, "fleet": table.status_counts(missing_after_s)}
    if since is not None:
        out["since"] = since
        out["ids"] = [r.device.id for r in page]
    return web.json_response(out)


@requires(Role.READ)
async def edges_summary(request: web.Request) -> web.Response:
    """Counts of the devices the filters select: by status, metadata key and value, model version,
    attention reason."""
    rows, missing_after_s = await selected_rows(request)
    return web.json_response(request.app[FLEET].summary(rows, missing_after_s=missing_after_s))


@requires(Role.ADMIN)
async def provision_edge(request: web.Request) -> web.Response:
    """One device ({id, metadata, capabilities}), or many in one transaction ({"devices": [...]}:
    all registered or none; the answer lists each id with its token, in order)."""
    body = await json_body(request)
    if "devices" in body:
        return _provision_batch(request, body)
    unknown = set(body) - {"id", "metadata", "capabilities"}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}: a device has id, metadata and capabilities")
    if "id" not in body:
        raise BadRequest("a device needs an id")
    done = provision(request.app[REGISTRY], body["id"], body.get("metadata"), body.get("capabilities"))
    config = edge_config(done.device, done.token, str(request.url.origin()))
    return web.json_response({"id": done.device.id, "token": done.token, "edge": edge_view(done.device, {}),
                              "config": config},
                             status=201, headers={"Location": f"/v1/edges/{done.device.id}"})


def _provision_batch(request: web.Request, body: dict) -> web.Response:
    if set(body) != {"devices"}:
        raise BadRequest(f"unknown fields {sorted(set(body) - {'devices'})}: a batch has only devices")
    devices = body["devices"]
    if not isinstance(devices, list) or not 1 <= len(devices) <= MAX_PROVISION_BATCH:
        raise BadRequest(f"devices must be a list of 1 to {MAX_PROVISION_BATCH} devices")
    rows = []
    for i, item in enumerate(devices):
        if not isinstance(item, dict) or "id" not in item:
            raise BadRequest(f"devices[{i}] needs an id")
        unknown = set(item) - {"id", "metadata", "capabilities"}
        if unknown:
            raise BadRequest(f"devices[{i}]: unknown fields {sorted(unknown)}")
        rows.append((item["id"], item.get("metadata"), item.get("capabilities")))
    ids = [row[0] for row in rows]
    if len(set(map(str, ids))) != len(ids):
        raise BadRequest("devices: an id appears twice")
    made = provision_many(request.app[REGISTRY], rows)
    return web.json_response({"edges": [{"id": device_id, "token": token} for device_id, token in made]}, status=201)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or isinstance(value, str):
        return json.dumps(value)   # a JSON string or number is a TOML one
    return None   # tables and lists are not provisioned metadata an edge can repeat


def edge_config(device: Device, token: str, federation: str) -> str:
    """An `edge.toml` for a newly provisioned device (edge_engine/config.py reads it)."""
    lines = ["# streamql edge --config edge.toml   (keep this file private: it holds the device's token)",
             f"id = {json.dumps(device.id)}", f"federation = {json.dumps(federation)}", f"token = {json.dumps(token)}",
             f"store = {json.dumps('state-' + device.id)}"]
    meta = [(k, _toml_value(v)) for k, v in sorted(device.metadata.items())]
    if any(v is not None for _, v in meta):
        lines += ["", "[metadata]"] + [f"{_toml_key(k)} = {v}" for k, v in meta if v is not None]
    caps = [(k, _toml_value(device.capabilities.get(k))) for k in EDGE_CAPABILITIES]
    if any(v is not None for _, v in caps):
        lines += ["", "[capabilities]"] + [f"{k} = {v}" for k, v in caps if v is not None]
    return "\n".join(lines) + "\n"


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
    app.router.add_get("/v1/edges/summary", edges_summary, allow_head=False)
    app.router.add_get("/v1/edges/{id}", get_edge, allow_head=False)
    app.router.add_delete("/v1/edges/{id}", delete_edge)
