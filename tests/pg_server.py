"""A real PostgreSQL for the tests: initdb in a temporary directory, listening on loopback only.

    with PgServer(tmp_dir) as pg:        # or the session fixture `pg_server` (tests/conftest.py)
        url = pg.new_database()          # postgresql://streamql@127.0.0.1:PORT/db_3
        pg.restart()                     # the same data, the same port

PostgreSQL refuses to run as root, and CI runs as root: then initdb and postgres run as an
unprivileged user (`nobody`: Popen drops to it) that owns the data directory. The binaries are
Debian's (`scripts/test` installs the `postgresql` package when they are missing); `find_bin_dir`
says where they are, or None, and the tests skip with that reason only when there are none.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.loopback import free_port

SUPERUSER = "streamql"
RUN_AS = "nobody"  # when we are root


def find_bin_dir() -> Path | None:
    """The directory holding initdb and postgres: $STREAMQL_PG_BIN, Debian's newest, or the PATH."""
    candidates = [os.environ.get("STREAMQL_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for directory in filter(None, candidates):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "postgres").exists():
            return Path(directory)
    return None


class PgServer:
    def __init__(self, base: str | os.PathLike, *, bin_dir: Path | None = None):
        self.bin_dir = bin_dir or find_bin_dir()
        if self.bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, postgres) on this machine")
        self.base = Path(base)
        self.data = self.base / "data"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._databases = 0
        self._as_root = os.geteuid() == 0

    # --- running as an unprivileged user when we are root ------------------------------------------
    def _as_user(self) -> dict:
        """Popen arguments that run the child as RUN_AS when we are root (postgres itself is the child,
        so signals reach it directly)."""
        import pwd
        return {"user": RUN_AS, "group": pwd.getpwnam(RUN_AS).pw_gid, "extra_groups": []} if self._as_root else {}

    def _prepare_dirs(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            import pwd
            entry = pwd.getpwnam(RUN_AS)
            os.chmod(self.base, 0o755)
            # every parent must be traversable by that user (pytest's temp dirs are 0700)
            for parent in [self.base, *self.base.parents]:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
            self.data.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        else:
            self.data.mkdir(mode=0o700, exist_ok=True)

    def init(self) -> None:
        self._prepare_dirs()
        out = subprocess.run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                              "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                             capture_output=True, text=True, timeout=120, cwd=self.base, **self._as_user())
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")

    def start(self, timeout: float = 60.0) -> None:
        """Start postgres and wait until it accepts connections."""
        log = open(self.base / "postgres.log", "ab")
        # fsync off and a small footprint: a test database, shared by a 2-core machine
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "shared_buffers=32MB", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.base, **self._as_user())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            if self._accepts():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections within {timeout} s: {self.log_tail()}")

    def _accepts(self) -> bool:
        import psycopg
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, *, fast: bool = True) -> None:
        """Stop postgres (SIGINT: fast shutdown, clients disconnected) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            import signal
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGINT if fast else signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- databases -----------------------------------------------------------------------------------
    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg
        self._databases += 1
        name = f"db_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> "PgServer":
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
