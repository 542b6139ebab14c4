"""Model bundles: list what the registry holds; upload (stub until bundle verification exists).

To fill in POST: `data = await read_body(request)` (the handler is marked `@body_limit()` so it may
take up to `config.max_bundle_bytes`), verify the signature and manifest with the models package,
then `app[REGISTRY].add_bundle(name, version, data, manifest, uploader=principal(request).name)`.
"""
from __future__ import annotations

from aiohttp import web

from federation.auth import Role
from federation.errors import NotImplementedYet
from federation.http import body_limit, requires
from federation.keys import REGISTRY


@requires(Role.READ)
async def list_models(request: web.Request) -> web.Response:
    bundles = request.app[REGISTRY].list_bundles(request.query.get("name"))
    return web.json_response({"models": [b.to_dict() for b in bundles]})


@requires(Role.DEPLOY)
@body_limit()
async def upload_model(request: web.Request) -> web.Response:
    raise NotImplementedYet("uploading bundles is not implemented yet")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models, allow_head=False)
    app.router.add_post("/v1/models", upload_model)
