"""POST /v1/query — run one statement on the fleet; rows stream back as NDJSON (or msgpack).

The body is `{"query": "…", "limits": {"rows": …, "seconds": …}}` (limits optional, passed to the
query service), or the statement itself as `text/plain`. The format of the response is in
federation/results.py and docs/http-api.md. Errors found before the first row are a 4xx JSON error
with the position; errors while rows stream end the body with an `{"error": …, "status": …}` line.
A client that goes away cancels the statement (and so its fragments on the edges).
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging

from aiohttp import web

from federation.auth import Role
from federation.errors import BadRequest, NotImplementedYet
from federation.http import check_statement_size, json_body, principal, read_body, requires
from federation.keys import CONFIG, METRICS, QUERY_SERVICE
from federation.results import (
    QueryTimer,
    RowWriter,
    check_statement,
    choose_format,
    close_result,
    encoder_for,
    final_record,
    pump_rows,
    result_headers,
    watch_disconnect,
)

log = logging.getLogger("streamql.federation.query")
LIMIT_KEYS = ("rows", "seconds", "memory_mb")


def query_service(app: web.Application):
    service = app.get(QUERY_SERVICE)
    if service is None:
        raise NotImplementedYet("fleet queries are not available on this federation (no query service)")
    return service


def parse_limits(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(LIMIT_KEYS):
        raise BadRequest(f"limits is an object with some of {', '.join(LIMIT_KEYS)}")
    for key, number in value.items():
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0):
            raise BadRequest(f"limits.{key} must be a positive number")
    return value


async def read_query(request: web.Request) -> tuple[str, dict | None]:
    """The statement text and limits of a request (JSON, or the statement as plain text)."""
    if request.content_type == "text/plain":
        raw = await read_body(request, request.app[CONFIG].max_request_bytes)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the statement is not UTF-8 text") from None
        check_statement_size(request, text)
        return text, None
    body = await json_body(request)
    unknown = set(body) - {"query", "limits"}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}: a query request has query and limits")
    text = body.get("query")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("the body needs \"query\": the statement to run")
    check_statement_size(request, text)
    return text, parse_limits(body.get("limits"))


async def start_statement(service, text: str, caller, limits: dict | None):
    """The service's result for one statement (raising its QueryError at once)."""
    if limits and "limits" in inspect.signature(service.run).parameters:
        return await service.run(text, caller, limits=limits)
    return await service.run(text, caller)


@requires(Role.READ)
async def run_query(request: web.Request) -> web.StreamResponse:
    service = query_service(request.app)
    fmt = choose_format(request.headers.get("Accept"))
    text, limits = await read_query(request)
    caller = principal(request)
    check_statement(text, caller)
    metrics = request.app[METRICS]
    with QueryTimer(metrics) as timer:
        try:
            result = await start_statement(service, text, caller, limits)
        except BaseException:
            timer.outcome = "rejected"
            raise
        try:
            response = web.StreamResponse(headers=result_headers(result, fmt))
            response.enable_chunked_encoding()
            await response.prepare(request)
            encode = encoder_for(fmt)
            async def emit(items: list) -> None:
                await response.write(b"".join(items))

            writer = RowWriter(emit, metrics)
            pump = asyncio.ensure_future(pump_rows(result, writer, encode))
            gone = asyncio.ensure_future(watch_disconnect(request))
            try:
                await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not pump.done():
                    pump.cancel()
                    with contextlib.suppress(BaseException):
                        await pump
                writer.close()
            if not pump.done() or pump.cancelled():
                timer.outcome = "cancelled"
                return response
            error = pump.exception()
            if isinstance(error, (ConnectionError, asyncio.CancelledError)) or \
                    type(error).__name__ == "ClientConnectionResetError":
                timer.outcome = "cancelled"
                return response
            if error is not None:
                timer.outcome = "error"
                metrics.errors.inc(kind=error_kind(error))
                if not _is_query_error(error):
                    log.error("a fleet statement failed while streaming", exc_info=error)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write(encode(final_record(result, writer.rows, error)))
                await response.write_eof()
            return response
        except asyncio.CancelledError:
            timer.outcome = "cancelled"
            raise
        finally:
            await close_result(result)


def error_kind(error: BaseException) -> str:
    return getattr(error, "kind", None) or "InternalError"


def _is_query_error(error: BaseException) -> bool:
    from streamql.errors import QueryError
    return isinstance(error, QueryError)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/query", run_query)
