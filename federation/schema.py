"""The registry's SQLite schema: its migrations, applied in order at open, each in a transaction.

A database records every migration it went through in `schema_version`; opening an older one
brings it up to `SCHEMA_VERSION`. Change the schema only by appending a migration.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TOKEN_ROLES = ("read", "deploy", "admin", "device")
DEPLOYMENT_ACTIONS = ("deploy", "rollback", "undeploy")
DEPLOYMENT_STATES = ("pending", "running", "done", "aborted", "failed", "cancelled", "nothing_selected")
# installed: acked, waiting for its health report; rolled_back: undone after the rollout aborted
TARGET_STATES = ("pending", "sending", "installed", "done", "skipped", "failed", "rolled_back")


# --- migrations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...] = ()
    apply: Callable[[sqlite3.Connection], None] | None = None  # for steps SQL alone cannot do

    def run(self, conn: sqlite3.Connection) -> None:
        for statement in self.statements:
            conn.execute(statement)
        if self.apply is not None:
            self.apply(conn)


def _in_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _deployment_targets(states: Sequence[str], name: str = "deployment_targets",
                        deployments: str = "deployments") -> str:
    return f"""CREATE TABLE {name} (
            deployment_id INTEGER NOT NULL REFERENCES {deployments}(id) ON DELETE CASCADE,
            device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({_in_list(states)})),
            reason TEXT,
            variant TEXT,
            wave INTEGER NOT NULL DEFAULT 0,
            updated REAL NOT NULL,
            PRIMARY KEY (deployment_id, device_id)
        )"""


def _deployments(states: Sequence[str], name: str = "deployments") -> str:
    return f"""CREATE TABLE {name} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            action TEXT NOT NULL CHECK (action IN ({_in_list(DEPLOYMENT_ACTIONS)})),
            bundle TEXT NOT NULL,
            version TEXT,
            selection TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({_in_list(states)})),
            waves TEXT NOT NULL DEFAULT '{{}}',
            failure_threshold REAL NOT NULL DEFAULT 1.0,
            created_by TEXT NOT NULL DEFAULT ''
        )"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "devices and tokens", (
        """CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            metadata TEXT NOT NULL DEFAULT '{}',
            capabilities TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            last_seen REAL,
            online INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1))
        )""",
        f"""CREATE TABLE tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ({_in_list(TOKEN_ROLES)})),
            device_id TEXT REFERENCES devices(id) ON DELETE CASCADE,
            label TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            revoked REAL,
            CHECK ((role = 'device') = (device_id IS NOT NULL))
        )""",
    )),
    Migration(2, "device health; bundles, deployments, their targets and device models", (
        "ALTER TABLE devices ADD COLUMN health TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE devices ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE bundles (
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            manifest TEXT NOT NULL DEFAULT '{}',
            size INTEGER NOT NULL,
            data BLOB,
            path TEXT,
            uploaded REAL NOT NULL,
            uploader TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (name, version),
            CHECK ((data IS NULL) != (path IS NULL))
        )""",
        _deployments(("pending", "running", "done", "aborted", "failed", "cancelled")),  # as release 2 knew them
        _deployment_targets(("pending", "sending", "done", "skipped", "failed")),
        """CREATE TABLE device_models (
            device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            previous_version TEXT,
            updated REAL NOT NULL,
            PRIMARY KEY (device_id, model)
        )""",
    )),
    Migration(3, "indexes for reconnect catch-up, per-model lookups and token listing", (
        "CREATE INDEX deployment_targets_by_device ON deployment_targets (device_id, state)",
        "CREATE INDEX device_models_by_model ON device_models (model, version)",
        "CREATE INDEX tokens_by_device ON tokens (device_id)",
        "CREATE INDEX deployments_by_state ON deployments (state)",
    )),
    Migration(4, "a counter of device deletions and metadata changes, for other processes to notice", (
        "CREATE TABLE registry_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO registry_counters VALUES ('device_rewrites', 0)",
        """CREATE TRIGGER devices_deleted AFTER DELETE ON devices BEGIN
            UPDATE registry_counters SET value = value + 1 WHERE name = 'device_rewrites'; END""",
        """CREATE TRIGGER devices_rewritten AFTER UPDATE OF metadata, capabilities ON devices BEGIN
            UPDATE registry_counters SET value = value + 1 WHERE name = 'device_rewrites'; END""",
    )),
    # SQLite cannot change a CHECK constraint: the table is rebuilt (nothing references it)
    Migration(5, "deployment targets may be installed (waiting for health) or rolled back", (
        _deployment_targets(TARGET_STATES, "deployment_targets_5"),
        "INSERT INTO deployment_targets_5 SELECT deployment_id, device_id, state, reason, variant, wave, updated "
        "FROM deployment_targets",
        "DROP TABLE deployment_targets",
        "ALTER TABLE deployment_targets_5 RENAME TO deployment_targets",
        "CREATE INDEX deployment_targets_by_device ON deployment_targets (device_id, state)",
    )),
    Migration(6, "definitions made at the federation (functions, types, tables), replayed at start", (
        """CREATE TABLE definitions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            text TEXT NOT NULL,
            created REAL NOT NULL
        )""",
    )),
    # A CHECK constraint again: both tables are rebuilt, the targets first into a table that
    # references the new deployments, so no cascade deletes them; renaming rewrites the reference.
    Migration(7, "a deployment that selects nobody ends as nothing_selected; saved queries", (
        _deployments(DEPLOYMENT_STATES, "deployments_7"),
        "INSERT INTO deployments_7 SELECT id, action, bundle, version, selection, created, updated, state, waves, "
        "failure_threshold, created_by FROM deployments",
        _deployment_targets(TARGET_STATES, "deployment_targets_7", "deployments_7"),
        "INSERT INTO deployment_targets_7 SELECT deployment_id, device_id, state, reason, variant, wave, updated "
        "FROM deployment_targets",
        "DROP TABLE deployment_targets",
        "DROP TABLE deployments",
        "ALTER TABLE deployments_7 RENAME TO deployments",
        "ALTER TABLE deployment_targets_7 RENAME TO deployment_targets",
        "CREATE INDEX deployment_targets_by_device ON deployment_targets (device_id, state)",
        "CREATE INDEX deployments_by_state ON deployments (state)",
        """CREATE TABLE saved_queries (
            name TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            created_by TEXT NOT NULL DEFAULT ''
        )""",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied REAL NOT NULL, description TEXT NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Apply the migrations past the database's version up to `target` (default: all)."""
    target = SCHEMA_VERSION if target is None else target
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the registry has schema version {current}; this StreamQL knows up to {SCHEMA_VERSION}")
    for step in MIGRATIONS:
        if current < step.version <= target:
            conn.execute("BEGIN IMMEDIATE")
            try:
                step.run(conn)
                conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (step.version, time.time(), step.description))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            current = step.version
    return current


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions explicit), WAL, foreign keys enforced."""
    conn = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
