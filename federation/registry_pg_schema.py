"""The registry's PostgreSQL schema: versioned migrations, applied at open under an advisory lock.

`registry_migrations` records every migration a database went through. Two nodes starting at
once both call `migrate`: the first takes the transaction-level advisory lock MIGRATION_LOCK and
applies what is missing; the second waits for it, then finds nothing left to do. Change the schema
only by appending a migration (the SQLite schema, federation/schema.py, evolves alongside it).

Text columns that are sorted on (device ids, names) use the "C" collation, so listings come out
in the same byte order as on SQLite whatever the database's locale.
"""
from __future__ import annotations

from dataclasses import dataclass

from federation.schema import DEPLOYMENT_ACTIONS, DEPLOYMENT_STATES, TARGET_STATES, TOKEN_ROLES

# advisory lock keys (two-int form: class, object); the class 0x5351 is "SQ"
LOCK_CLASS = 0x5351
MIGRATION_LOCK = 1          # (LOCK_CLASS, 1): one migrating node at a time
CHANGE_LOCK = 2             # (LOCK_CLASS, 2): device changes numbered in commit order
NODE_LOCK_CLASS = 0x5352    # (NODE_LOCK_CLASS, node key): held by a live node's watcher connection
ROLLOUT_LOCK_CLASS = 0x5353  # (ROLLOUT_LOCK_CLASS, deployment id): held by the node driving it
CHANNEL = "streamql_registry"


def _in_list(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


@dataclass(frozen=True)
class PgMigration:
    version: int
    description: str
    statements: tuple[str, ...]


PG_MIGRATIONS: tuple[PgMigration, ...] = (
    PgMigration(1, "devices, tokens, bundles, deployments, targets, models, definitions, saved queries", (
        """CREATE TABLE devices (
            id TEXT COLLATE "C" PRIMARY KEY,
            metadata JSONB NOT NULL DEFAULT '{}',
            capabilities JSONB NOT NULL DEFAULT '{}',
            created DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION,
            online BOOLEAN NOT NULL DEFAULT false,
            health JSONB NOT NULL DEFAULT '{}',
            restarts INTEGER NOT NULL DEFAULT 0,
            online_node INTEGER          -- the key of the node whose hub holds the edge's link
        )""",
        # containment (`metadata @> '{"region": "US"}'`) and key lookups by SQL; the in-memory
        # index answers selections, these serve operators' queries and `devices_matching`
        "CREATE INDEX devices_metadata ON devices USING GIN (metadata jsonb_path_ops)",
        "CREATE INDEX devices_region ON devices ((metadata ->> 'region'))",
        "CREATE INDEX devices_online ON devices (online_node) WHERE online",
        f"""CREATE TABLE tokens (
            id BIGSERIAL PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ({_in_list(TOKEN_ROLES)})),
            device_id TEXT COLLATE "C" REFERENCES devices(id) ON DELETE CASCADE,
            label TEXT NOT NULL DEFAULT '',
            created DOUBLE PRECISION NOT NULL,
            revoked DOUBLE PRECISION,
            CHECK ((role = 'device') = (device_id IS NOT NULL))
        )""",
        "CREATE INDEX tokens_by_device ON tokens (device_id)",
        # the bytes live here too (bytea, TOASTed and compressed): nodes share no file system,
        # pg_dump carries them, and deleting the row frees them (large objects would need lo_unlink)
        """CREATE TABLE bundles (
            name TEXT COLLATE "C" NOT NULL,
            version TEXT COLLATE "C" NOT NULL,
            sha256 TEXT NOT NULL,
            manifest JSONB NOT NULL DEFAULT '{}',
            size BIGINT NOT NULL,
            data BYTEA NOT NULL,
            uploaded DOUBLE PRECISION NOT NULL,
            uploader TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (name, version)
        )""",
        f"""CREATE TABLE deployments (
            id BIGSERIAL PRIMARY KEY,
            action TEXT NOT NULL CHECK (action IN ({_in_list(DEPLOYMENT_ACTIONS)})),
            bundle TEXT NOT NULL,
            version TEXT,
            selection TEXT NOT NULL DEFAULT '',
            created DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({_in_list(DEPLOYMENT_STATES)})),
            waves JSONB NOT NULL DEFAULT '{{}}',
            failure_threshold DOUBLE PRECISION NOT NULL DEFAULT 1.0,
            created_by TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX deployments_by_state ON deployments (state)",
        f"""CREATE TABLE deployment_targets (
            deployment_id BIGINT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
            device_id TEXT COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({_in_list(TARGET_STATES)})),
            reason TEXT,
            variant TEXT,
            wave INTEGER NOT NULL DEFAULT 0,
            updated DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (deployment_id, device_id)
        )""",
        "CREATE INDEX deployment_targets_by_device ON deployment_targets (device_id, state)",
        """CREATE TABLE device_models (
            device_id TEXT COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            model TEXT COLLATE "C" NOT NULL,
            version TEXT NOT NULL,
            previous_version TEXT,
            updated DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (device_id, model)
        )""",
        "CREATE INDEX device_models_by_model ON device_models (model, version)",
        """CREATE TABLE definitions (
            id BIGSERIAL PRIMARY KEY,
            text TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE saved_queries (
            name TEXT COLLATE "C" PRIMARY KEY,
            text TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            created DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            created_by TEXT NOT NULL DEFAULT ''
        )""",
    )),
    PgMigration(2, "a feed of device changes other nodes follow (LISTEN/NOTIFY wakes them)", (
        """CREATE TABLE device_changes (
            seq BIGSERIAL PRIMARY KEY,
            device_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('changed', 'online', 'removed')),
            origin TEXT DEFAULT current_setting('streamql.node', true),
            at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX device_changes_at ON device_changes (at)",
        "CREATE TABLE registry_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO registry_counters VALUES ('changes_pruned_through', 0)",
        # statement-level, over the transition tables: a bulk insert is one trigger call. The
        # advisory lock makes sequence order commit order, so a follower reading `seq > last`
        # never skips a change committed late with a smaller number.
        f"""CREATE FUNCTION streamql_devices_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {CHANGE_LOCK});
            INSERT INTO device_changes (device_id, kind) SELECT id, 'changed' FROM new_rows ORDER BY id;
            PERFORM pg_notify('{CHANNEL}', 'devices');
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION streamql_devices_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {CHANGE_LOCK});
            INSERT INTO device_changes (device_id, kind) SELECT id, 'removed' FROM old_rows ORDER BY id;
            PERFORM pg_notify('{CHANNEL}', 'devices');
            RETURN NULL;
        END $$""",
        # heartbeats (last_seen, health, restarts) are not changes others follow
        f"""CREATE FUNCTION streamql_devices_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o USING (id)
                       WHERE n.metadata IS DISTINCT FROM o.metadata OR n.capabilities IS DISTINCT FROM o.capabilities
                          OR n.online IS DISTINCT FROM o.online) THEN
                PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {CHANGE_LOCK});
                INSERT INTO device_changes (device_id, kind)
                    SELECT n.id, CASE WHEN n.metadata IS DISTINCT FROM o.metadata
                                        OR n.capabilities IS DISTINCT FROM o.capabilities
                                      THEN 'changed' ELSE 'online' END
                    FROM new_rows n JOIN old_rows o USING (id)
                    WHERE n.metadata IS DISTINCT FROM o.metadata OR n.capabilities IS DISTINCT FROM o.capabilities
                       OR n.online IS DISTINCT FROM o.online
                    ORDER BY n.id;
                PERFORM pg_notify('{CHANNEL}', 'devices');
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER devices_inserted AFTER INSERT ON devices REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION streamql_devices_inserted()""",
        """CREATE TRIGGER devices_deleted AFTER DELETE ON devices REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION streamql_devices_deleted()""",
        """CREATE TRIGGER devices_updated AFTER UPDATE ON devices
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION streamql_devices_updated()""",
        f"""CREATE FUNCTION streamql_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_ARGV[0]);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER tokens_revoked AFTER UPDATE OF revoked OR DELETE ON tokens
            FOR EACH STATEMENT EXECUTE FUNCTION streamql_notify('tokens')""",
        """CREATE TRIGGER deployments_changed AFTER INSERT OR UPDATE OF state ON deployments
            FOR EACH STATEMENT EXECUTE FUNCTION streamql_notify('deployments')""",
    )),
    PgMigration(3, "the device-update trigger joins its transition tables by hash, not in a nested loop", (
        # transition tables have no statistics: the planner joined old and new rows in a nested
        # loop, quadratic in the rows of one UPDATE — a heartbeat flush of 10,000 edges took 14 s
        # (2,000: 0.7 s; with a hash join 0.06 s, about what it costs without the trigger)
        "ALTER FUNCTION streamql_devices_updated() SET enable_nestloop = off",
    )),
)
PG_SCHEMA_VERSION = PG_MIGRATIONS[-1].version


def pg_schema_version(conn) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS registry_migrations (version INTEGER PRIMARY KEY, "
                 "applied TIMESTAMPTZ NOT NULL DEFAULT now(), description TEXT NOT NULL)")
    return conn.execute("SELECT coalesce(max(version), 0) FROM registry_migrations").fetchone()[0]


def pg_migrate(conn, target: int | None = None) -> int:
    """Apply the migrations past the database's version up to `target` (default: all), all in one
    transaction holding the migration lock: a failure leaves the database as it was."""
    target = PG_SCHEMA_VERSION if target is None else target
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
        current = pg_schema_version(conn)
        if current > PG_SCHEMA_VERSION:
            raise RuntimeError(f"the registry has schema version {current}; this StreamQL knows up to "
                               f"{PG_SCHEMA_VERSION}")
        for step in PG_MIGRATIONS:
            if current < step.version <= target:
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO registry_migrations (version, description) VALUES (%s, %s)",
                             (step.version, step.description))
                current = step.version
    return current
