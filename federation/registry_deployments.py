"""The registry's deployments and their per-device targets (a part of `Registry`, as a mixin)."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from federation.errors import NotFound
from federation.records import Deployment, DeploymentTarget, NewTarget


def _json(value) -> str:
    return json.dumps(value if value is not None else {}, sort_keys=True, separators=(",", ":"))


class DeploymentStore:
    """Needs `_conn`, `transaction()` and `clock` from the Registry it is mixed into."""

    _conn: sqlite3.Connection

    # --- deployments ---------------------------------------------------------------------------
    _DEPLOYMENT_COLUMNS = "id, action, bundle, version, selection, created, updated, state, waves, failure_threshold, created_by"
    _TARGET_COLUMNS = "deployment_id, device_id, state, reason, variant, wave, updated"

    @staticmethod
    def _deployment(row: tuple) -> Deployment:
        return Deployment(*row[:8], json.loads(row[8]), row[9], row[10])

    def create_deployment(self, action: str, bundle: str, version: str | None, selection: str,
                          targets: Iterable[NewTarget | tuple], *, waves: dict | None = None,
                          failure_threshold: float = 1.0, created_by: str = "", state: str = "pending") -> Deployment:
        """A deployment and its per-device targets, in one transaction."""
        now = self.clock()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO deployments (action, bundle, version, selection, created, updated, state, waves, "
                "failure_threshold, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (action, bundle, version, selection, now, now, state, _json(waves), failure_threshold, created_by))
            deployment_id = cur.lastrowid
            rows = [(deployment_id, t.device_id, t.state, t.reason, t.variant, t.wave, now)
                    for t in (NewTarget(*t) for t in targets)]
            conn.executemany(f"INSERT INTO deployment_targets ({self._TARGET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return Deployment(deployment_id, action, bundle, version, selection, now, now, state, dict(waves or {}),
                          failure_threshold, created_by)

    def get_deployment(self, deployment_id: int) -> Deployment | None:
        row = self._conn.execute(f"SELECT {self._DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?",
                                 (deployment_id,)).fetchone()
        return self._deployment(row) if row else None

    def list_deployments(self, *, state: str | Sequence[str] | None = None, limit: int = 100,
                         offset: int = 0) -> list[Deployment]:
        sql, args = f"SELECT {self._DEPLOYMENT_COLUMNS} FROM deployments", []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args.extend(states)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        return [self._deployment(row) for row in self._conn.execute(sql, [*args, limit, offset])]

    def set_deployment_state(self, deployment_id: int, state: str) -> None:
        with self.transaction() as conn:
            if conn.execute("UPDATE deployments SET state = ?, updated = ? WHERE id = ?",
                            (state, self.clock(), deployment_id)).rowcount == 0:
                raise NotFound(f"no deployment {deployment_id}")

    def update_deployment(self, deployment_id: int, *, state: str | None = None, waves: dict | None = None) -> None:
        """Change a deployment's state and/or its wave record ({count, current}); NotFound when unknown."""
        sets, args = ["updated = ?"], [self.clock()]
        if state is not None:
            sets.append("state = ?")
            args.append(state)
        if waves is not None:
            sets.append("waves = ?")
            args.append(_json(waves))
        with self.transaction() as conn:
            if conn.execute(f"UPDATE deployments SET {', '.join(sets)} WHERE id = ?", [*args, deployment_id]).rowcount == 0:
                raise NotFound(f"no deployment {deployment_id}")

    def move_targets(self, deployment_id: int, from_states: Sequence[str], to_state: str, reason: str | None,
                     *, device_id: str | None = None) -> int:
        """Move every target in one of `from_states` (of one device, or all) to `to_state` with `reason`."""
        marks = ",".join("?" * len(from_states))
        sql = (f"UPDATE deployment_targets SET state = ?, reason = ?, updated = ? "
               f"WHERE deployment_id = ? AND state IN ({marks})")
        args: list = [to_state, reason, self.clock(), deployment_id, *from_states]
        if device_id is not None:
            sql += " AND device_id = ?"
            args.append(device_id)
        with self.transaction() as conn:
            return conn.execute(sql, args).rowcount

    def deployment_targets(self, deployment_id: int, *, state: str | None = None) -> list[DeploymentTarget]:
        sql, args = f"SELECT {self._TARGET_COLUMNS} FROM deployment_targets WHERE deployment_id = ?", [deployment_id]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        return [DeploymentTarget(*row) for row in self._conn.execute(sql + " ORDER BY wave, device_id", args)]

    def deployment_target(self, deployment_id: int, device_id: str) -> DeploymentTarget | None:
        row = self._conn.execute(f"SELECT {self._TARGET_COLUMNS} FROM deployment_targets "
                                 "WHERE deployment_id = ? AND device_id = ?", (deployment_id, device_id)).fetchone()
        return DeploymentTarget(*row) if row else None

    def update_targets(self, deployment_id: int, updates: Iterable[tuple[str, str, str | None]]) -> int:
        """Set (device_id, state, reason) of many targets in one transaction."""
        now = self.clock()
        rows = [(state, reason, now, deployment_id, device_id) for device_id, state, reason in updates]
        with self.transaction() as conn:
            cur = conn.executemany("UPDATE deployment_targets SET state = ?, reason = ?, updated = ? "
                                   "WHERE deployment_id = ? AND device_id = ?", rows)
            conn.execute("UPDATE deployments SET updated = ? WHERE id = ?", (now, deployment_id))
            return cur.rowcount

    def target_counts(self, deployment_id: int | None = None) -> dict[str, int]:
        """Targets per state, of one deployment or of all."""
        sql, args = "SELECT state, count(*) FROM deployment_targets", ()
        if deployment_id is not None:
            sql, args = sql + " WHERE deployment_id = ?", (deployment_id,)
        return dict(self._conn.execute(sql + " GROUP BY state", args).fetchall())

    def wave_counts(self, deployment_id: int) -> dict[int, dict[str, int]]:
        """wave → state → targets of one deployment: counted by the database, not listed (a
        deployment to 10,000 devices is looked at several times a second while it runs)."""
        out: dict[int, dict[str, int]] = {}
        for wave, state, count in self._conn.execute(
                "SELECT wave, state, count(*) FROM deployment_targets WHERE deployment_id = ? GROUP BY wave, state",
                (deployment_id,)):
            out.setdefault(wave, {})[state] = count
        return out

    def targets_open(self, deployment_id: int) -> bool:
        """Whether a target of the deployment is still pending, sending or installed (stops at the first)."""
        return self._conn.execute("SELECT 1 FROM deployment_targets WHERE deployment_id = ? AND state IN "
                                  "('pending', 'sending', 'installed') LIMIT 1", (deployment_id,)).fetchone() is not None

    def deployment_counts(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT state, count(*) FROM deployments GROUP BY state").fetchall())

    def open_targets_for(self, device_id: str) -> list[tuple[Deployment, DeploymentTarget]]:
        """Targets of a device still pending or sending in unfinished deployments (for reconnects)."""
        cols = ", ".join(f"d.{c.strip()}" for c in self._DEPLOYMENT_COLUMNS.split(","))
        tcols = ", ".join(f"t.{c.strip()}" for c in self._TARGET_COLUMNS.split(","))
        rows = self._conn.execute(
            f"SELECT {cols}, {tcols} FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id "
            "WHERE t.device_id = ? AND t.state IN ('pending', 'sending', 'installed') "
            "AND d.state IN ('pending', 'running') "
            "ORDER BY d.id", (device_id,))
        return [(self._deployment(row[:11]), DeploymentTarget(*row[11:])) for row in rows]


    def refused_before(self, action: str, model: str, version: str | None) -> dict[str, str]:
        """device id → its reason, for devices that failed this same change in an earlier deployment."""
        rows = self._conn.execute(
            "SELECT t.device_id, t.reason FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id "
            "WHERE d.action = ? AND d.bundle = ? AND d.version IS ? AND t.state = 'failed' ORDER BY d.id",
            (action, model, version))
        return {device_id: reason or "failed" for device_id, reason in rows}
