"""Middlewares: errors as JSON, bearer-token authentication per route, early size checks."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import hdrs, web

from federation.auth import authenticate, parse_bearer, require
from federation.errors import PayloadTooLarge
from federation.http import PUBLIC, access_of, body_limit_of
from federation.keys import METRICS, PRINCIPAL, REGISTRY
from streamql.errors import QueryError

log = logging.getLogger("streamql.federation")

_KINDS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
          406: "NotAcceptable", 409: "Conflict", 411: "LengthRequired", 413: "PayloadTooLarge",
          415: "UnsupportedMediaType", 422: "Unprocessable", 429: "TooManyRequests"}
_KEEP_HEADERS = (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE, hdrs.RETRY_AFTER)


def error_response(kind: str, message: str, status: int, line: int | None = None, column: int | None = None,
                   headers: dict | None = None) -> web.Response:
    body = {"error": {"kind": kind, "message": message, "line": line, "column": column}}
    return web.json_response(body, status=status, headers=headers)


def _route_name(request: web.Request) -> str:
    info = request.match_info
    if getattr(info, "http_exception", None) is not None:
        return "unmatched"
    return info.route.resource.canonical if info.route.resource is not None else "unmatched"


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Domain errors and bad requests → 4xx JSON with the position; anything else → logged 500."""
    metrics = request.app.get(METRICS)
    try:
        response = await handler(request)
    except QueryError as exc:
        status = getattr(exc, "http_status", 400)
        info = exc.to_dict()
        headers = {hdrs.WWW_AUTHENTICATE: "Bearer"} if status == 401 else None
        if getattr(exc, "retry_after", None) is not None:
            headers = {hdrs.RETRY_AFTER: str(exc.retry_after)}
        response = error_response(info["kind"], info["message"], status, info["line"], info["column"], headers)
        if status == 408:  # the rest of a slow body may still arrive: do not read it as the next request
            response.force_close()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in _KEEP_HEADERS}
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        response = error_response(_KINDS.get(exc.status, "HTTPError"), message, exc.status, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = error_response("InternalError", "internal error; the service logged it", 500)
    if metrics is not None:
        metrics.http_requests.inc(method=request.method, route=_route_name(request), status=response.status)
        if response.status >= 400:
            metrics.errors.inc(kind=_KINDS.get(response.status, "InternalError" if response.status >= 500 else "HTTPError"))
    return response


def required_access(request: web.Request):
    """The role the matched route needs; None for public routes and for unmatched paths (→ 404)."""
    info = request.match_info
    if getattr(info, "http_exception", None) is not None:
        return None
    if isinstance(info.route.resource, web.StaticResource):
        return None
    access = access_of(info.handler)
    return None if access == PUBLIC else access


def _bearer(request: web.Request) -> str | None:
    token = parse_bearer(request.headers.get(hdrs.AUTHORIZATION))
    if token is None and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        token = request.query.get("access_token")  # browsers cannot set headers on WebSockets
    return token


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    required = required_access(request)
    if required is not None:
        caller = authenticate(request.app[REGISTRY], _bearer(request))
        require(caller, required)
        request[PRINCIPAL] = caller
    if request.content_length is not None and request.can_read_body:
        limit = body_limit_of(request)
        if request.content_length > limit:
            raise PayloadTooLarge(f"the body is {request.content_length} bytes; at most {limit} are accepted here")
    return await handler(request)
