"""Model bundles: upload a signed bundle (verified against the configured trusted keys), list them.

An upload is checked by federation/bundle_check.py — signature and declared sizes before anything
is inflated — in a worker thread, at most `max_uploads` at once (others: 429, Retry-After).
"""
from __future__ import annotations

import asyncio
from urllib.parse import quote

from aiohttp import web

from federation.auth import Role
from federation.bundle_check import BundleLimits, check_bundle
from federation.errors import BadRequest
from federation.http import body_limit, principal, read_body, requires
from federation.keys import CONFIG, REGISTRY, UPLOADS


def bundle_view(bundle, parsed=None) -> dict:
    out = bundle.to_dict()
    manifest = bundle.manifest or {}
    out["requirements"] = manifest.get("requirements") or {}
    out["models"] = [{"name": m.get("name"),
                      "variants": [v.get("id") for v in (m.get("variants") or [])] or None}
                     for m in manifest.get("models") or []]
    if parsed is not None:
        out["signed_by"] = parsed.signed_by
        out["verified_by"] = parsed.verified_by
    return out


@requires(Role.READ)
async def list_models(request: web.Request) -> web.Response:
    bundles = request.app[REGISTRY].list_bundles(request.query.get("name"))
    return web.json_response({"models": [bundle_view(b) for b in bundles]})


def _limits(config) -> BundleLimits:
    return BundleLimits(max_members=config.max_bundle_members, max_unpacked_bytes=config.max_bundle_unpacked_bytes,
                        max_ratio=config.max_bundle_ratio)


@requires(Role.DEPLOY)
@body_limit()
async def upload_model(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    # a slot before the body: a burst of uploads neither queues up their bodies nor the checks
    with request.app[UPLOADS].acquire():
        data = await read_body(request)
        if not data:
            raise BadRequest("the body must be a packed bundle file (streamql model pack, then sign)")
        # checked off the event loop: signature and declared sizes first, then capped streaming
        # inflation (federation/bundle_check.py), so a zip bomb costs neither memory nor the loop
        parsed = await asyncio.to_thread(check_bundle, data, list(config.trusted_keys),
                                         allow_unsigned=config.allow_unsigned_bundles, limits=_limits(config))
    if not 0 < len(parsed.name) <= 256 or not parsed.version:
        raise BadRequest("a bundle's name is 1 to 256 characters and it needs a version")
    registry = request.app[REGISTRY]
    existed = registry.get_bundle(parsed.name, parsed.version) is not None
    stored = registry.add_bundle(parsed.name, parsed.version, data, parsed.manifest, uploader=principal(request).name)
    status = 200 if existed else 201
    return web.json_response({**bundle_view(stored, parsed), "created": not existed}, status=status,
                             headers={"Location": f"/v1/models?name={quote(parsed.name)}"})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models, allow_head=False)
    app.router.add_post("/v1/models", upload_model)
