"""Heartbeats and online flips in the PostgreSQL registry (a mixin of PgRegistry): beats written in
slices of BEAT_SLICE devices (a short transaction each), from a worker thread, and read back of the
edges other nodes serve (`poll_heartbeats`); the hub's online/offline flips written many at once,
from a worker thread too (`write_online_off_loop`)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable

from psycopg import errors as pg_errors

from federation.records import Heartbeat

BEAT_SLICE = 500   # beats per transaction: a write of these rows waits for one slice's locks at most
FLIP_SLICE = 250  # flips per transaction: the device-change lock, which the loop's own writes (a
                  # hello's new metadata) wait for, is held for one slice's rows at most
HEARD_MARGIN_S = 10.0    # a beat is written a flush (1 s) and a busy loop after it was heard, on another clock


def lock_devices(conn, ids: list[str] | None = None, *, where: str | None = None, args: tuple = ()) -> None:
    """Lock device rows in id order (the ids given, or those matching `where`): the one order every
    transaction writing several devices takes them in, so two nodes' writes wait, never deadlock."""
    if ids is not None:
        conn.execute("SELECT 1 FROM devices WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", (ids,))
    else:
        conn.execute(f"SELECT 1 FROM devices WHERE {where} ORDER BY id FOR NO KEY UPDATE", args)


def _beat_params(rows: list[Heartbeat]) -> tuple:
    """The UPDATE's parameters for beats sorted by device: their ids (to lock), and the beats as one
    JSON document — a text[] of health documents had psycopg escape each element with a regular
    expression, a sixth of a node's CPU at 10,000 edges."""
    return ([b.device_id for b in rows],
            json.dumps([{"id": b.device_id, "at": b.at, "health": b.health, "restarts": b.restarts} for b in rows]))


def _loads(text):
    return json.loads(text) if isinstance(text, str) else text


class PgHeartbeats:
    """Needs of its host: _run, _rows, _listeners, _serving(_lock), _heard, _heard_through, clock,
    node_key, transaction, and the device-change lock's statement (`_change_lock_sql`)."""

    async def write_online_off_loop(self, changes: dict[str, bool]) -> tuple[list[str], list[str]]:
        """Many edges written online (last seen now, this node's) or offline in one transaction, from
        a worker thread: each flip takes the device-change lock every node's flips share, and a
        burst of them waiting for it on the event loop held a node's loop 15 s at 10,000 edges.
        Listeners hear on the loop; returns the ids written (online, offline) — a deleted device is
        in neither."""
        with self._serving_lock:   # before the write: a sweep in between re-points nothing wrongly
            for edge, online in changes.items():
                (self._serving.add if online else self._serving.discard)(edge)
        went_online, went_offline = await asyncio.to_thread(self._write_online, changes)
        for ids, online in ((went_online, True), (went_offline, False)):
            if ids:
                for listener in self._listeners:
                    listener.online_changed(ids, online)
        return went_online, went_offline

    def _write_online(self, changes: dict[str, bool]) -> tuple[list[str], list[str]]:
        went_online: list[str] = []
        went_offline: list[str] = []
        edges = sorted(changes)
        for start in range(0, len(edges), FLIP_SLICE):
            chunk = edges[start:start + FLIP_SLICE]
            online = [edge for edge in chunk if changes[edge]]
            offline = [edge for edge in chunk if not changes[edge]]
            try:
                on, off = self._flip_rows(online, offline)
            except pg_errors.DeadlockDetected:   # against a transaction writing some of these rows: once more
                on, off = self._flip_rows(online, offline)
            went_online += on
            went_offline += off
        return went_online, went_offline

    def _flip_rows(self, online: list[str], offline: list[str]) -> tuple[list[str], list[str]]:
        with self.transaction() as conn:
            conn.execute(self._change_lock_sql)   # the feed's lock, then the rows in id order (see _run)
            lock_devices(conn, sorted(online + offline))
            went_online = [row[0] for row in conn.execute(
                "UPDATE devices SET online = true, online_node = %s, last_seen = %s WHERE id = ANY(%s) RETURNING id",
                (self.node_key, self.clock(), online)).fetchall()] if online else []
            went_offline = [row[0] for row in conn.execute(
                "UPDATE devices SET online = false, online_node = NULL WHERE id = ANY(%s) RETURNING id",
                (offline,)).fetchall()] if offline else []
        return went_online, went_offline

    def record_heartbeats(self, beats: Iterable[Heartbeat]) -> int:
        """Last seen, health and restarts of many devices in one statement; returns rows updated."""
        beats = list(beats)
        count = self._write_heartbeats(beats)
        self._heartbeats_heard(beats)
        return count

    async def record_heartbeats_off_loop(self, beats: Iterable[Heartbeat]) -> int:
        """record_heartbeats with the round trip in a worker thread (10,000 edges' beats are most of
        a second of PostgreSQL's time the event loop need not wait for); listeners hear on the loop."""
        beats = list(beats)
        count = await asyncio.to_thread(self._write_heartbeats, beats)
        self._heartbeats_heard(beats)
        return count

    def _write_heartbeats(self, beats: list[Heartbeat]) -> int:
        if not beats:
            return 0
        latest = {b.device_id: b for b in beats}   # one row per device in a single UPDATE … FROM
        rows = sorted(latest.values())
        written = 0
        for start in range(0, len(rows), BEAT_SLICE):
            params = _beat_params(rows[start:start + BEAT_SLICE])
            try:
                written += self._update_beats(params)
            except pg_errors.DeadlockDetected:   # against a transaction writing some of these rows: once more
                written += self._update_beats(params)
        return written

    def _update_beats(self, params: tuple) -> int:
        """One slice, its rows locked for as short a time as can be: its values encoded before the
        transaction, the lock and the UPDATE sent together. An edge's hello flips its row online from
        the event loop and waits for these locks: at 10,000 edges one transaction of every beat,
        encoding thousands of health documents between its lock and its UPDATE on a starved box,
        held node A's loop 3–7 s at a time (its stall log: `_run` in wait)."""
        with self.transaction() as conn:
            # the rows locked in id order first, as every multi-row write of devices does (lock_devices):
            # the UPDATE alone locks them in its plan's order, which crossed a transaction of the other
            # node writing some of them offline (its loop lagging) and deadlocked
            with conn.pipeline():
                lock_devices(conn, params[0])
                cursor = conn.execute(
                    "UPDATE devices d SET last_seen = u.at, health = coalesce(u.health, d.health), "
                    "restarts = coalesce(u.restarts, d.restarts) "
                    "FROM jsonb_to_recordset(%s::jsonb) AS u(id text, at float8, health jsonb, restarts int) "
                    "WHERE d.id = u.id", (params[1],))
            return cursor.rowcount

    def _heartbeats_hooks(self) -> list[Callable[[list[Heartbeat]], None]]:
        return [hook for listener in self._listeners if (hook := getattr(listener, "heartbeats_recorded", None))]

    def heartbeats_heard(self, beats: list[Heartbeat]) -> None:
        """Beats to the listeners without writing them (another node writes them: nats_hub)."""
        self._heartbeats_heard(list(beats))

    def _heartbeats_heard(self, beats: list[Heartbeat]) -> None:
        if beats:
            for hook in self._heartbeats_hooks():
                hook(beats)

    def poll_heartbeats(self) -> int:
        """Heartbeats other nodes wrote of edges this node does not serve (a WebSocket edge of
        another node), to the listeners' `heartbeats_recorded`; returns how many. Health is not in
        the change feed (every beat of every edge would flood it): it is read by last-seen time,
        HEARD_MARGIN_S back from the latest seen, so a beat written late is not missed."""
        beats = self._read_heartbeats() if self._heartbeats_hooks() else []
        self._heartbeats_heard(beats)
        return len(beats)

    async def poll_heartbeats_off_loop(self) -> int:
        """poll_heartbeats with the round trip in a worker thread; listeners hear on the loop."""
        beats = await asyncio.to_thread(self._read_heartbeats) if self._heartbeats_hooks() else []
        self._heartbeats_heard(beats)
        return len(beats)

    def _read_heartbeats(self) -> list[Heartbeat]:
        with self._serving_lock:
            serving = list(self._serving)
        rows = self._rows("SELECT id, last_seen, health::text, restarts FROM devices WHERE last_seen > %s "
                          "AND id NOT IN (SELECT unnest(%s::text[]))", (self._heard_through - HEARD_MARGIN_S, serving))
        beats = [Heartbeat(i, at, _loads(health), restarts) for i, at, health, restarts in rows
                 if at > self._heard.get(i, 0.0)]
        for beat in beats:
            self._heard[beat.device_id] = beat.at
            self._heard_through = max(self._heard_through, beat.at)
        return beats
