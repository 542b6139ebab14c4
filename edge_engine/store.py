"""The edge's store directory: its layout, atomic writes, and the deployment state file.

```
<store>/
  starts                  restart counter (health.bump_restarts)
  deployments.json        which bundle versions are active: THE switch, replaced atomically
  bundles/<sha256>.sqlbundle   bundle files, content-addressed, written before the switch
  incoming/<did>/<n>.part      deploy chunks received so far, kept across reconnects
  buffer/                 the store-and-forward buffer (edge_engine.buffer)
```

Every file is written by `atomic_write`: a temporary file in the same directory, fsync, rename
over the old name, fsync of the directory. A rename is atomic, so after `kill -9` or a power
cut a reader finds the old or the new content, never a torn one. `deployments.json` also carries
a checksum, so damage by the disk (not a crash) is detected instead of trusted.

The engine's store (functions, types, models) is not snapshotted: it is rebuilt from the active
bundles at every start and every deployment (edge_engine.deployments), so it can never disagree
with `deployments.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EdgeStore", "DeploymentState", "BundleVersion", "ChunkStore", "StoreDamaged", "atomic_write",
           "fsync_dir"]

log = logging.getLogger("streamql.edge.store")

STATE_FORMAT = 1
HISTORY = 3          # previous versions kept per bundle, for rollback
DONE_KEPT = 512      # deployment ids remembered, so a resent deployment is acked, not redone
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_HEADER = "streamql-edge-deployments"


class StoreDamaged(Exception):
    """A file of the store cannot be read back as written (a disk fault, not a crash)."""


def fsync_dir(directory: str | os.PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    if sync:
        fsync_dir(path.parent)


@dataclass(frozen=True)
class BundleVersion:
    version: str
    sha256: str          # of the packed bundle file (what deploy.sha256 names)

    def to_dict(self) -> dict:
        return {"version": self.version, "sha256": self.sha256}


@dataclass
class BundleRecord:
    active: BundleVersion
    history: list[BundleVersion] = field(default_factory=list)   # previous versions, oldest first


@dataclass
class DeploymentState:
    """What `deployments.json` holds: the active version of every bundle, their history, and
    the deployment ids already done (with the frame each was answered with)."""

    bundles: dict[str, BundleRecord] = field(default_factory=dict)   # in installation order
    done: dict[str, dict] = field(default_factory=dict)              # did → {action, model, version}

    def active(self) -> dict[str, str]:
        return {name: record.active.version for name, record in self.bundles.items()}

    def files(self) -> set[str]:
        """sha256 of every bundle file the state refers to."""
        return {v.sha256 for r in self.bundles.values() for v in [r.active, *r.history]}

    def copy(self) -> "DeploymentState":
        return DeploymentState({n: BundleRecord(r.active, list(r.history)) for n, r in self.bundles.items()},
                               dict(self.done))

    def with_active(self, name: str, version: BundleVersion) -> "DeploymentState":
        """The state after making `version` the active one of `name` (the old one joins the history)."""
        state = self.copy()
        record = state.bundles.get(name)
        if record is None:
            state.bundles[name] = BundleRecord(version)
        elif record.active.sha256 != version.sha256:
            history = [v for v in record.history if v.sha256 != version.sha256] + [record.active]
            state.bundles[name] = BundleRecord(version, history[-HISTORY:])
        return state

    def rolled_back(self, name: str, version: str | None) -> "DeploymentState":
        """The state after returning to the previous (or the named) version; KeyError/ValueError."""
        state = self.copy()
        record = state.bundles[name]
        if version is None:
            if not record.history:
                raise ValueError(f"bundle '{name}' has no previous version to roll back to "
                                 f"(version {record.active.version} is the only one kept)")
            target = record.history[-1]
        else:
            matches = [v for v in record.history if v.version == version]
            if not matches:
                kept = ", ".join(v.version for v in record.history) or "none"
                raise ValueError(f"bundle '{name}' has no kept version {version} (kept: {kept})")
            target = matches[-1]
        position = record.history.index(target)
        state.bundles[name] = BundleRecord(target, record.history[:position])
        return state

    def without(self, name: str) -> "DeploymentState":
        state = self.copy()
        del state.bundles[name]
        return state

    def remember(self, did: str, entry: dict) -> "DeploymentState":
        state = self.copy()
        state.done.pop(did, None)
        state.done[did] = entry
        while len(state.done) > DONE_KEPT:
            state.done.pop(next(iter(state.done)))
        return state

    def to_json(self) -> bytes:
        """A header line with the checksum of the JSON body that follows it."""
        body = {"format": STATE_FORMAT,
                "bundles": {n: {"active": r.active.to_dict(), "history": [v.to_dict() for v in r.history]}
                            for n, r in self.bundles.items()},
                "done": self.done}
        text = json.dumps(body, indent=1).encode() + b"\n"
        return f"{_HEADER} {hashlib.sha256(text).hexdigest()}\n".encode() + text

    @classmethod
    def from_json(cls, data: bytes) -> "DeploymentState":
        header, _, text = data.partition(b"\n")
        magic, _, digest = header.decode("ascii", "replace").partition(" ")
        if magic != _HEADER or hashlib.sha256(text).hexdigest() != digest:
            raise StoreDamaged("deployments.json does not match its checksum")
        try:
            body = json.loads(text)
            if body.get("format") != STATE_FORMAT:
                raise StoreDamaged(f"deployments.json has an unknown format {body.get('format')!r}")
            bundles = {}
            for name, entry in body["bundles"].items():
                active = BundleVersion(str(entry["active"]["version"]), str(entry["active"]["sha256"]))
                history = [BundleVersion(str(v["version"]), str(v["sha256"])) for v in entry["history"]]
                bundles[name] = BundleRecord(active, history)
            return cls(bundles, dict(body.get("done", {})))
        except StoreDamaged:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreDamaged(f"deployments.json is damaged ({type(exc).__name__}: {exc})") from None


class ChunkStore:
    """Deploy chunks by deployment id, on disk until the whole bundle is there.

    A resent chunk replaces the same index. `complete` says whether every chunk is there;
    `join` returns the bundle bytes. Stale deployments (older than `max_age_s`) are removed.
    """

    def __init__(self, directory: Path, max_age_s: float = 24 * 3600, max_pending: int = 8):
        self.directory = directory
        self.max_age_s = max_age_s
        self.max_pending = max_pending        # deployments half received at once; the oldest go first
        directory.mkdir(parents=True, exist_ok=True)

    def _dir(self, did: str) -> Path:
        safe = _SAFE.sub("_", did)[:100] + "-" + hashlib.sha256(did.encode()).hexdigest()[:12]
        return self.directory / safe

    def put(self, did: str, chunk: int, data: bytes, meta: dict) -> None:
        directory = self._dir(did)
        if not directory.exists():
            pending = sorted(self.directory.iterdir(), key=lambda p: p.stat().st_mtime)
            for stale in pending[:max(0, len(pending) - self.max_pending + 1)]:
                shutil.rmtree(stale, ignore_errors=True)
        directory.mkdir(exist_ok=True)
        meta_path = directory / "meta.json"
        wanted = json.dumps(meta, sort_keys=True).encode()
        if not meta_path.exists() or meta_path.read_bytes() != wanted:
            # a deployment id reused for another bundle: start it over
            for old in directory.glob("*.part"):
                old.unlink()
            atomic_write(meta_path, wanted, sync=False)
        atomic_write(directory / f"{chunk}.part", data, sync=False)

    def received(self, did: str) -> dict[int, int]:
        """chunk index → size, of the chunks on disk."""
        out = {}
        for path in self._dir(did).glob("*.part"):
            try:
                out[int(path.stem)] = path.stat().st_size
            except (ValueError, OSError):
                continue
        return out

    def join(self, did: str, chunks: int) -> bytes:
        directory = self._dir(did)
        return b"".join((directory / f"{i}.part").read_bytes() for i in range(chunks))

    def discard(self, did: str) -> None:
        shutil.rmtree(self._dir(did), ignore_errors=True)

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for directory in self.directory.iterdir():
            try:
                if now - directory.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(directory, ignore_errors=True)
                    removed += 1
            except OSError:
                continue
        return removed


class EdgeStore:
    """The store directory of one edge (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.bundles_dir = self.root / "bundles"
        self.bundles_dir.mkdir(exist_ok=True)
        self.buffer_dir = self.root / "buffer"
        self.state_path = self.root / "deployments.json"
        self.chunks = ChunkStore(self.root / "incoming")
        for stale in self.root.glob(".*.tmp"):   # a write cut by a crash: never renamed, never used
            stale.unlink(missing_ok=True)
        for stale in self.bundles_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # -- the deployment state: one file, replaced atomically -------------------------------------
    def load_state(self) -> DeploymentState:
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return DeploymentState()
        try:
            return DeploymentState.from_json(data)
        except StoreDamaged:
            kept = self.state_path.with_name(f"deployments.damaged-{int(time.time())}.json")
            os.replace(self.state_path, kept)
            log.error("%s is damaged; kept as %s, starting without deployed bundles", self.state_path, kept.name)
            raise

    def save_state(self, state: DeploymentState) -> None:
        """The commit point of every deployment change."""
        atomic_write(self.state_path, state.to_json())

    # -- bundle files, content-addressed ------------------------------------------------------------
    def bundle_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.bundles_dir / f"{sha256}.sqlbundle"

    def put_bundle(self, sha256: str, data: bytes) -> Path:
        path = self.bundle_path(sha256)
        if not (path.exists() and path.stat().st_size == len(data)):
            atomic_write(path, data)
        return path

    def read_bundle_bytes(self, sha256: str) -> bytes:
        data = self.bundle_path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreDamaged(f"bundle file {sha256[:12]}… does not match its hash")
        return data

    def collect_garbage(self, state: DeploymentState) -> int:
        """Delete bundle files the state does not refer to (left by a deployment cut by a crash)."""
        keep = state.files()
        removed = 0
        for path in self.bundles_dir.glob("*.sqlbundle"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
