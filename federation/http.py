"""Helpers for route handlers: access levels, the caller, JSON bodies, size limits, WebSockets.

    from federation.auth import Role
    from federation.http import requires, principal, json_body, read_body, track_websocket

    @requires(Role.READ)
    async def run_query(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)            # a JSON object, else 400 BadRequest
        caller = principal(request)                # Principal(role, device_id, token_id)
        ...

A handler without `@requires(…)` or `@public` needs an admin token (closed by default).
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_log import AccessLogger

from federation.auth import Principal, Role
from federation.errors import BadRequest, PayloadTooLarge, RequestTimeout, Unauthorized
from federation.keys import CONFIG, PRINCIPAL, WEBSOCKETS
from streamql.errors import Span

ACCESS_ATTRIBUTE = "__streamql_access__"
BODY_LIMIT_ATTRIBUTE = "__streamql_body_limit__"
PUBLIC = "public"
DEFAULT_ACCESS = Role.ADMIN

H = TypeVar("H", bound=Callable[..., Any])


def requires(role: Role) -> Callable[[H], H]:
    """The role a handler needs; Role.DEVICE means a device token (its id in `principal`)."""

    def mark(handler: H) -> H:
        setattr(handler, ACCESS_ATTRIBUTE, role)
        return handler

    return mark


def public(handler: H) -> H:
    setattr(handler, ACCESS_ATTRIBUTE, PUBLIC)
    return handler


def body_limit(limit: int | None = None) -> Callable[[H], H]:
    """Allow a handler bodies up to `limit` bytes, by default the configured bundle limit
    (`max_bundle_bytes`); read them with `read_body(request)`, not `request.read()`."""

    def mark(handler: H) -> H:
        setattr(handler, BODY_LIMIT_ATTRIBUTE, limit)
        return handler

    return mark


def access_of(handler: Any) -> Role | str:
    return getattr(handler, ACCESS_ATTRIBUTE, DEFAULT_ACCESS)


def body_limit_of(request: web.Request) -> int:
    """The largest body the matched handler accepts."""
    config = request.app[CONFIG]
    handler = getattr(request.match_info, "handler", None)
    if not hasattr(handler, BODY_LIMIT_ATTRIBUTE):
        return config.max_request_bytes
    limit = getattr(handler, BODY_LIMIT_ATTRIBUTE)
    return config.max_bundle_bytes if limit is None else limit


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if found is None:
        raise Unauthorized("this request carries no token")
    return found


MIN_BODY_RATE = 256 << 10  # bytes a second a large body must at least arrive at


def body_deadline(request: web.Request, size: int | None = None) -> float:
    """Seconds a body may take to arrive: `body_timeout_s`, plus a second per 256 KiB beyond it."""
    size = request.content_length if size is None else size
    return request.app[CONFIG].body_timeout_s + (size or 0) / MIN_BODY_RATE


def _too_slow(request: web.Request, seconds: float) -> RequestTimeout:
    return RequestTimeout(f"the request body did not arrive within {seconds:.0f} s; the connection is closed")


def loads_json(raw: bytes | str, max_depth: int) -> Any:
    """JSON text → value; BadRequest for invalid JSON or nesting deeper than `max_depth`
    (checked after parsing, iteratively; the parser's own recursion limit is caught too)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"the JSON is nested too deeply (at most {max_depth} levels)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        error = BadRequest(f"the body is not valid JSON: {exc}")
        if isinstance(exc, json.JSONDecodeError):  # the position inside the body, 1-based
            error.span = Span(exc.pos, exc.pos + 1, exc.lineno, exc.colno, exc.lineno, exc.colno + 1)
        raise error from None
    if json_depth(value, max_depth) > max_depth:
        raise BadRequest(f"the JSON is nested too deeply (at most {max_depth} levels)")
    return value


def json_depth(value: Any, stop: int) -> int:
    """The nesting depth of lists and objects in `value` (a scalar is 0), counted up to `stop` + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > stop:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


async def json_body(request: web.Request) -> dict:
    """The request's JSON object (size-limited by the app's client_max_size, time-limited by
    `body_timeout_s`, nesting-limited by `max_json_depth`)."""
    seconds = body_deadline(request)
    try:
        async with asyncio.timeout(seconds):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(exc.text or "request body too large") from None
    except TimeoutError:
        raise _too_slow(request, seconds) from None
    if not raw:
        raise BadRequest("this request needs a JSON object as its body")
    body = loads_json(raw, request.app[CONFIG].max_json_depth)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The raw body, streamed, refusing more than `limit` bytes (default: the handler's limit)
    and a body slower than `body_deadline` (408, the connection closed)."""
    limit = body_limit_of(request) if limit is None else limit
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    seconds = body_deadline(request, request.content_length or limit)
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _too_slow(request, seconds) from None
    return b"".join(chunks)


def check_statement_size(request: web.Request, text: str) -> None:
    """A statement longer than `max_statement_bytes` (UTF-8) is refused before it is parsed."""
    error = statement_too_large(text, request.app[CONFIG].max_statement_bytes)
    if error is not None:
        raise error


def statement_too_large(text: Any, limit: int) -> PayloadTooLarge | None:
    """The error for a statement text over `limit` UTF-8 bytes (None for anything else)."""
    if not isinstance(text, str) or len(text) <= limit // 4:
        return None  # a UTF-8 character is at most four bytes
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return None
    return PayloadTooLarge(f"the statement is {size} bytes; at most {limit} are accepted (max_statement_bytes)")


def query_flag(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"query parameter {name} must be true or false, not {value!r}")


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer, not {value!r}") from None
    if number < low or (high is not None and number > high):
        raise BadRequest(f"query parameter {name} must be between {low} and {high}")
    return number


def track_websocket(request: web.Request, ws: web.WebSocketResponse) -> web.WebSocketResponse:
    """Remember an open WebSocket so that shutdown closes it with GOING_AWAY."""
    request.app[WEBSOCKETS].add(ws)
    return ws


# ---------------------------------------------------------------------------- access log
EDGE_CONNECT_PATH = "/v1/edges/connect"
_TOKEN_IN_URL = re.compile(r"((?:access_)?token=)[^&\s\"#]+")


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access log with tokens in URLs blanked: a WebSocket's `?access_token=` and the
    dashboard's `?token=` (which also travels in Referer headers) never reach a log file. An
    edge's WebSocket is not logged when it ends (the hub logs each edge's connect and disconnect;
    10,000 edges leaving at a shutdown would otherwise write 10,000 lines while it waits)."""

    def log(self, request, response, time):
        if response.status == 101 and request.path == EDGE_CONNECT_PATH:
            return
        super().log(request, response, time)

    def _format_line(self, request, response, time):
        return [(key, _TOKEN_IN_URL.sub(r"\1…", value) if isinstance(value, str) else value)
                for key, value in super()._format_line(request, response, time)]
