"""Model bundles: upload a signed bundle (verified against the configured trusted keys), list them."""
from __future__ import annotations

import asyncio

from aiohttp import web

from federation.auth import Role
from federation.errors import BadRequest, Forbidden
from federation.http import body_limit, principal, read_body, requires
from federation.keys import CONFIG, REGISTRY
from streamql import models


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


def _verify(data: bytes, config) -> models.Bundle:
    parsed = models.read_bundle(data)  # what is not a bundle at all is a 400 before any trust question
    if config.trusted_keys:
        return models.read_bundle(data, trusted_keys=list(config.trusted_keys))
    if config.allow_unsigned_bundles:
        return parsed
    raise Forbidden("this federation accepts only bundles signed by a trusted key, and none is configured "
                    "(start it with --trusted-key PUB)")


@requires(Role.DEPLOY)
@body_limit()
async def upload_model(request: web.Request) -> web.Response:
    data = await read_body(request)
    if not data:
        raise BadRequest("the body must be a packed bundle file (streamql model pack, then sign)")
    config = request.app[CONFIG]
    # reading a bundle hashes every file and checks a signature: off the event loop for large ones
    parsed = await asyncio.get_running_loop().run_in_executor(None, _verify, data, config) \
        if len(data) > 1 << 20 else _verify(data, config)
    if not 0 < len(parsed.name) <= 256 or not parsed.version:
        raise BadRequest("a bundle's name is 1 to 256 characters and it needs a version")
    registry = request.app[REGISTRY]
    existed = registry.get_bundle(parsed.name, parsed.version) is not None
    stored = registry.add_bundle(parsed.name, parsed.version, data, parsed.manifest, uploader=principal(request).name)
    status = 200 if existed else 201
    return web.json_response({**bundle_view(stored, parsed), "created": not existed}, status=status,
                             headers={"Location": f"/v1/models?name={parsed.name}"})


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models, allow_head=False)
    app.router.add_post("/v1/models", upload_model)
