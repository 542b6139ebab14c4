"""The fleet operators: rows from the edges (`Remote`) and the merge of partial aggregates.

A Remote stage asks the statement's fleet session (`ctx.fleet`, made by the engine for a
statement on a federation) which edges its selection picks, checks on which of them the fragment
can run, starts it on the connected ones and turns every `rows` event into a chunk binding the
edge variable and the fragment's columns. Offline devices are reported at once, never waited for;
a bag fragment that does not end within the device timeout is cancelled and reported as timed out.
A bag fragment's rows are held until its device's `end ok` (`HeldRows`): as the status says, a row
exists only for a device that answered, so a device whose link drops or that times out after
sending its partial aggregate is in neither the answer nor the `answered` count. While it waits it yields IDLE, so cancellation and time limits are noticed. Closing it (a `limit`
met, the consumer gone) cancels whatever still runs on the edges.

A stream fragment is standing: a device that connects later and matches the selection joins; one
that drops its link is reported offline and joins again when it comes back. The stream ends only
when the statement is cancelled or its limit is met.

An edge whose every query slot is taken refuses a fragment with an error carrying `retry_s` (the
edge is busy, not the statement wrong): the device stays `running`, its reason saying so, and the
fragment is sent again after `retry_s`, then twice as long each time up to `BUSY_RETRY_MAX_S` — a
stream for as long as it stands, a one-shot fragment while its device timeout lasts (past it, the
device is `timed out` as any other). In the soak (bench/README.md, issue 12) a burst of statements
filled every slot of the EU edges for a second or two, and well-behaved streams that arrived then
had failed on every device they selected: no row, although the slots were free again at once.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .. import logical as L
from ..batch import IDLE
from ..errors import QueryRuntimeError
from ..values import EdgeRef, hashable
from .chunk import Chunk, broadcast, column_values, concat_chunks, make_column
from .expressions import as_mask, full_column

WAIT_S = 0.1
BUSY_RETRY_MAX_S = 8.0         # the longest wait before a busy edge is asked again
HOLD_DEVICE_ROWS = 4096        # a device's rows held until its end; past this they flow as they come
HOLD_TOTAL_ROWS = 262_144      # all devices' held rows together (the statement's memory stays small)


class HeldRows:
    """A bag fragment's rows per device until the device ends. A device that sends more than
    HOLD_DEVICE_ROWS (or when all together pass HOLD_TOTAL_ROWS) has its rows released as they
    come: a long answer is not kept whole in memory (if such a device then fails, the status says
    it failed after sending rows)."""

    def __init__(self):
        self.held: dict[str, list[Chunk]] = {}
        self.counts: dict[str, int] = {}
        self.total = 0
        self.flowing: set[str] = set()

    def add(self, device: str, chunk: Chunk) -> list[Chunk]:
        """The chunks to deliver now (none while the device's rows are held)."""
        if device in self.flowing:
            return [chunk]
        count = self.counts.get(device, 0) + chunk.n
        if count > HOLD_DEVICE_ROWS or self.total + chunk.n > HOLD_TOTAL_ROWS:
            self.flowing.add(device)
            return self.release(device) + [chunk]
        self.held.setdefault(device, []).append(chunk)
        self.counts[device] = count
        self.total += chunk.n
        return []

    def release(self, device: str) -> list[Chunk]:
        """The device answered: its rows count."""
        self.total -= self.counts.pop(device, 0)
        return self.held.pop(device, [])

    def discard(self, device: str) -> None:
        """The device did not answer (dropped, timed out, failed, cancelled): its rows do not count."""
        self.release(device)


def build_remote(plan, node: L.Remote):
    ctx = plan.ctx
    compiler = plan.compiler
    residual = [compiler.compile(p) for p in node.residual]
    candidates = compiler.compile(node.candidates) if node.candidates is not None else None
    fragment = node.fragment
    params = [(p.name, compiler.compile(p.value)) for p in fragment.params] if fragment is not None else []
    edge = node.edge

    def selected(env: dict, session) -> list[str]:
        ids = session.select(node.index)
        if candidates is not None:
            allowed = {e.id for e in (candidates.row(env) or ()) if isinstance(e, EdgeRef)}
            ids = [i for i in ids if i in allowed]
        if residual and ids:
            session.devices(ids)   # facts for the conditions, loaded at once
            chunk = _edge_chunk(env, edge, ids)
            for condition in residual:
                mask = as_mask(full_column(condition, chunk), chunk.n)
                chunk = chunk.take(mask)
            ids = [e.id for e in chunk[edge]]
        return ids

    def remote(upstream, outer):
        for item in upstream:
            if item is IDLE:
                yield item
                continue
            session = getattr(ctx, "fleet", None)
            if session is None:
                raise QueryRuntimeError(f"Edge {node.edge_written} ranges over the devices of a federation: run "
                                        "this statement on one (streamql shell --federation URL)")
            env = item if type(item) is dict else {}
            ids = selected(env, session)
            if fragment is None:
                session.status.registry_only = True
                for device in ids:
                    session.status.set(device, "answered", "answered from the registry")
                if ids:
                    yield _edge_chunk(env, edge, ids)
                continue
            yield from _run_fragments(node, ctx, session, env, ids, params, selected)
    return remote


def _edge_chunk(env: dict, edge: str, ids: list[str]) -> Chunk:
    n = len(ids)
    columns = {name: broadcast(value, n) for name, value in env.items()}
    columns[edge] = [EdgeRef(i) for i in ids]
    return Chunk(columns, n)


def _run_fragments(node: L.Remote, ctx, session, env: dict, ids: list[str], params, selected):
    fragment = node.fragment
    status = session.status
    standing = fragment.kind == "stream"
    devices = session.devices(ids)
    runnable = session.check(fragment, devices)
    online = [d for d in runnable if devices[d].online]
    for device in runnable:
        if not devices[device].online:
            status.set(device, "offline", "not connected")
    values = _param_values(env, node.edge, online, params)
    feed = session.open_feed(watch=standing)
    running: dict[str, float] = {}
    limit = node.limit
    delivered = 0
    timeout = session.device_timeout
    finished = False
    held = None if standing else HeldRows()

    def deliver(chunks: list[Chunk]) -> list[Chunk]:
        nonlocal delivered
        out = []
        for chunk in chunks:
            if limit is not None:
                if delivered >= limit:
                    break
                if delivered + chunk.n > limit:
                    chunk = chunk.take(np.arange(limit - delivered))
            delivered += chunk.n
            out.append(chunk)
        return out

    sent_params: dict[str, dict] = {}
    busy: dict[str, tuple[float, float, float]] = {}   # device → (ask again at, wait after that, first sent)

    def start(device: str, device_params: dict, since: float | None = None) -> None:
        feed.start(session.request(device, fragment, device_params))
        sent_params[device] = device_params
        if since is None:
            status.set(device, "running")
        running[device] = time.monotonic() if since is None else since

    def refused_busy(device: str, event, since: float) -> bool:
        """The edge had no free slot (`retry_s`): ask again later (see the module doc)."""
        retry_s = (event.error or {}).get("retry_s") if event.outcome == "error" else None
        if not isinstance(retry_s, (int, float)) or retry_s <= 0 or ctx.cancel.is_set():
            return False
        wait = busy[device][1] if device in busy else min(float(retry_s), BUSY_RETRY_MAX_S)
        now = time.monotonic()
        if not standing and timeout is not None:
            left = since + timeout - now
            if left <= 2 * WAIT_S:      # no time for another ask: busy all through its timeout
                busy.pop(device, None)
                held.discard(device)
                status.set(device, "timed out", f"the edge stayed busy (every query slot taken) "
                                                f"through the device timeout of {timeout:g} s")
                return True
            wait = min(wait, left - WAIT_S)
        busy[device] = (now + wait, min(2 * wait, BUSY_RETRY_MAX_S), since)
        status.set(device, "running", f"the edge is busy (every query slot taken): asking again in {wait:.2g} s")
        return True

    def ask_busy_again() -> None:
        now = time.monotonic()
        for device, (when, _, since) in list(busy.items()):
            if now >= when:
                busy[device] = (math.inf, *busy[device][1:])
                start(device, sent_params[device], since)

    began = time.perf_counter()
    try:
        for device in online:
            ctx.check()    # a statement cancelled (its client gone, the service stopping) starts no more
            start(device, values[device])
        while running or standing or busy:
            if limit is not None and delivered >= limit:
                break
            if busy:
                ask_busy_again()
            event = feed.next(WAIT_S)
            ctx.check()
            if event is None:
                if not standing and timeout is not None:
                    now = time.monotonic()
                    for device, since in list(running.items()):
                        if now - since > timeout:
                            feed.cancel(device)
                            del running[device]
                            busy.pop(device, None)
                            held.discard(device)
                            status.set(device, "timed out", f"no complete answer within {timeout:g} s")
                yield IDLE
                continue
            device = event.device
            if event.kind == "rows":
                if device not in running or not event.n:
                    continue
                if busy.pop(device, None) is not None:
                    status.set(device, "running")     # it got a slot: the busy reason is history
                status.add_rows(device, event.n)
                chunk = _rows_chunk(env, node, device, event)
                yield from deliver([chunk] if held is None else held.add(device, chunk))
            elif event.kind == "end":
                since = running.pop(device, None)
                if since is None:
                    continue
                if refused_busy(device, event, since):
                    continue
                busy.pop(device, None)
                _ended(session, fragment, device, event)
                if held is not None:
                    if event.outcome == "ok":
                        yield from deliver(held.release(device))
                    else:
                        held.discard(device)
            elif event.kind == "connected" and standing and device not in running and device not in busy:
                if device in selected(env, session):
                    joined = session.check(fragment, session.devices([device], fresh=True))
                    if joined:
                        start(device, _param_values(env, node.edge, joined, params)[device])
        finished = not running
    finally:
        feed.close()
        # fan-out: from the first fragment sent to the last one ended (what follows is the merge)
        status.timings["fan_out"] = status.timings.get("fan_out", 0.0) + time.perf_counter() - began
        status.fan_out_ended = time.perf_counter()
        if not finished:
            status.stop_running(by_limit=not ctx.cancel.is_set())
    if not standing:
        failure = session.failure()
        if failure is not None:
            raise failure


def _param_values(env: dict, edge: str, devices: list[str], params) -> dict[str, dict]:
    """Each device's values of the fragment's parameters (its metadata, id, …)."""
    out: dict[str, dict] = {d: {} for d in devices}
    if not params or not devices:
        return out
    chunk = _edge_chunk(env, edge, devices)
    for name, compiled in params:
        column = column_values(full_column(compiled, chunk))
        for device, value in zip(devices, column):
            out[device][name] = value.item() if isinstance(value, np.generic) else value
    return out


def _rows_chunk(env: dict, node: L.Remote, device: str, event) -> Chunk:
    n = event.n
    columns = {name: broadcast(value, n) for name, value in env.items()}
    columns[node.edge] = [EdgeRef(device)] * n
    for name, values in zip(node.fragment.columns, event.columns or ()):
        columns[name] = values if isinstance(values, np.ndarray) else make_column(list(values))
    return Chunk(columns, n)


def _ended(session, fragment, device: str, event) -> None:
    status = session.status
    outcome = event.outcome
    if outcome == "ok":
        status.set(device, "answered")
    elif outcome == "offline":
        status.set(device, "offline", (event.error or {}).get("message") or "not connected")
    elif outcome == "dropped":
        status.set(device, "offline", (event.error or {}).get("message") or "its link dropped")
    elif outcome == "cancelled" and (event.error or {}).get("kind") == "DeadlineError":
        # the edge kept the device timeout itself and its end came before the federation's own check
        status.set(device, "timed out", (event.error or {}).get("message") or "past the device timeout")
    elif outcome == "cancelled":
        status.set(device, "cancelled", (event.error or {}).get("message") or "cancelled on the edge")
    else:
        error = session.edge_error(device, fragment, event.error or {"kind": "RuntimeError", "message": outcome})
        status.set(device, "failed", error.message, error=error.to_dict())


# ---------------------------------------------------------------------------- merge aggregate
def build_merge_aggregate(plan, node: L.MergeAggregate, collect):
    """Group the rows from the edges by the keys and merge each aggregate's partial parts
    (`collect` gathers a blocking operator's input, its memory accounted)."""
    compiler, ctx = plan.compiler, plan.ctx
    keys = [compiler.compile(k) for k in node.keys]
    splits = [a.fn.split for a in node.aggregates]
    parts = node.parts

    def merge(upstream, outer):
        chunks, held = collect(upstream, ctx)
        try:
            chunk = concat_chunks(chunks) if chunks else Chunk({}, 0)
            groups: dict[tuple, list] = {}
            n = chunk.n
            key_values = [column_values(full_column(k, chunk)) if n else [] for k in keys]
            part_values = [[column_values(chunk[c]) if n else [] for c in columns] for columns in parts]
            for row in range(n):
                values = [column[row] for column in key_values]
                group = groups.get(tuple(hashable(v) for v in values))
                if group is None:
                    group = groups[tuple(hashable(v) for v in values)] = [values, [[] for _ in splits]]
                for i, columns in enumerate(part_values):
                    group[1][i].append(tuple(column[row] for column in columns))
            if not groups and not keys:
                groups[()] = [[], [[] for _ in splits]]
            out: dict[str, Any] = {f"$g{i}": make_column([g[0][i] for g in groups.values()]) for i in range(len(keys))}
            for i, split in enumerate(splits):
                out[f"$a{i}"] = make_column([split.merged(g[1][i]) for g in groups.values()])
        finally:
            ctx.hold(-held)
        if groups:
            yield Chunk(out, len(groups))
    return merge
