"""What keeps federation nodes that share one PostgreSQL in step: a watcher and a lock holder.

`Watcher` is one thread with its own connection that LISTENs on the registry's channel. The
triggers of federation/registry_pg_schema.py notify it when devices, tokens or deployments
change; it marks the registry dirty and calls a wake-up callback (the app turns that into a
`poll_external_changes` on its event loop, a revocation sweep, a rollout takeover check). The
same connection holds this node's advisory lock, which is how other nodes know it is alive: the
devices a dead node had online are marked offline by whichever node notices first. After a lost
connection (PostgreSQL restarted) it reconnects with a growing pause and marks the registry dirty,
so the change feed is read from where this node left it and nothing is missed.

`LockHolder` is another connection that holds the session-level rollout locks of the
deployments this node drives: a node that dies (or loses PostgreSQL) lets go of them, and
another node's takeover check claims them.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from federation.registry_pg_schema import CHANNEL, NODE_LOCK_CLASS, ROLLOUT_LOCK_CLASS

log = logging.getLogger("streamql.federation.registry")

SWEEP_EVERY_S = 5.0        # how often dead nodes' online devices are looked for
PRUNE_EVERY_S = 300.0      # how often the change feed is trimmed
KEEP_CHANGES = "1 hour"    # how far back a node that was away can catch up change by change


class Watcher(threading.Thread):
    def __init__(self, conninfo: str, node_key: int, *, wake: Callable[[str], None],
                 sweep: Callable[[], None], prune: Callable[[], None]):
        super().__init__(name="registry-watcher", daemon=True)
        self.conninfo, self.node_key = conninfo, node_key
        self.wake, self.sweep, self.prune = wake, sweep, prune
        self.dirty = threading.Event()
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._conn: psycopg.Connection | None = None

    def run(self) -> None:
        pause = 0.2
        while not self._stopping.is_set():
            try:
                self._serve()
                pause = 0.2
            except Exception as exc:  # a lost connection, a restarting server: try again
                self.connected.clear()
                if not self._stopping.is_set():
                    log.warning("registry watcher: %s; reconnecting in %.1f s", exc, pause)
            finally:
                self._close()
            self._stopping.wait(pause)
            pause = min(pause * 2, 5.0)

    def _serve(self) -> None:
        conn = self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (NODE_LOCK_CLASS, self.node_key))
        conn.execute(f"LISTEN {CHANNEL}")
        self.connected.set()
        self._changed("devices")   # whatever happened while we were away
        self._changed("tokens")
        self._changed("deployments")
        next_sweep = next_prune = time.monotonic() + SWEEP_EVERY_S   # mark_all_offline covers the start
        while not self._stopping.is_set():
            for note in conn.notifies(timeout=0.5):
                self._changed(note.payload)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP_EVERY_S
                self._quietly(self.sweep)
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_S
                self._quietly(self.prune)

    def _changed(self, what: str) -> None:
        if what == "devices":
            self.dirty.set()
        self._quietly(lambda: self.wake(what))

    @staticmethod
    def _quietly(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            log.exception("registry watcher callback failed")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)


class LockHolder:
    """Session-level rollout locks on a connection of their own (a pool would hand it around)."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self._conn: psycopg.Connection | None = None
        self._held: set[int] = set()
        self._mutex = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._held.clear()   # the server let go of them with the old connection
            self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        return self._conn

    def _alive(self) -> bool:
        try:
            self._connection().execute("SELECT 1")
            return True
        except psycopg.Error:
            self._drop()
            return False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def claim(self, deployment_id: int) -> bool:
        """Take the lock of this deployment if nobody holds it (True also when we already do)."""
        with self._mutex:
            if deployment_id in self._held and self._alive():
                return True
            try:
                got = self._connection().execute("SELECT pg_try_advisory_lock(%s, %s)",
                                                  (ROLLOUT_LOCK_CLASS, int(deployment_id))).fetchone()[0]
            except psycopg.Error:
                self._drop()
                return False
            if got:
                self._held.add(int(deployment_id))
            return bool(got)

    def holds(self, deployment_id: int) -> bool:
        """Whether we still hold it: false once our connection was lost (someone else may have it)."""
        with self._mutex:
            return int(deployment_id) in self._held and self._alive()

    def release(self, deployment_id: int) -> None:
        with self._mutex:
            if int(deployment_id) not in self._held:
                return
            self._held.discard(int(deployment_id))
            try:
                self._connection().execute("SELECT pg_advisory_unlock(%s, %s)", (ROLLOUT_LOCK_CLASS, int(deployment_id)))
            except psycopg.Error:
                self._drop()

    def close(self) -> None:
        with self._mutex:
            self._drop()
