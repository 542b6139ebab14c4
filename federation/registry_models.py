"""Which model version runs on which device (a part of `Registry`, as a mixin)."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from federation.records import ModelVersion

_CHUNK = 5000  # ids per `IN (…)` list, well under SQLite's variable limit


class ModelVersionStore:
    """Needs `_conn`, `transaction()` and `clock` from the Registry it is mixed into."""

    _conn: sqlite3.Connection

    def _models_changed(self, device_id: str) -> None:  # the Registry's: tells its listeners
        pass

    # --- which model version runs where --------------------------------------------------------
    def set_model_version(self, device_id: str, model: str, version: str) -> ModelVersion:
        """Record that `version` now runs; the version it replaces becomes the previous one."""
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO device_models (device_id, model, version, previous_version, updated) VALUES (?, ?, ?, NULL, ?) "
                "ON CONFLICT (device_id, model) DO UPDATE SET "
                "previous_version = CASE WHEN version = excluded.version THEN previous_version ELSE version END, "
                "version = excluded.version, updated = excluded.updated",
                (device_id, model, version, now))
        self._models_changed(device_id)
        return self.model_version(device_id, model)  # type: ignore[return-value]

    def rollback_model_version(self, device_id: str, model: str) -> ModelVersion | None:
        """Make the previous version current again; None (and nothing changed) when there is none."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE device_models SET version = previous_version, previous_version = NULL, "
                               "updated = ? WHERE device_id = ? AND model = ? AND previous_version IS NOT NULL",
                               (self.clock(), device_id, model))
        if not cur.rowcount:
            return None
        self._models_changed(device_id)
        return self.model_version(device_id, model)

    def remove_model(self, device_id: str, model: str) -> bool:
        with self.transaction() as conn:
            removed = conn.execute("DELETE FROM device_models WHERE device_id = ? AND model = ?",
                                   (device_id, model)).rowcount > 0
        if removed:
            self._models_changed(device_id)
        return removed

    def record_active_models(self, device_id: str, active: dict[str, str], *, only: str | None = None) -> bool:
        """Make the registry agree with what a device says runs on it (`hello.models`, `ack.active`).

        With `only`, just that model is reconciled (an ack speaks for its own model); otherwise
        models the device no longer lists are removed. A version equal to the recorded previous
        one is recorded as a rollback, so the version before it is not lost. True when it changed.
        """
        current = self.model_versions([device_id]).get(device_id, {})
        names = [only] if only is not None else sorted(set(current) | set(active))
        names = [name for name in names if (current[name].version if name in current else None) != active.get(name)]
        if not names:   # as recorded (every hello of an edge that reconnects): no transaction at all
            return False
        changed = False
        with self.transaction():
            for name in names:
                now, wanted = current.get(name), active.get(name)
                if wanted is None:
                    if now is not None:
                        changed |= self.remove_model(device_id, name)
                elif now is None or now.version != wanted:
                    if now is not None and now.previous_version == wanted:
                        self.rollback_model_version(device_id, name)
                    else:
                        self.set_model_version(device_id, name, str(wanted))
                    changed = True
        return changed

    def model_version(self, device_id: str, model: str) -> ModelVersion | None:
        row = self._conn.execute("SELECT device_id, model, version, previous_version, updated FROM device_models "
                                 "WHERE device_id = ? AND model = ?", (device_id, model)).fetchone()
        return ModelVersion(*row) if row else None

    def model_versions(self, device_ids: Sequence[str] | None = None) -> dict[str, dict[str, ModelVersion]]:
        """device id → model name → what runs there (all devices when no ids are given)."""
        out: dict[str, dict[str, ModelVersion]] = {}
        sql = "SELECT device_id, model, version, previous_version, updated FROM device_models"
        if device_ids is None:
            batches: Iterable[tuple] = [self._conn.execute(sql)]
        else:
            batches = (self._conn.execute(f"{sql} WHERE device_id IN ({','.join('?' * len(chunk))})", chunk)
                       for chunk in (device_ids[i:i + _CHUNK] for i in range(0, len(device_ids), _CHUNK)))
        for rows in batches:
            for row in rows:
                out.setdefault(row[0], {})[row[1]] = ModelVersion(*row)
        return out

    def devices_running(self, model: str, version: str | None = None) -> list[str]:
        sql, args = "SELECT device_id FROM device_models WHERE model = ?", [model]
        if version is not None:
            sql += " AND version = ?"
            args.append(version)
        return [row[0] for row in self._conn.execute(sql + " ORDER BY device_id", args)]
