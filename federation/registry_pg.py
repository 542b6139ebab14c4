"""The registry on PostgreSQL, for several federation nodes sharing one fleet.

    registry = PgRegistry("postgresql://streamql@db:5432/fleet")   # or open_registry(url)

The same methods as the SQLite `Registry` (federation/registry_interface.py names them), so the
service does not care which it has. The differences:
- connections come from a pool that checks each before handing it out: a restarted PostgreSQL
  costs the calls made while it is down an error, and the next ones reconnect by themselves;
- calls block the event loop for a round trip (a fraction of a millisecond on a LAN), as SQLite's
  did for a page read; the selection index stays in memory and answers selections itself; the
  hot ones, the heartbeat flush and poll and the hub's online/offline flips, have `…_off_loop`
  forms run in a thread;
- devices changed by another node reach this node's listeners (the selection index, the fleet
  table) through the change feed (`device_changes`, written by triggers, LISTEN/NOTIFY to wake
  up; federation/registry_pg_sync.py): `poll_external_changes` costs nothing when nothing changed;
- a device's `online` flag says which node holds its link (`online_node`); at start a node marks
  offline only what it held or what dead nodes held, not the edges of the nodes still running;
  an edge on NATS is served by every node: when the one named dies, a node serving it takes the
  name over (`mark_dead_nodes_offline`) and the edge stays online;
- bundle bytes are stored in the database (bytea), never as files: nodes share no file system;
- one node drives a deployment at a time (`claim_deployment`, a session advisory lock).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from federation.errors import Conflict, NotFound
from federation.records import Bundle, Device, RegistryListener, TokenRecord, version_key
from federation.registry_pg_beats import PgHeartbeats, lock_devices
from federation.registry_pg_pool import POOL_SIZE, IdleCheck
from federation.registry_pg_schema import CHANGE_LOCK, LOCK_CLASS, NODE_LOCK_CLASS, pg_migrate, pg_schema_version
from federation.registry_pg_stores import PgDeploymentStore, PgModelVersionStore
from federation.registry_pg_sync import KEEP_CHANGES, LockHolder, Watcher

log = logging.getLogger("streamql.federation.registry")

# JSONB as text, parsed here: four times faster than psycopg's per-value JSONB loader for a fleet
_DEVICE_COLUMNS = "id, metadata::text, capabilities::text, created, last_seen, online, health::text, restarts"
_TOKEN_COLUMNS = "id, role, device_id, label, created, revoked"
_BUNDLE_COLUMNS = "name, version, sha256, manifest, size, uploaded, uploader"
_SAVED_COLUMNS = ("name", "text", "description", "created", "updated", "created_by")
_loads = json.loads
_BULK = 5000             # devices per INSERT in add_devices
_FEED_BATCH = 20_000     # more changes than this at once: reload every device instead
_CHANGE_LOCK_SQL = f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, {CHANGE_LOCK})"


def _device(row: Sequence) -> Device:
    return Device(row[0], _loads(row[1]), _loads(row[2]), row[3], row[4], bool(row[5]), _loads(row[6]), row[7])


class PgRegistry(PgHeartbeats, PgDeploymentStore, PgModelVersionStore):
    """The federation's persistent state in a PostgreSQL database several nodes may share."""

    shared = True   # other processes write here while we run: follow them, take turns driving rollouts
    _change_lock_sql = _CHANGE_LOCK_SQL

    def __init__(self, conninfo: str, *, bundle_dir: Any = None, clock: Callable[[], float] = time.time,
                 pool_size: int = POOL_SIZE, watch: bool = True):
        self.conninfo = conninfo
        self.bundle_dir = None   # bundles live in the database
        self.clock = clock
        self.node_id = secrets.token_hex(8)
        self.node_key = secrets.randbelow(2**31 - 1) + 1
        self._listeners: list[RegistryListener] = []
        self._local = threading.local()
        self._wake: Callable[[str], None] | None = None
        self._serving: set[str] = set()   # edges this node's hub set online (the sweep reads it from its thread)
        self._serving_lock = threading.Lock()
        self._heard: dict[str, float] = {}   # poll_heartbeats: the last beat passed on, per device
        self._heard_through = self.clock()
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            pg_migrate(conn)
        self._idle_check = IdleCheck()
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, open=False, name="streamql-registry",
                                    kwargs={"autocommit": True, "connect_timeout": 5},
                                    configure=self._configure, check=self._idle_check.check,
                                    reset=self._idle_check.returned,
                                    # calls block the loop: with the server away, fail within seconds
                                    # (and try connecting afresh at the next call) rather than wait
                                    timeout=3.0, reconnect_timeout=0)
        self._pool.open(wait=True, timeout=30)
        self._seen = self._one("SELECT coalesce(max(seq), 0) FROM device_changes")[0]
        self._locks = LockHolder(conninfo)
        self._watcher: Watcher | None = None
        if watch:
            self._watcher = Watcher(conninfo, self.node_key, wake=self._woken,
                                    sweep=self.mark_dead_nodes_offline, prune=self.prune_changes)
            self._watcher.start()
            self._watcher.connected.wait(10)   # our node lock is held before we mark anything offline

    def _configure(self, conn: psycopg.Connection) -> None:
        # changes this node makes carry its id: its own change feed skips them (listeners already heard)
        conn.execute("SELECT set_config('streamql.node', %s, false)", (self.node_id,))

    # --- plumbing ------------------------------------------------------------------------------
    def close(self) -> None:
        began = time.monotonic()
        if self._watcher is not None:
            self._watcher.stop()
        watcher = time.monotonic()
        self._locks.close()
        self._pool.close()
        end = time.monotonic()
        (log.warning if end - began >= 1.0 else log.info)(
            "closing the registry took %.2f s: watcher %.2f s, pool %.2f s", end - began, watcher - began, end - watcher)

    def __enter__(self) -> "PgRegistry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            return pg_schema_version(conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """The transaction's connection inside `transaction()`, else one from the pool."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One write transaction; nested uses join the outer one (per thread)."""
        if getattr(self._local, "conn", None) is not None:
            yield self._local.conn
            return
        with self._pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def _rows(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence = ()) -> tuple | None:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchone()

    def _run(self, sql: str, args: Sequence = ()) -> int:
        with self.transaction() as conn:
            if sql.startswith(("UPDATE devices SET online", "UPDATE devices SET metadata",
                                   "UPDATE devices SET capabilities", "DELETE FROM devices")):
                # a change the feed records: its lock before the rows' (the trigger takes it after
                # them): two nodes' writes deadlocked, a flip holding its row and waiting for the lock
                # against a transaction holding the lock and waiting for that row (OnlineFlips)
                conn.execute(_CHANGE_LOCK_SQL)
            return conn.execute(sql, args).rowcount

    # --- listeners and the change feed -----------------------------------------------------------
    def add_listener(self, listener: RegistryListener, devices: Iterable[Device] | None = None) -> None:
        """Follow device changes from now on, starting from `devices` (default: every device, read now)."""
        self._listeners.append(listener)
        listener.reset(self.iter_devices() if devices is None else devices)

    def remove_listener(self, listener: RegistryListener) -> None:
        self._listeners.remove(listener)

    def watch(self, wake: Callable[[str], None] | None) -> None:
        """Have `wake(what)` called (from the watcher's thread) when another node changed
        'devices', 'tokens' or 'deployments'; the app hops to its loop from there."""
        self._wake = wake

    def _woken(self, what: str) -> None:
        if self._wake is not None:
            self._wake(what)

    def poll_external_changes(self) -> bool:
        """Bring the listeners up to date with what other nodes changed; free when nothing did."""
        if self._watcher is not None and not self._watcher.dirty.is_set():
            return False
        if self._watcher is not None:
            self._watcher.dirty.clear()
        try:
            return self._follow_feed()
        except (psycopg.Error, PoolTimeout) as exc:
            # the database is away: selections go on with what the index knows; caught up later
            log.warning("cannot read other nodes' changes now: %s", exc)
            if self._watcher is not None:
                self._watcher.dirty.set()
            return False

    def _follow_feed(self) -> bool:
        last, pruned = self._one("SELECT coalesce(max(seq), 0), (SELECT value FROM registry_counters "
                                 "WHERE name = 'changes_pruned_through') FROM device_changes")
        if last <= self._seen:
            return False
        rows = self._rows("SELECT device_id, kind FROM device_changes WHERE seq > %s AND seq <= %s "
                          "AND origin IS DISTINCT FROM %s ORDER BY seq LIMIT %s",
                          (self._seen, last, self.node_id, _FEED_BATCH + 1))
        if pruned > self._seen or len(rows) > _FEED_BATCH:   # too far behind: start again from the table
            devices = list(self.iter_devices())
            for listener in self._listeners:
                listener.reset(devices)
            self._seen = last
            return True
        self._seen = last
        if not rows:
            return False
        kinds: dict[str, set[str]] = {}
        for device_id, kind in rows:
            kinds.setdefault(device_id, set()).add(kind)
        found = {d.id: d for d in self.get_devices(list(kinds))}
        online: dict[bool, list[str]] = {True: [], False: []}
        for device_id, seen in kinds.items():
            device = found.get(device_id)
            if device is None:
                for listener in self._listeners:
                    listener.device_removed(device_id)
                continue
            if seen & {"changed", "removed"}:   # removed then added again: a new device
                for listener in self._listeners:
                    listener.device_changed(device)
            if "online" in seen or "changed" in seen:
                online[device.online].append(device_id)
        for state, ids in online.items():
            if ids:
                for listener in self._listeners:
                    listener.online_changed(ids, state)
        return True

    def prune_changes(self) -> None:
        """Drop feed entries older than KEEP_CHANGES; a node further behind reloads all devices."""
        with self.transaction() as conn:
            gone = conn.execute(f"DELETE FROM device_changes WHERE at < now() - interval '{KEEP_CHANGES}' "
                                "RETURNING seq").fetchall()
            if gone:
                conn.execute("UPDATE registry_counters SET value = greatest(value, %s) "
                             "WHERE name = 'changes_pruned_through'", (max(s for s, in gone),))

    def _models_changed(self, device_id: str) -> None:
        hooks = [hook for listener in self._listeners if (hook := getattr(listener, "models_changed", None))]
        if hooks:
            models = self.model_versions([device_id]).get(device_id, {})
            self._tell(lambda: [hook(device_id, models) for hook in hooks])

    def _notify_changed(self, devices: Iterable[Device]) -> None:
        devices = list(devices)
        self._tell(lambda: [listener.device_changed(device) for device in devices for listener in self._listeners])

    def _tell(self, call: Callable[[], Any]) -> None:
        """Listeners now, or, in `run_off_loop`'s worker thread, on the loop after its work."""
        held = getattr(self._local, "told", None)
        call() if held is None else held.append(call)

    async def run_off_loop(self, work: Callable[[], Any], executor=None) -> Any:
        """`work()` (registry calls) in a worker thread, its listeners told on the loop afterwards —
        also when it raised, for what it changed before: the selection index and the fleet table
        live on the loop."""
        def in_thread():
            self._local.told = told = []
            try:
                return work(), None, told
            except Exception as exc:  # noqa: BLE001 - raised again on the loop
                return None, exc, told
            finally:
                del self._local.told
        result, error, told = await asyncio.get_running_loop().run_in_executor(executor, in_thread)
        for call in told:
            call()
        if error is not None:
            raise error
        return result

    # --- one rollout controller at a time ----------------------------------------------------------
    def claim_deployment(self, deployment_id: int) -> bool:
        """Become the node that drives this deployment, unless a live node already is."""
        return self._locks.claim(deployment_id)

    def holds_deployment(self, deployment_id: int) -> bool:
        return self._locks.holds(deployment_id)

    def release_deployment(self, deployment_id: int) -> None:
        self._locks.release(deployment_id)

    # --- devices -------------------------------------------------------------------------------
    def add_device(self, device_id: str, metadata: dict | None = None, capabilities: dict | None = None, *,
                   token_hash: str, token_label: str = "device") -> Device:
        now = self.clock()
        try:
            with self.transaction() as conn:
                conn.execute("INSERT INTO devices (id, metadata, capabilities, created) VALUES (%s, %s, %s, %s)",
                             (device_id, Jsonb(metadata or {}), Jsonb(capabilities or {}), now))
                conn.execute("INSERT INTO tokens (hash, role, device_id, label, created) "
                             "VALUES (%s, 'device', %s, %s, %s)", (token_hash, device_id, token_label, now))
        except pg_errors.IntegrityError as exc:
            raise Conflict(f"device {device_id!r} is already registered") from exc
        device = Device(device_id, dict(metadata or {}), dict(capabilities or {}), now)
        self._notify_changed([device])
        return device

    def add_devices(self, devices: Iterable[tuple[str, dict | None, dict | None, str]]) -> int:
        """Register many (id, metadata, capabilities, token hash) in one transaction; all or none."""
        now = self.clock()
        rows = [(i, dict(m or {}), dict(c or {}), h) for i, m, c, h in devices]
        try:
            with self.transaction() as conn:
                for start in range(0, len(rows), _BULK):
                    chunk = rows[start:start + _BULK]
                    conn.execute("INSERT INTO devices (id, metadata, capabilities, created) "
                                 "SELECT i, m, c, %s FROM unnest(%s::text[], %s::jsonb[], %s::jsonb[]) AS u(i, m, c)",
                                 (now, [r[0] for r in chunk], [Jsonb(r[1]) for r in chunk],
                                  [Jsonb(r[2]) for r in chunk]))
                    conn.execute("INSERT INTO tokens (hash, role, device_id, label, created) "
                                 "SELECT h, 'device', i, 'device', %s FROM unnest(%s::text[], %s::text[]) AS u(h, i)",
                                 (now, [r[3] for r in chunk], [r[0] for r in chunk]))
        except pg_errors.IntegrityError as exc:
            raise Conflict(f"some of these devices are already registered: {exc}") from exc
        self._notify_changed(Device(i, m, c, now) for i, m, c, _ in rows)
        return len(rows)

    def get_device(self, device_id: str) -> Device | None:
        row = self._one(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = %s", (device_id,))
        return _device(row) if row else None

    def require_device(self, device_id: str) -> Device:
        device = self.get_device(device_id)
        if device is None:
            raise NotFound(f"no device {device_id!r} is registered")
        return device

    def get_devices(self, device_ids: Sequence[str]) -> list[Device]:
        """The devices with these ids, in the order given (unknown ids left out)."""
        found = {row[0]: _device(row) for row in
                 self._rows(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ANY(%s)", (list(device_ids),))}
        return [found[i] for i in device_ids if i in found]

    def known_device_ids(self, device_ids: Sequence[str]) -> set[str]:
        return {row[0] for row in self._rows("SELECT id FROM devices WHERE id = ANY(%s)", (list(device_ids),))}

    def iter_devices(self) -> Iterator[Device]:
        return iter([_device(row) for row in self._rows(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY id")])

    def devices_matching(self, metadata: dict) -> list[str]:
        """Ids of the devices whose metadata contains these pairs (the GIN index answers it)."""
        return [row[0] for row in self._rows("SELECT id FROM devices WHERE metadata @> %s ORDER BY id",
                                             (Jsonb(metadata),))]

    def list_devices(self, *, online: bool | None = None, limit: int | None = None, offset: int = 0) -> list[Device]:
        sql, args = f"SELECT {_DEVICE_COLUMNS} FROM devices", []
        if online is not None:
            sql += " WHERE online = %s"
            args.append(bool(online))
        sql += " ORDER BY id LIMIT %s OFFSET %s"
        return [_device(row) for row in self._rows(sql, [*args, limit, offset])]

    def device_count(self, *, online: bool | None = None) -> int:
        if online is None:
            return self._one("SELECT count(*) FROM devices")[0]
        return self._one("SELECT count(*) FROM devices WHERE online = %s", (bool(online),))[0]

    def delete_device(self, device_id: str) -> bool:
        deleted = self._run("DELETE FROM devices WHERE id = %s", (device_id,)) > 0
        if deleted:
            for listener in self._listeners:
                listener.device_removed(device_id)
        return deleted

    def update_device(self, device_id: str, *, metadata: dict | None = None, capabilities: dict | None = None,
                      health: dict | None = None, restarts: int | None = None) -> Device:
        sets, args = [], []
        for column, value in (("metadata", metadata), ("capabilities", capabilities), ("health", health)):
            if value is not None:
                sets.append(f"{column} = %s")
                args.append(Jsonb(value))
        if restarts is not None:
            sets.append("restarts = %s")
            args.append(int(restarts))
        if sets and self._run(f"UPDATE devices SET {', '.join(sets)} WHERE id = %s", [*args, device_id]) == 0:
            raise NotFound(f"no device {device_id!r} is registered")
        device = self.require_device(device_id)
        if metadata is not None or capabilities is not None:
            self._notify_changed([device])
        return device

    def set_online(self, device_id: str, online: bool, *, at: float | None = None) -> None:
        """An edge connected to this node (online, last seen now) or went away (offline)."""
        at = self.clock() if at is None else at
        with self._serving_lock:   # before the write: a sweep in between re-points nothing wrongly
            (self._serving.add if online else self._serving.discard)(device_id)
        if online:
            count = self._run("UPDATE devices SET online = true, online_node = %s, last_seen = %s WHERE id = %s",
                              (self.node_key, at, device_id))
        else:
            count = self._run("UPDATE devices SET online = false, online_node = NULL WHERE id = %s", (device_id,))
        if count == 0:
            with self._serving_lock:
                self._serving.discard(device_id)
            raise NotFound(f"no device {device_id!r} is registered")
        for listener in self._listeners:
            listener.online_changed([device_id], online)

    _DEAD_NODE = (f"online AND (online_node IS NULL OR online_node NOT IN (SELECT objid::bigint FROM pg_locks "
                  f"WHERE locktype = 'advisory' AND classid = {NODE_LOCK_CLASS} AND objsubid = 2 AND granted))")

    def mark_all_offline(self) -> int:
        """At start: what this node or a dead node held is offline; live nodes' edges stay online."""
        with self._serving_lock:
            self._serving.clear()
        where = f"online_node = %s OR ({self._DEAD_NODE})"
        with self.transaction() as conn:
            conn.execute(_CHANGE_LOCK_SQL)   # the feed's lock, then the rows in id order (see _run)
            lock_devices(conn, where=where, args=(self.node_key,))
            ids = [row[0] for row in conn.execute(
                f"UPDATE devices SET online = false, online_node = NULL WHERE {where} RETURNING id",
                (self.node_key,)).fetchall()]
        if ids:
            for listener in self._listeners:
                listener.online_changed(ids, False)
        return len(ids)

    def mark_dead_nodes_offline(self) -> int:
        """The watcher's sweep (from its thread): what dead nodes held goes offline, except the edges
        this node serves too — an edge on NATS is served by every node, whichever one the registry
        names — which stay online under this node's name. Written as nobody's change, so this node's
        listeners hear it through the feed as the other nodes' do. Never sets an edge online: a
        disconnect written meanwhile wins either way."""
        with self._serving_lock:
            serving = list(self._serving)
        with self.transaction() as conn:
            conn.execute(_CHANGE_LOCK_SQL)   # before any row (see _run)
            conn.execute("SELECT set_config('streamql.node', '', true)")
            lock_devices(conn, where=self._DEAD_NODE)   # in id order, as every multi-row write
            if serving:
                conn.execute(f"UPDATE devices SET online_node = %s WHERE id = ANY(%s) AND {self._DEAD_NODE}",
                             (self.node_key, serving))
            return len(conn.execute(f"UPDATE devices SET online = false, online_node = NULL WHERE {self._DEAD_NODE} "
                                    "RETURNING id").fetchall())

    # --- tokens --------------------------------------------------------------------------------
    def add_token(self, token_hash: str, role: str, *, label: str = "", device_id: str | None = None) -> TokenRecord:
        now = self.clock()
        try:
            with self.transaction() as conn:
                token_id = conn.execute("INSERT INTO tokens (hash, role, device_id, label, created) "
                                        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                                        (token_hash, role, device_id, label, now)).fetchone()[0]
        except pg_errors.ForeignKeyViolation as exc:
            raise NotFound(f"no device {device_id!r} is registered") from exc
        except pg_errors.IntegrityError as exc:
            raise Conflict(f"cannot store a {role!r} token: {exc}") from exc
        return TokenRecord(token_id, role, device_id, label, now, None)

    def token_by_hash(self, token_hash: str) -> tuple[TokenRecord, str] | None:
        row = self._one(f"SELECT {_TOKEN_COLUMNS}, hash FROM tokens WHERE hash = %s", (token_hash,))
        return (TokenRecord(*row[:6]), row[6]) if row else None

    def tokens_by_hashes(self, token_hashes: Sequence[str]) -> dict[str, tuple[TokenRecord, str, bool]]:
        """Many tokens in one round trip (the NATS auth callout's batches; safe from any thread):
        hash → (record, stored hash, whether its device is still registered)."""
        if not token_hashes:
            return {}
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join('t.' + c.strip() for c in _TOKEN_COLUMNS.split(','))}, t.hash, "
                "d.id IS NOT NULL FROM tokens t LEFT JOIN devices d ON d.id = t.device_id "
                "WHERE t.hash = ANY(%s)", (list(token_hashes),)).fetchall()
        return {row[6]: (TokenRecord(*row[:6]), row[6], bool(row[7])) for row in rows}

    def get_token(self, token_id: int) -> TokenRecord | None:
        row = self._one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = %s", (int(token_id),))
        return TokenRecord(*row) if row else None

    def list_tokens(self, *, include_revoked: bool = False, device_id: str | None = None) -> list[TokenRecord]:
        sql, args = f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE true", []
        if not include_revoked:
            sql += " AND revoked IS NULL"
        if device_id is not None:
            sql += " AND device_id = %s"
            args.append(device_id)
        return [TokenRecord(*row) for row in self._rows(sql + " ORDER BY id", args)]

    def revoke_token(self, token_id: int) -> bool:
        return self._run("UPDATE tokens SET revoked = %s WHERE id = %s AND revoked IS NULL",
                         (self.clock(), int(token_id))) > 0

    def revoked_among(self, token_ids: Sequence[int]) -> set[int]:
        ids = [int(t) for t in token_ids][:10_000]
        if not ids:
            return set()
        found = dict(self._rows("SELECT id, revoked FROM tokens WHERE id = ANY(%s)", (ids,)))
        return {t for t in ids if t not in found or found[t] is not None}

    def revoke_device_tokens(self, device_id: str) -> int:
        return self._run("UPDATE tokens SET revoked = %s WHERE device_id = %s AND revoked IS NULL",
                         (self.clock(), device_id))

    def has_active_token(self, role: str) -> bool:
        return self._one("SELECT 1 FROM tokens WHERE role = %s AND revoked IS NULL LIMIT 1", (role,)) is not None

    # --- saved queries and definitions -----------------------------------------------------------
    def save_query(self, name: str, text: str, *, description: str = "", created_by: str = "") -> dict:
        now = self.clock()
        self._run("INSERT INTO saved_queries (name, text, description, created, updated, created_by) "
                  "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET text = excluded.text, "
                  "description = excluded.description, updated = excluded.updated",
                  (name, text, description, now, now, created_by))
        return self.saved_query(name)  # type: ignore[return-value]

    def saved_query(self, name: str) -> dict | None:
        row = self._one(f"SELECT {', '.join(_SAVED_COLUMNS)} FROM saved_queries WHERE name = %s", (name,))
        return dict(zip(_SAVED_COLUMNS, row)) if row else None

    def saved_queries(self) -> list[dict]:
        return [dict(zip(_SAVED_COLUMNS, row))
                for row in self._rows(f"SELECT {', '.join(_SAVED_COLUMNS)} FROM saved_queries ORDER BY name")]

    def delete_saved_query(self, name: str) -> bool:
        return self._run("DELETE FROM saved_queries WHERE name = %s", (name,)) > 0

    def add_definition(self, text: str) -> None:
        self._run("INSERT INTO definitions (text, created) VALUES (%s, %s)", (text, time.time()))

    def definitions(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT text FROM definitions ORDER BY id")]

    # --- bundles -------------------------------------------------------------------------------
    @staticmethod
    def _bundle(row: Sequence) -> Bundle:
        return Bundle(row[0], row[1], row[2], row[3], row[4], None, row[5], row[6])

    def add_bundle(self, name: str, version: str, data: bytes, manifest: dict | None = None, *,
                   uploader: str = "") -> Bundle:
        """Store a bundle's bytes; the same bytes again is a no-op, other bytes a Conflict."""
        digest = hashlib.sha256(data).hexdigest()
        existing = self.get_bundle(name, version)
        if existing is not None:
            if existing.sha256 == digest:
                return existing
            raise Conflict(f"bundle {name!r} version {version!r} exists with different contents")
        now = self.clock()
        try:
            self._run(f"INSERT INTO bundles ({_BUNDLE_COLUMNS}, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                      (name, version, digest, Jsonb(manifest or {}), len(data), now, uploader, bytes(data)))
        except pg_errors.UniqueViolation as exc:
            raise Conflict(f"bundle {name!r} version {version!r} exists") from exc
        return Bundle(name, version, digest, dict(manifest or {}), len(data), None, now, uploader)

    def get_bundle(self, name: str, version: str | None = None) -> Bundle | None:
        if version is not None:
            row = self._one(f"SELECT {_BUNDLE_COLUMNS} FROM bundles WHERE name = %s AND version = %s", (name, version))
            return self._bundle(row) if row else None
        versions = self.list_bundles(name)
        return versions[-1] if versions else None

    def list_bundles(self, name: str | None = None) -> list[Bundle]:
        sql, args = f"SELECT {_BUNDLE_COLUMNS} FROM bundles", ()
        if name is not None:
            sql, args = sql + " WHERE name = %s", (name,)
        return sorted((self._bundle(row) for row in self._rows(sql, args)),
                      key=lambda b: (b.name, version_key(b.version)))

    def bundle_data(self, bundle: Bundle) -> bytes:
        """The bundle's bytes, checked against its sha256."""
        row = self._one("SELECT data FROM bundles WHERE name = %s AND version = %s", (bundle.name, bundle.version))
        if row is None:
            raise NotFound(f"no bundle {bundle.name!r} version {bundle.version!r}")
        data = bytes(row[0])
        if hashlib.sha256(data).hexdigest() != bundle.sha256:
            raise RuntimeError(f"bundle {bundle.name!r} {bundle.version!r} does not match its sha256")
        return data

    def delete_bundle(self, name: str, version: str) -> bool:
        return self._run("DELETE FROM bundles WHERE name = %s AND version = %s", (name, version)) > 0
