"""The registry: devices, tokens, bundles, deployments and deployed model versions in SQLite.

One connection in WAL mode with foreign keys on, used from the event loop thread: every call is
a handful of indexed statements (microseconds to a millisecond), and batch writes such as the
heartbeats of a thousand edges go in one transaction with `executemany`. The schema evolves
only through `MIGRATIONS`, applied in order at open, each in its own transaction.

Listeners (the selection index, the edge hub) hear about device changes after they commit;
`poll_external_changes` notices commits by other processes (e.g. `streamql federation provision`
while the service runs) and resets the listeners.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from federation.errors import Conflict, NotFound
from federation.records import (
    Bundle,
    Deployment,
    DeploymentTarget,
    Device,
    Heartbeat,
    ModelVersion,
    NewTarget,
    RegistryListener,
    TokenRecord,
    version_key,
)
from federation.registry_deployments import DeploymentStore
from federation.registry_models import ModelVersionStore
from federation.schema import (
    DEPLOYMENT_ACTIONS,
    DEPLOYMENT_STATES,
    SCHEMA_VERSION,
    TARGET_STATES,
    TOKEN_ROLES,
    connect,
    migrate,
    schema_version,
)

__all__ = [
    "Bundle", "Deployment", "DeploymentTarget", "Device", "Heartbeat", "ModelVersion", "NewTarget", "Registry",
    "RegistryListener", "TokenRecord", "DEPLOYMENT_ACTIONS", "DEPLOYMENT_STATES", "SCHEMA_VERSION",
    "TARGET_STATES", "TOKEN_ROLES", "version_key",
]
INLINE_BUNDLE_LIMIT = 256 * 1024  # larger bundles live as files under the data directory
_CHUNK = 5000  # ids per `IN (…)` list, well under SQLite's variable limit


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True, separators=(",", ":"))


HEARD_MARGIN_S = 10.0   # poll_heartbeats looks this far behind the latest beat it saw (another node's clock, its flush)


class DecodedJson:
    """json.loads of the devices' JSON columns, each text decoded once: every fleet statement reads
    the facts of every device it selects, and decoding them again each time (300 texts for 100
    devices, ~5 ms) was a large part of what the event loop did under the soak. A dict comes back
    as a copy of its top level (a caller may change that); what is nested is shared and read-only."""

    LIMIT = 50_000          # texts kept (old health texts are dropped by starting afresh)

    def __init__(self):
        self._values: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        value = self._values.get(text)
        if value is None:
            value = json.loads(text)
            if len(self._values) >= self.LIMIT:
                self._values.clear()
            self._values[text] = value
        return dict(value) if type(value) is dict else value


# --- the registry -----------------------------------------------------------------------------
class Registry(DeploymentStore, ModelVersionStore):
    """The federation's persistent state; reopen the same file to get it back after a restart."""

    shared = False   # one process serves it: nothing to follow, no other rollout controller

    def __init__(self, path: str | os.PathLike, *, bundle_dir: str | os.PathLike | None = None,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else self.path.parent / "bundles"
        self.clock = clock
        self._conn = connect(self.path)
        self._depth = 0
        self._listeners: list[RegistryListener] = []
        migrate(self._conn)
        self._data_version = self._pragma_data_version()
        self._beats_version = self._data_version   # poll_heartbeats' own mark (not poll_external_changes')
        self._serving: set[str] = set()             # edges this process set online (poll_heartbeats skips them)
        self._heard: dict[str, float] = {}          # the latest beat passed on or written, per device
        self._heard_through = self.clock()
        self._known = self._device_extent()  # (deletions/rewrites counter, max rowid) we are in sync with
        self._decoded = DecodedJson()

    # --- plumbing ------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return schema_version(self._conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self._conn
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")
        finally:
            self._depth = 0

    def add_listener(self, listener: RegistryListener, devices: Iterable[Device] | None = None) -> None:
        """Follow device changes from now on, starting from `devices` (default: every device, read now)."""
        self._listeners.append(listener)
        listener.reset(self.iter_devices() if devices is None else devices)

    def remove_listener(self, listener: RegistryListener) -> None:
        self._listeners.remove(listener)

    def _pragma_data_version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def _device_extent(self) -> tuple[int, int]:
        return self._conn.execute(
            "SELECT (SELECT value FROM registry_counters WHERE name = 'device_rewrites'), "
            "coalesce(max(rowid), 0) FROM devices").fetchone()

    @contextlib.contextmanager
    def _device_write(self) -> Iterator[sqlite3.Connection]:
        """A transaction writing devices; it keeps us in sync unless another process wrote first."""
        with self.transaction() as conn:
            in_sync = self._device_extent() == self._known
            yield conn
            after = self._device_extent()
        if in_sync:
            self._known = after

    def poll_external_changes(self) -> bool:
        """Bring the listeners up to date when another process committed since the last poll.

        Costs one pragma when nothing changed. Devices another process added (the `provision`
        command) are passed on one by one; a deletion or metadata change elsewhere resets the
        listeners from the whole table. Tokens need nothing: each request reads them afresh.
        """
        version = self._pragma_data_version()
        if version == self._data_version:
            return False
        self._data_version = version
        extent = self._device_extent()
        if extent == self._known:
            return False
        if extent[0] != self._known[0]:
            devices = list(self.iter_devices())
            for listener in self._listeners:
                listener.reset(devices)
        else:
            self._notify_changed([self._device(row) for row in self._conn.execute(
                f"SELECT {self._DEVICE_COLUMNS} FROM devices WHERE rowid > ?", (self._known[1],))])
        self._known = extent
        return True

    def watch(self, wake: Callable[[str], None] | None) -> None:
        """Nothing wakes us: other processes' commits are noticed by `poll_external_changes`."""

    # one process drives every deployment: the claims of a shared registry always succeed here
    def claim_deployment(self, deployment_id: int) -> bool:
        return True

    def holds_deployment(self, deployment_id: int) -> bool:
        return True

    def release_deployment(self, deployment_id: int) -> None:
        pass

    def _models_changed(self, device_id: str) -> None:
        """Tell listeners that care (the fleet table) which models now run on a device."""
        hooks = [hook for listener in self._listeners if (hook := getattr(listener, "models_changed", None))]
        if hooks:
            models = self.model_versions([device_id]).get(device_id, {})
            for hook in hooks:
                hook(device_id, models)

    def _notify_changed(self, devices: Iterable[Device]) -> None:
        for device in devices:
            for listener in self._listeners:
                listener.device_changed(device)

    # --- devices -------------------------------------------------------------------------------
    _DEVICE_COLUMNS = "id, metadata, capabilities, created, last_seen, online, health, restarts"

    def _device(self, row: tuple) -> Device:
        decoded = self._decoded
        return Device(row[0], decoded(row[1]), decoded(row[2]), row[3], row[4], bool(row[5]), decoded(row[6]), row[7])

    def add_device(self, device_id: str, metadata: dict | None = None, capabilities: dict | None = None, *,
                   token_hash: str, token_label: str = "device") -> Device:
        """Register a device together with the hash of its token; Conflict if the id exists."""
        now = self.clock()
        try:
            with self._device_write() as conn:
                conn.execute("INSERT INTO devices (id, metadata, capabilities, created) VALUES (?, ?, ?, ?)",
                             (device_id, _json(metadata), _json(capabilities), now))
                conn.execute("INSERT INTO tokens (hash, role, device_id, label, created) VALUES (?, 'device', ?, ?, ?)",
                             (token_hash, device_id, token_label, now))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"device {device_id!r} is already registered") from exc
        device = Device(device_id, dict(metadata or {}), dict(capabilities or {}), now)
        self._notify_changed([device])
        return device

    def add_devices(self, devices: Iterable[tuple[str, dict | None, dict | None, str]]) -> int:
        """Register many (id, metadata, capabilities, token hash) in one transaction; all or none."""
        now = self.clock()
        rows = [(i, _json(m), _json(c), h) for i, m, c, h in devices]
        try:
            with self._device_write() as conn:
                conn.executemany("INSERT INTO devices (id, metadata, capabilities, created) VALUES (?, ?, ?, ?)",
                                 [(i, m, c, now) for i, m, c, _ in rows])
                conn.executemany("INSERT INTO tokens (hash, role, device_id, label, created) "
                                 "VALUES (?, 'device', ?, 'device', ?)", [(h, i, now) for i, _, _, h in rows])
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"some of these devices are already registered: {exc}") from exc
        self._notify_changed(Device(i, json.loads(m), json.loads(c), now) for i, m, c, _ in rows)
        return len(rows)

    def get_device(self, device_id: str) -> Device | None:
        row = self._conn.execute(f"SELECT {self._DEVICE_COLUMNS} FROM devices WHERE id = ?", (device_id,)).fetchone()
        return self._device(row) if row else None

    def require_device(self, device_id: str) -> Device:
        device = self.get_device(device_id)
        if device is None:
            raise NotFound(f"no device {device_id!r} is registered")
        return device

    def get_devices(self, device_ids: Sequence[str]) -> list[Device]:
        """The devices with these ids, in the order given (unknown ids left out)."""
        found: dict[str, Device] = {}
        for start in range(0, len(device_ids), _CHUNK):
            chunk = device_ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT {self._DEVICE_COLUMNS} FROM devices WHERE id IN ({marks})", chunk):
                found[row[0]] = self._device(row)
        return [found[i] for i in device_ids if i in found]

    def known_device_ids(self, device_ids: Sequence[str]) -> set[str]:
        """Which of these ids are registered (ids only: nothing decoded)."""
        found: set[str] = set()
        for start in range(0, len(device_ids), _CHUNK):
            chunk = device_ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self._conn.execute(f"SELECT id FROM devices WHERE id IN ({marks})", chunk))
        return found

    def iter_devices(self) -> Iterator[Device]:
        for row in self._conn.execute(f"SELECT {self._DEVICE_COLUMNS} FROM devices ORDER BY id"):
            yield self._device(row)

    def list_devices(self, *, online: bool | None = None, limit: int | None = None, offset: int = 0) -> list[Device]:
        sql, args = f"SELECT {self._DEVICE_COLUMNS} FROM devices", []
        if online is not None:
            sql += " WHERE online = ?"
            args.append(int(online))
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        return [self._device(row) for row in self._conn.execute(sql, args)]

    def device_count(self, *, online: bool | None = None) -> int:
        if online is None:
            return self._conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        return self._conn.execute("SELECT count(*) FROM devices WHERE online = ?", (int(online),)).fetchone()[0]

    def delete_device(self, device_id: str) -> bool:
        """Forget a device, its tokens, its deployment targets and model versions."""
        with self._device_write() as conn:
            deleted = conn.execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount > 0
        if deleted:
            for listener in self._listeners:
                listener.device_removed(device_id)
        return deleted

    def update_device(self, device_id: str, *, metadata: dict | None = None, capabilities: dict | None = None,
                      health: dict | None = None, restarts: int | None = None) -> Device:
        """Replace the given fields (None leaves a field as it is); NotFound for an unknown id."""
        sets, args = [], []
        for column, value in (("metadata", metadata), ("capabilities", capabilities), ("health", health)):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(_json(value))
        if restarts is not None:
            sets.append("restarts = ?")
            args.append(int(restarts))
        if sets:
            with self._device_write() as conn:
                if conn.execute(f"UPDATE devices SET {', '.join(sets)} WHERE id = ?", [*args, device_id]).rowcount == 0:
                    raise NotFound(f"no device {device_id!r} is registered")
        device = self.require_device(device_id)
        if metadata is not None or capabilities is not None:
            self._notify_changed([device])
        return device

    def set_online(self, device_id: str, online: bool, *, at: float | None = None) -> None:
        """An edge connected (online, last seen now) or went away (offline, last seen kept)."""
        at = self.clock() if at is None else at
        (self._serving.add if online else self._serving.discard)(device_id)
        with self.transaction() as conn:
            if online:
                cur = conn.execute("UPDATE devices SET online = 1, last_seen = ? WHERE id = ?", (at, device_id))
            else:
                cur = conn.execute("UPDATE devices SET online = 0 WHERE id = ?", (device_id,))
            if cur.rowcount == 0:
                raise NotFound(f"no device {device_id!r} is registered")
        for listener in self._listeners:
            listener.online_changed([device_id], online)

    def mark_all_offline(self) -> int:
        """At start no edge is connected yet, whatever the last run left behind."""
        with self.transaction() as conn:
            self._serving.clear()
            ids = [row[0] for row in conn.execute("SELECT id FROM devices WHERE online = 1")]
            conn.execute("UPDATE devices SET online = 0 WHERE online = 1")
        if ids:
            for listener in self._listeners:
                listener.online_changed(ids, False)
        return len(ids)

    def record_heartbeats(self, beats: Iterable[Heartbeat]) -> int:
        """Last seen, health and restarts of many devices in one transaction; returns rows updated."""
        beats = list(beats)
        rows = [(b.at, None if b.health is None else _json(b.health), b.restarts, b.device_id) for b in beats]
        if not rows:
            return 0
        with self.transaction() as conn:
            cur = conn.executemany("UPDATE devices SET last_seen = ?, health = coalesce(?, health), "
                                   "restarts = coalesce(?, restarts) WHERE id = ?", rows)
            count = cur.rowcount
        for beat in beats:
            if beat.at > self._heard.get(beat.device_id, 0.0):
                self._heard[beat.device_id] = beat.at
        self.heartbeats_heard(beats)
        return count

    def heartbeats_heard(self, beats: list[Heartbeat]) -> None:
        """Beats to the listeners without writing them (another node writes them: nats_hub)."""
        for listener in self._listeners:
            hook = getattr(listener, "heartbeats_recorded", None)   # optional: the fleet table has it
            if hook is not None:
                hook(beats)

    def poll_heartbeats(self) -> int:
        """Heartbeats another process sharing this file wrote (federation nodes on one data directory,
        edges on NATS) of edges this one did not set online (a WebSocket edge of the other node), to
        the listeners; returns how many. One pragma while no other process wrote."""
        version = self._pragma_data_version()
        if version == self._beats_version:
            return 0
        self._beats_version = version
        since = self._heard_through - HEARD_MARGIN_S
        wanted = [i for i, at in self._conn.execute("SELECT id, last_seen FROM devices WHERE last_seen > ?", (since,))
                  if i not in self._serving and at > self._heard.get(i, 0.0)]
        beats = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            beats += [Heartbeat(i, at, json.loads(health) if health else None, restarts) for i, at, health, restarts
                      in self._conn.execute("SELECT id, last_seen, health, restarts FROM devices WHERE id IN "
                                            f"({','.join('?' * len(chunk))})", chunk)]
        for beat in beats:
            self._heard[beat.device_id] = beat.at
            self._heard_through = max(self._heard_through, beat.at)
        if beats:
            self.heartbeats_heard(beats)
        return len(beats)

    # --- tokens --------------------------------------------------------------------------------
    _TOKEN_COLUMNS = "id, role, device_id, label, created, revoked"

    def add_token(self, token_hash: str, role: str, *, label: str = "", device_id: str | None = None) -> TokenRecord:
        now = self.clock()
        try:
            with self.transaction() as conn:
                cur = conn.execute("INSERT INTO tokens (hash, role, device_id, label, created) VALUES (?, ?, ?, ?, ?)",
                                   (token_hash, role, device_id, label, now))
        except sqlite3.IntegrityError as exc:
            if device_id is not None and self.get_device(device_id) is None:
                raise NotFound(f"no device {device_id!r} is registered") from exc
            raise Conflict(f"cannot store a {role!r} token: {exc}") from exc
        return TokenRecord(cur.lastrowid, role, device_id, label, now, None)

    def token_by_hash(self, token_hash: str) -> tuple[TokenRecord, str] | None:
        """The token stored under this hash (revoked ones too) and the stored hash itself."""
        row = self._conn.execute(f"SELECT {self._TOKEN_COLUMNS}, hash FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        return (TokenRecord(*row[:6]), row[6]) if row else None

    def get_token(self, token_id: int) -> TokenRecord | None:
        row = self._conn.execute(f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return TokenRecord(*row) if row else None

    def list_tokens(self, *, include_revoked: bool = False, device_id: str | None = None) -> list[TokenRecord]:
        sql, args = f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE 1", []
        if not include_revoked:
            sql += " AND revoked IS NULL"
        if device_id is not None:
            sql += " AND device_id = ?"
            args.append(device_id)
        return [TokenRecord(*row) for row in self._conn.execute(sql + " ORDER BY id", args)]

    def revoke_token(self, token_id: int) -> bool:
        with self.transaction() as conn:
            return conn.execute("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                (self.clock(), token_id)).rowcount > 0

    def revoked_among(self, token_ids: Sequence[int]) -> set[int]:
        """Which of these token ids are revoked (or gone): the sessions sweep asks this."""
        ids = [int(t) for t in token_ids][:10_000]
        if not ids:
            return set()
        found = dict(self._conn.execute(f"SELECT id, revoked FROM tokens WHERE id IN ({','.join('?' * len(ids))})",
                                        ids).fetchall())
        return {t for t in ids if t not in found or found[t] is not None}

    def revoke_device_tokens(self, device_id: str) -> int:
        with self.transaction() as conn:
            return conn.execute("UPDATE tokens SET revoked = ? WHERE device_id = ? AND revoked IS NULL",
                                (self.clock(), device_id)).rowcount

    def has_active_token(self, role: str) -> bool:
        return self._conn.execute("SELECT 1 FROM tokens WHERE role = ? AND revoked IS NULL LIMIT 1", (role,)).fetchone() is not None

    # --- bundles -------------------------------------------------------------------------------
    _BUNDLE_COLUMNS = "name, version, sha256, manifest, size, path, uploaded, uploader"

    # --- saved queries ----------------------------------------------------------------------------
    _SAVED_COLUMNS = ("name", "text", "description", "created", "updated", "created_by")

    def save_query(self, name: str, text: str, *, description: str = "", created_by: str = "") -> dict:
        """Keep a named statement (replacing one of the same name); returns it."""
        now = self.clock()
        with self.transaction() as conn:
            conn.execute("INSERT INTO saved_queries (name, text, description, created, updated, created_by) "
                         "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET text = excluded.text, "
                         "description = excluded.description, updated = excluded.updated",
                         (name, text, description, now, now, created_by))
        return self.saved_query(name)  # type: ignore[return-value]

    def saved_query(self, name: str) -> dict | None:
        row = self._conn.execute(f"SELECT {', '.join(self._SAVED_COLUMNS)} FROM saved_queries WHERE name = ?",
                                 (name,)).fetchone()
        return dict(zip(self._SAVED_COLUMNS, row)) if row else None

    def saved_queries(self) -> list[dict]:
        return [dict(zip(self._SAVED_COLUMNS, row)) for row in self._conn.execute(
            f"SELECT {', '.join(self._SAVED_COLUMNS)} FROM saved_queries ORDER BY name")]

    def delete_saved_query(self, name: str) -> bool:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM saved_queries WHERE name = ?", (name,)).rowcount > 0

    # --- definitions made at the federation ------------------------------------------------------
    def add_definition(self, text: str) -> None:
        """Keep a statement that defined something (create function, create type, drop …)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO definitions (text, created) VALUES (?, ?)", (text, time.time()))

    def definitions(self) -> list[str]:
        """The kept definitions, oldest first (replaying them in order rebuilds what they made)."""
        return [row[0] for row in self._conn.execute("SELECT text FROM definitions ORDER BY id")]

    @staticmethod
    def _bundle(row: tuple) -> Bundle:
        return Bundle(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])

    def add_bundle(self, name: str, version: str, data: bytes, manifest: dict | None = None, *,
                   uploader: str = "") -> Bundle:
        """Store a bundle's bytes (inline, or as a file when large); the same bytes again is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        existing = self.get_bundle(name, version)
        if existing is not None:
            if existing.sha256 == digest:
                return existing
            raise Conflict(f"bundle {name!r} version {version!r} exists with different contents")
        path = None
        if len(data) > INLINE_BUNDLE_LIMIT:
            path = f"{digest}.bundle"
            _write_atomically(self.bundle_dir / path, data)
        now = self.clock()
        try:
            with self.transaction() as conn:
                conn.execute(f"INSERT INTO bundles ({self._BUNDLE_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (name, version, digest, _json(manifest), len(data), path, now, uploader,
                              None if path else sqlite3.Binary(data)))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"bundle {name!r} version {version!r} exists") from exc
        return Bundle(name, version, digest, dict(manifest or {}), len(data), path, now, uploader)

    def get_bundle(self, name: str, version: str | None = None) -> Bundle | None:
        """A bundle by name and version; without a version, its latest one."""
        if version is not None:
            row = self._conn.execute(f"SELECT {self._BUNDLE_COLUMNS} FROM bundles WHERE name = ? AND version = ?",
                                     (name, version)).fetchone()
            return self._bundle(row) if row else None
        versions = self.list_bundles(name)
        return versions[-1] if versions else None

    def list_bundles(self, name: str | None = None) -> list[Bundle]:
        """Bundles by name, each name's versions oldest to newest."""
        sql, args = f"SELECT {self._BUNDLE_COLUMNS} FROM bundles", ()
        if name is not None:
            sql, args = sql + " WHERE name = ?", (name,)
        bundles = [self._bundle(row) for row in self._conn.execute(sql, args)]
        return sorted(bundles, key=lambda b: (b.name, version_key(b.version)))

    def bundle_data(self, bundle: Bundle) -> bytes:
        """The bundle's bytes, checked against its sha256."""
        if bundle.path is None:
            row = self._conn.execute("SELECT data FROM bundles WHERE name = ? AND version = ?",
                                     (bundle.name, bundle.version)).fetchone()
            if row is None:
                raise NotFound(f"no bundle {bundle.name!r} version {bundle.version!r}")
            data = bytes(row[0])
        else:
            data = (self.bundle_dir / bundle.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != bundle.sha256:
            raise RuntimeError(f"bundle {bundle.name!r} {bundle.version!r} does not match its sha256")
        return data

    def delete_bundle(self, name: str, version: str) -> bool:
        bundle = self.get_bundle(name, version)
        if bundle is None:
            return False
        with self.transaction() as conn:
            conn.execute("DELETE FROM bundles WHERE name = ? AND version = ?", (name, version))
            still_used = bundle.path and conn.execute("SELECT 1 FROM bundles WHERE path = ?", (bundle.path,)).fetchone()
        if bundle.path and not still_used:
            with contextlib.suppress(FileNotFoundError):
                (self.bundle_dir / bundle.path).unlink()
        return True



def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
