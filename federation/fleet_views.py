"""Fleet views: what `GET /v1/edges` and `GET /v1/edges/summary` filter on, from their query strings.

Filters combine (all must hold): the registry index's `online`, `id`, `meta.<key>`,
`capability.<key>`; a StreamQL predicate `where` (`region(e) in ('US', 'EU') and online(e)`,
answered by the engine through the index, off the event loop; no `@e` part, since listing a fleet
must not contact it); `q` (words, each found in the id, metadata, models or signals); `status`
(`online`, `offline`, `missing`, with `missing_after` minutes, 60 by default); `model` and
`version`; `battery_below`, `cpu_above`, `memory_above` (KiB); `attention` (a reason, or `any`).
Everything else is answered from the fleet table in memory (federation/fleet_table.py).
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from federation.errors import BadRequest
from federation.fleet_table import ATTENTION, MISSING_AFTER_MIN, SORT_KEYS, STATUSES, FleetRow
from federation.keys import FLEET, INDEX, QUERY_SERVICE, REGISTRY
from streamql.errors import QueryError, Span
from streamql.selection import ID, ONLINE, All, Eq, In, Predicate, capability, conjunction, meta

PAGE_PARAMS = ("limit", "offset", "sort", "fields", "since")
VIEW_PARAMS = ("where", "q", "status", "missing_after", "model", "version", "battery_below", "cpu_above",
               "memory_above", "attention")
_HEAD = "select id(e) from Edge e where "


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
        if name in PAGE_PARAMS or name in VIEW_PARAMS:
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
                             f"{', '.join(VIEW_PARAMS)}, {', '.join(PAGE_PARAMS)}")
    parts += [In(key, tuple(values)) for key, values in keys.items()]
    return conjunction(parts)


def _number(query, name: str) -> float | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be a number, not {text!r}") from None


def _at_sign(where: str) -> int | None:
    """The offset of the first `@` outside a string literal, or None."""
    quote = None
    for i, ch in enumerate(where):
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "@":
            return i
    return None


async def ids_where(request: web.Request, where: str) -> set[str]:
    """The devices a StreamQL predicate on `Edge e` selects; errors point into `where` itself."""
    at = _at_sign(where)
    if at is not None:
        raise BadRequest("a fleet view filters on the registry only: `@` (a part run on the edges) is not allowed "
                         "here; run it as a query", Span.at(where, at), where)
    service = request.app[QUERY_SERVICE]
    text = _HEAD + where + ";"

    def run() -> set[str]:
        return set(service.engine.query(text, fleet=service.access, device_timeout=service.device_timeout))
    try:
        return await service.pool.call(run)
    except QueryError as exc:
        if exc.span is not None:
            start = min(max(exc.span.start - len(_HEAD), 0), max(len(where) - 1, 0))
            exc.span = Span.at(where, start, max(1, min(exc.span.end - exc.span.start, len(where) - start)))
        exc.source = where
        raise


async def selected_rows(request: web.Request) -> tuple[list[FleetRow], float]:
    """The fleet table's rows the request's filters select, and its `missing_after` in seconds."""
    query = request.query
    table = request.app[FLEET]
    request.app[REGISTRY].poll_external_changes()   # devices another process provisioned
    predicate = predicate_from_query(query)
    ids: set[str] | None = None
    if not isinstance(predicate, All):
        ids = set(request.app[INDEX].select(predicate))
    where = query.get("where", "").strip().rstrip(";").strip()
    if where:
        found = await ids_where(request, where)
        ids = found if ids is None else ids & found
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    attention = query.get("attention") or None
    if attention is not None and attention != "any" and attention not in ATTENTION:
        raise BadRequest(f"attention must be any or one of {', '.join(ATTENTION)}, not {attention!r}")
    missing_after = _number(query, "missing_after")
    missing_after_s = (MISSING_AFTER_MIN if missing_after is None else missing_after) * 60
    words = [w for w in query.get("q", "").lower().split() if w]
    rows = table.select(table.rows.values(), ids=ids, words=words, status=status, missing_after_s=missing_after_s,
                        model=query.get("model") or None, version=query.get("version") or None,
                        battery_below=_number(query, "battery_below"), cpu_above=_number(query, "cpu_above"),
                        memory_above=_number(query, "memory_above"), attention=attention)
    return rows, missing_after_s


def sort_key(query) -> str:
    key = query.get("sort", "id") or "id"
    name = key.lstrip("-+")
    if name not in SORT_KEYS and not (name.startswith("meta.") and len(name) > 5):
        raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)} or meta.<key> (with - for descending), "
                         f"not {key!r}")
    return key
