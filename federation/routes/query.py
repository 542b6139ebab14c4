"""POST /v1/query — run one statement on the fleet; rows stream back as NDJSON (or msgpack).

The body is `{"query": "…", "limits": {"rows": …, "seconds": …, "memory_mb": …},
"device_timeout": 10, "status": "full"}` (all but query optional), or the statement itself as
`text/plain`. The format of the response is in federation/results.py and docs/http-api.md.
The response headers wait for the first row: an error found before it — a bad statement, or one
on which every selected device failed — is a 4xx JSON error with its position in the user's text;
errors while rows stream end the body with an `{"error": …, "status": …}` line. A client that goes
away cancels the statement (and so its fragments on the edges).
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
from federation.lanes import ClientLeft
from federation.results import (
    QueryTimer,
    RowWriter,
    bound_send_buffer,
    check_statement_off_loop,
    choose_format,
    client_is_there,
    close_result,
    encoder_for,
    final_record,
    pump_rows,
    result_headers,
    watch_disconnect,
)

log = logging.getLogger("streamql.federation.query")
LIMIT_KEYS = ("rows", "seconds", "memory_mb")
REQUEST_FIELDS = ("query", "limits", "device_timeout", "status")


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


async def read_query(request: web.Request) -> tuple[str, dict | None, dict]:
    """The statement text, limits and options of a request (JSON, or the statement as plain text)."""
    if request.content_type == "text/plain":
        raw = await read_body(request, request.app[CONFIG].max_request_bytes)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the statement is not UTF-8 text") from None
        check_statement_size(request, text)
        return text, None, {}
    body = await json_body(request)
    unknown = set(body) - set(REQUEST_FIELDS)
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}: a query request has {', '.join(REQUEST_FIELDS)}")
    text = body.get("query")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("the body needs \"query\": the statement to run")
    check_statement_size(request, text)
    return text, parse_limits(body.get("limits")), parse_options(body)


def parse_options(body: dict) -> dict:
    """device_timeout (seconds a connected device has to answer) and status ("full": every
    device's outcome, however many)."""
    options: dict = {}
    timeout = body.get("device_timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise BadRequest("device_timeout is a number of seconds, more than 0 and at most 3600")
        options["device_timeout"] = float(timeout)
    status = body.get("status")
    if status is not None:
        if status not in ("full", "summary"):
            raise BadRequest('status is "full" (every device\'s outcome) or "summary"')
        options["detail"] = status == "full"
    return options


async def start_statement(service, text: str, caller, limits: dict | None, options: dict | None = None,
                          still_wanted=None):
    """The service's result for one statement (raising its QueryError at once); `still_wanted`:
    whether its client is still there, asked while it waits for a slot (lanes.ClientLeft)."""
    parameters = inspect.signature(service.run).parameters
    kwargs = {}
    if still_wanted is not None and "still_wanted" in parameters:
        kwargs["still_wanted"] = still_wanted
    if limits and "limits" in parameters:
        kwargs["limits"] = limits
    if options and options.get("device_timeout") is not None and "device_timeout" in parameters:
        kwargs["device_timeout"] = options["device_timeout"]
    return await service.run(text, caller, **kwargs)


@requires(Role.READ)
async def run_query(request: web.Request) -> web.StreamResponse:
    service = query_service(request.app)
    fmt = choose_format(request.headers.get("Accept"))
    text, limits, options = await read_query(request)
    caller = principal(request)
    await check_statement_off_loop(service, text, caller)
    metrics = request.app[METRICS]
    detail = options.get("detail")
    with QueryTimer(metrics) as timer:
        try:
            result = await start_statement(service, text, caller, limits, options,
                                           still_wanted=lambda: client_is_there(request))
        except ClientLeft:
            timer.outcome = "cancelled"
            return web.Response(status=499)   # nobody reads it: the connection is gone
        except BaseException:
            timer.outcome = "rejected"
            raise
        try:
            first = getattr(result, "first", None)
            if first is not None:
                try:
                    await _until_first(request, first())
                except BaseException:
                    timer.outcome = "rejected"
                    raise
            response = web.StreamResponse(headers=result_headers(result, fmt))
            response.enable_chunked_encoding()
            try:
                await response.prepare(request)
            except ConnectionError:   # the client left before the response head: nothing to tell
                timer.outcome = "cancelled"
                return response
            if result.kind == "stream":
                bound_send_buffer(request.transport)
            encode = encoder_for(fmt)
            async def emit(items: list) -> None:
                await response.write(b"".join(items))

            writer = RowWriter(emit, metrics)
            pump = asyncio.ensure_future(pump_rows(result, writer, encode))
            gone = asyncio.ensure_future(watch_disconnect(request))
            stopped = asyncio.ensure_future(_stopped(result))
            try:
                await asyncio.wait({pump, gone, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stopped.done() and not pump.done():
                    # the federation is stopping: the rows' writer may be blocked on a client that
                    # does not read; it gets a moment to write the last line, then the connection
                    # is dropped (or the shutdown would wait for that client)
                    await asyncio.wait({pump}, timeout=STOP_GRACE_S)
                    if not pump.done() and request.transport is not None:
                        request.transport.abort()
            finally:
                gone.cancel()
                stopped.cancel()
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
                await response.write(encode(final_record(result, writer.rows, error, detail)))
                await response.write_eof()
            return response
        except asyncio.CancelledError:
            timer.outcome = "cancelled"
            raise
        finally:
            await close_result(result)


STOP_GRACE_S = 0.5


async def _stopped(result) -> None:
    """Returns when the federation stops the statement (shutting down); never for other results."""
    wake = getattr(result, "_wake", None)
    if wake is None:
        await asyncio.Event().wait()
    while getattr(result, "_stopped", None) is None:
        await wake.wait()
        if getattr(result, "_stopped", None) is None:
            await asyncio.sleep(0.25)   # woken by a cancel that is not a stop: the client's own


async def _until_first(request: web.Request, waiting) -> None:
    """Wait for the statement's first rows (or its end), or for the client to leave (cancelled)."""
    first = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(watch_disconnect(request))
    try:
        await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not first.done():
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        raise asyncio.CancelledError()
    first.result()


def error_kind(error: BaseException) -> str:
    return getattr(error, "kind", None) or "InternalError"


def _is_query_error(error: BaseException) -> bool:
    from streamql.errors import QueryError
    return isinstance(error, QueryError)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/query", run_query)
