"""The registry's connection pool settings (federation/registry_pg.py): its size, and a check of a
pooled connection only when it has been idle."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool

# connections: the event loop's calls, and the threads that use the registry beside it (the
# heartbeat flush or poll, the online flips, two auth callout workers, the watcher's sweep, a NATS
# node's hello workers) — with 4, those threads held every one and the loop waited for a
# connection (node A, 10,000 edges: `_connection` in wait)
POOL_SIZE = 12
# a pooled connection idle at least this long is checked (a round trip) before it is handed out;
# one back from a call within it is not: a check on every call was 7 % of a NATS node's samples
# with 10,000 edges beating (bench/README.md), and a round trip before every token lookup. A
# restart of the server still costs at most one error per connection used since
CHECK_IDLE_S = 1.0


class IdleCheck:
    """The pool's `check` and `reset`: a connection is checked only when it has been idle in the
    pool for CHECK_IDLE_S or more (or never returned to it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._returned: dict[int, float] = {}   # id(connection) → when it came back to the pool
        self._lock = threading.Lock()
        self.checks = 0

    def returned(self, conn: psycopg.Connection) -> None:
        with self._lock:
            if len(self._returned) > 8 * POOL_SIZE:   # connections replaced: forget the old ones
                self._returned.clear()
            self._returned[id(conn)] = self.clock()

    def check(self, conn: psycopg.Connection) -> None:
        with self._lock:
            back = self._returned.get(id(conn))
        if back is not None and self.clock() - back < CHECK_IDLE_S:
            return
        self.checks += 1
        ConnectionPool.check_connection(conn)
