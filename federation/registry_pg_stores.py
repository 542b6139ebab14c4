"""Deployments, their targets and model versions on PostgreSQL (parts of `PgRegistry`, as mixins).

The same methods, arguments and results as federation/registry_deployments.py and
registry_models.py; only the SQL differs.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg.types.json import Jsonb

from federation.errors import NotFound
from federation.records import Deployment, DeploymentTarget, ModelVersion, NewTarget
from federation.registry_models import ModelVersionStore

_DEPLOYMENT_COLUMNS = "id, action, bundle, version, selection, created, updated, state, waves, failure_threshold, created_by"
_TARGET_COLUMNS = "deployment_id, device_id, state, reason, variant, wave, updated"
_MODEL_COLUMNS = "device_id, model, version, previous_version, updated"


def _deployment(row: Sequence) -> Deployment:
    return Deployment(*row[:8], dict(row[8]), row[9], row[10])


class PgDeploymentStore:
    """Needs `_rows`, `_one`, `_run`, `transaction()` and `clock` from the PgRegistry it is mixed into."""

    def create_deployment(self, action: str, bundle: str, version: str | None, selection: str,
                          targets: Iterable[NewTarget | tuple], *, waves: dict | None = None,
                          failure_threshold: float = 1.0, created_by: str = "", state: str = "pending") -> Deployment:
        """A deployment and its per-device targets, in one transaction."""
        now = self.clock()
        with self.transaction() as conn:
            deployment_id = conn.execute(
                "INSERT INTO deployments (action, bundle, version, selection, created, updated, state, waves, "
                "failure_threshold, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (action, bundle, version, selection, now, now, state, Jsonb(waves or {}), failure_threshold,
                 created_by)).fetchone()[0]
            if state in ("pending", "running"):   # its creator drives it: claimed before others can see it
                self.claim_deployment(deployment_id)
            rows = [(deployment_id, t.device_id, t.state, t.reason, t.variant, t.wave, now)
                    for t in (NewTarget(*t) for t in targets)]
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(f"INSERT INTO deployment_targets ({_TARGET_COLUMNS}) "
                                    "VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
        return Deployment(deployment_id, action, bundle, version, selection, now, now, state, dict(waves or {}),
                          failure_threshold, created_by)

    def get_deployment(self, deployment_id: int) -> Deployment | None:
        row = self._one(f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = %s", (int(deployment_id),))
        return _deployment(row) if row else None

    def list_deployments(self, *, state: str | Sequence[str] | None = None, limit: int = 100,
                         offset: int = 0) -> list[Deployment]:
        sql, args = f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments", []
        if state is not None:
            sql += " WHERE state = ANY(%s)"
            args.append([state] if isinstance(state, str) else list(state))
        sql += " ORDER BY id DESC LIMIT %s OFFSET %s"
        return [_deployment(row) for row in self._rows(sql, [*args, limit, offset])]

    def set_deployment_state(self, deployment_id: int, state: str) -> None:
        if self._run("UPDATE deployments SET state = %s, updated = %s WHERE id = %s",
                     (state, self.clock(), deployment_id)) == 0:
            raise NotFound(f"no deployment {deployment_id}")

    def update_deployment(self, deployment_id: int, *, state: str | None = None, waves: dict | None = None) -> None:
        """Change a deployment's state and/or its wave record; NotFound when unknown."""
        sets, args = ["updated = %s"], [self.clock()]
        if state is not None:
            sets.append("state = %s")
            args.append(state)
        if waves is not None:
            sets.append("waves = %s")
            args.append(Jsonb(waves))
        if self._run(f"UPDATE deployments SET {', '.join(sets)} WHERE id = %s", [*args, deployment_id]) == 0:
            raise NotFound(f"no deployment {deployment_id}")

    def move_targets(self, deployment_id: int, from_states: Sequence[str], to_state: str, reason: str | None,
                     *, device_id: str | None = None) -> int:
        sql = ("UPDATE deployment_targets SET state = %s, reason = %s, updated = %s "
               "WHERE deployment_id = %s AND state = ANY(%s)")
        args: list = [to_state, reason, self.clock(), deployment_id, list(from_states)]
        if device_id is not None:
            sql += " AND device_id = %s"
            args.append(device_id)
        return self._run(sql, args)

    def deployment_targets(self, deployment_id: int, *, state: str | None = None) -> list[DeploymentTarget]:
        sql, args = f"SELECT {_TARGET_COLUMNS} FROM deployment_targets WHERE deployment_id = %s", [deployment_id]
        if state is not None:
            sql += " AND state = %s"
            args.append(state)
        return [DeploymentTarget(*row) for row in self._rows(sql + " ORDER BY wave, device_id", args)]

    def deployment_target(self, deployment_id: int, device_id: str) -> DeploymentTarget | None:
        row = self._one(f"SELECT {_TARGET_COLUMNS} FROM deployment_targets WHERE deployment_id = %s AND device_id = %s",
                        (deployment_id, device_id))
        return DeploymentTarget(*row) if row else None

    def update_targets(self, deployment_id: int, updates: Iterable[tuple[str, str, str | None]]) -> int:
        """Set (device_id, state, reason) of many targets in one transaction."""
        now = self.clock()
        # in device order (stable: a later update of a device still wins): two transactions writing
        # targets of one deployment lock them in the same order
        rows = [(state, reason, now, deployment_id, device_id)
                for device_id, state, reason in sorted(updates, key=lambda update: update[0])]
        count = 0
        with self.transaction() as conn, conn.cursor() as cur:
            for row in rows:   # in order, as SQLite's executemany: a later update of a device wins
                count += cur.execute("UPDATE deployment_targets SET state = %s, reason = %s, updated = %s "
                                     "WHERE deployment_id = %s AND device_id = %s", row).rowcount
            cur.execute("UPDATE deployments SET updated = %s WHERE id = %s", (now, deployment_id))
        return count

    def target_counts(self, deployment_id: int | None = None) -> dict[str, int]:
        sql, args = "SELECT state, count(*) FROM deployment_targets", ()
        if deployment_id is not None:
            sql, args = sql + " WHERE deployment_id = %s", (deployment_id,)
        return dict(self._rows(sql + " GROUP BY state", args))

    def wave_counts(self, deployment_id: int) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for wave, state, count in self._rows("SELECT wave, state, count(*) FROM deployment_targets "
                                             "WHERE deployment_id = %s GROUP BY wave, state", (deployment_id,)):
            out.setdefault(wave, {})[state] = count
        return out

    def targets_open(self, deployment_id: int) -> bool:
        return self._one("SELECT 1 FROM deployment_targets WHERE deployment_id = %s AND state IN "
                         "('pending', 'sending', 'installed') LIMIT 1", (deployment_id,)) is not None

    def deployment_counts(self) -> dict[str, int]:
        return dict(self._rows("SELECT state, count(*) FROM deployments GROUP BY state"))

    def open_targets_for(self, device_id: str) -> list[tuple[Deployment, DeploymentTarget]]:
        """Targets of a device still pending or sending in unfinished deployments (for reconnects)."""
        cols = ", ".join(f"d.{c.strip()}" for c in _DEPLOYMENT_COLUMNS.split(","))
        tcols = ", ".join(f"t.{c.strip()}" for c in _TARGET_COLUMNS.split(","))
        rows = self._rows(
            f"SELECT {cols}, {tcols} FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id "
            "WHERE t.device_id = %s AND t.state IN ('pending', 'sending', 'installed') "
            "AND d.state IN ('pending', 'running') ORDER BY d.id", (device_id,))
        return [(_deployment(row[:11]), DeploymentTarget(*row[11:])) for row in rows]

    def refused_before(self, action: str, model: str, version: str | None) -> dict[str, str]:
        rows = self._rows(
            "SELECT t.device_id, t.reason FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id "
            "WHERE d.action = %s AND d.bundle = %s AND d.version IS NOT DISTINCT FROM %s AND t.state = 'failed' "
            "ORDER BY d.id", (action, model, version))
        return {device_id: reason or "failed" for device_id, reason in rows}


class PgModelVersionStore:
    """Which model version runs on which device; needs the same as PgDeploymentStore."""

    def set_model_version(self, device_id: str, model: str, version: str) -> ModelVersion:
        """Record that `version` now runs; the version it replaces becomes the previous one."""
        self._run(
            "INSERT INTO device_models (device_id, model, version, previous_version, updated) "
            "VALUES (%s, %s, %s, NULL, %s) ON CONFLICT (device_id, model) DO UPDATE SET "
            "previous_version = CASE WHEN device_models.version = excluded.version "
            "THEN device_models.previous_version ELSE device_models.version END, "
            "version = excluded.version, updated = excluded.updated", (device_id, model, version, self.clock()))
        self._models_changed(device_id)
        return self.model_version(device_id, model)  # type: ignore[return-value]

    def rollback_model_version(self, device_id: str, model: str) -> ModelVersion | None:
        """Make the previous version current again; None (and nothing changed) when there is none."""
        if not self._run("UPDATE device_models SET version = previous_version, previous_version = NULL, updated = %s "
                         "WHERE device_id = %s AND model = %s AND previous_version IS NOT NULL",
                         (self.clock(), device_id, model)):
            return None
        self._models_changed(device_id)
        return self.model_version(device_id, model)

    def remove_model(self, device_id: str, model: str) -> bool:
        removed = self._run("DELETE FROM device_models WHERE device_id = %s AND model = %s", (device_id, model)) > 0
        if removed:
            self._models_changed(device_id)
        return removed

    # the reconciliation is backend-neutral: it only calls the methods above
    record_active_models = ModelVersionStore.record_active_models

    def model_version(self, device_id: str, model: str) -> ModelVersion | None:
        row = self._one(f"SELECT {_MODEL_COLUMNS} FROM device_models WHERE device_id = %s AND model = %s",
                        (device_id, model))
        return ModelVersion(*row) if row else None

    def model_versions(self, device_ids: Sequence[str] | None = None) -> dict[str, dict[str, ModelVersion]]:
        """device id → model name → what runs there (all devices when no ids are given)."""
        if device_ids is None:
            rows = self._rows(f"SELECT {_MODEL_COLUMNS} FROM device_models")
        else:
            rows = self._rows(f"SELECT {_MODEL_COLUMNS} FROM device_models WHERE device_id = ANY(%s)",
                              (list(device_ids),))
        out: dict[str, dict[str, ModelVersion]] = {}
        for row in rows:
            out.setdefault(row[0], {})[row[1]] = ModelVersion(*row)
        return out

    def devices_running(self, model: str, version: str | None = None) -> list[str]:
        sql, args = "SELECT device_id FROM device_models WHERE model = %s", [model]
        if version is not None:
            sql += " AND version = %s"
            args.append(version)
        return [row[0] for row in self._rows(sql + " ORDER BY device_id", args)]
