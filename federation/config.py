"""The federation's configuration: one frozen object built from the command line or by tests.

Every limit of docs/operations.md ("Limits") is a field here with its default; `RoleLimits`
holds the per-role request limits of the HTTP API.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

from streamql.wire import MAX_FRAME_BYTES

REGISTRY_FILE = "registry.sqlite3"
PUBLISH_FILE = "published.sqlite3"  # records edges publish, with the deduplication state


@dataclass(frozen=True)
class RoleLimits:
    """Requests of one token: a token bucket (`rate` per second, `burst` at once) and at most
    `concurrent` requests in flight (an open WebSocket counts as one for its lifetime)."""

    rate: float
    burst: int
    concurrent: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.concurrent < 1:
            raise ValueError("a rate limit needs a positive rate, burst and concurrency")

    @classmethod
    def parse(cls, text: str) -> tuple[str, "RoleLimits"]:
        """`read=20,200,16` → ("read", RoleLimits(20, 200, 16))."""
        role, sep, values = text.partition("=")
        parts = values.split(",")
        if not sep or role not in DEFAULT_ROLE_LIMITS or len(parts) != 3:
            raise ValueError(f"a rate limit is ROLE=RATE,BURST,CONCURRENT with ROLE one of "
                             f"{', '.join(DEFAULT_ROLE_LIMITS)}, not {text!r}")
        try:
            return role, cls(float(parts[0]), int(parts[1]), int(parts[2]))
        except ValueError:
            raise ValueError(f"a rate limit is ROLE=RATE,BURST,CONCURRENT (numbers), not {text!r}") from None


# generous for people and scripts, tight for device tokens (they only open their edge socket)
DEFAULT_ROLE_LIMITS = {
    "read": RoleLimits(rate=20.0, burst=200, concurrent=16),
    "deploy": RoleLimits(rate=20.0, burst=200, concurrent=16),
    "admin": RoleLimits(rate=100.0, burst=1000, concurrent=64),
    "device": RoleLimits(rate=2.0, burst=20, concurrent=4),
}


@dataclass(frozen=True)
class FederationConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # when set, clients must present a certificate it signed
    max_request_bytes: int = 1 << 20  # JSON bodies; bundle uploads use max_bundle_bytes
    max_bundle_bytes: int = 64 << 20
    bootstrap_admin: bool = True  # create admin.token at first start
    announce: bool = True  # print the bootstrap admin token once to stdout
    # --- the edge hub
    heartbeat_s: float = 5.0  # told to edges in welcome; silent for 3 × this → offline
    hello_timeout_s: float = 30.0  # a connection that says nothing this long after upgrading is closed
    publish_flush_s: float = 0.1  # published records are committed (then acknowledged) this often
    publish_retention_s: float = 7 * 86400.0  # published records older than this are trimmed
    # --- deployments
    trusted_keys: tuple[Path, ...] = ()  # public keys (PEM) whose signatures make a bundle acceptable
    allow_unsigned_bundles: bool = False  # only for development: accept bundles nobody signed
    deploy_ack_timeout_s: float = 120.0  # a device that neither acks nor nacks this long has failed
    # a deploy that says nothing of its rollout (docs/models.md, Rollouts): a first wave of this
    # percent of its devices (at least one), then the rest — or `deploy_waves` equal waves
    deploy_waves: int | None = None
    deploy_first_wave_percent: float = 5.0
    deploy_failure_threshold: float = 0.1  # more than this fraction of a wave's finished devices failed → abort
    deploy_wave_timeout_s: float = 300.0  # a wave waits this long at most for its devices to report healthy
    deploy_settle_s: float = 5.0  # a device counts as healthy once it has looked healthy this long
    deploy_concurrency: int = 64  # devices receiving bundle bytes at the same time
    # devices of one deployment sent to and not yet answered, at most: each such device's ack timer
    # runs, so a window far wider than the fleet can fetch in `deploy_ack_timeout_s` times devices out
    deploy_window: int = 1000
    # --- queries
    max_socket_queries: int = 8  # statements running at once on one /v1/query/ws socket
    statement_workers: int = 32  # worker threads statements run in (never on the event loop)
    device_timeout_s: float = 10.0  # a connected device has this long to answer a bag query
    query_memory_mb: float = 256.0  # a statement's memory when its request does not say (here and on edges)
    query_seconds: float | None = None  # a statement's time limit when its request does not say
    # role → {"memory_mb", "seconds", "rows"}: that role's statement limits, defaults and ceilings at
    # once (a request asks for less, never more); roles not named get query_memory_mb and query_seconds
    query_role_limits: dict = field(default_factory=dict)
    files_dir: Path | None = None  # the only directory statements may read files from; None: no files
    # the registry: None is the SQLite file in data_dir; a postgresql:// URL is a database several
    # federation nodes share (docs/operations.md, Registry on PostgreSQL)
    registry: str | None = None
    max_statement_bytes: int = 64 << 10  # statement text (UTF-8) of POST /v1/query and /v1/query/ws
    max_statement_tokens: int = 8192  # … and its tokens, counted before parsing (15 µs each to parse)
    # --- HTTP hygiene
    max_json_depth: int = 64  # JSON bodies and WebSocket messages nested deeper are a 400
    idle_timeout_s: float = 15.0  # a connection without a complete request head this long is closed
    body_timeout_s: float = 30.0  # a request body must arrive within this (uploads: + 1 s per 256 KiB)
    shutdown_timeout_s: float = 8.0  # SIGTERM: graceful for this long, then the process exits regardless
    rate_limits: dict = field(default_factory=lambda: dict(DEFAULT_ROLE_LIMITS))  # role → RoleLimits
    # --- bundle uploads (checked before anything is inflated: federation/bundle_check.py)
    max_uploads: int = 2  # uploads checked at once; more get 429 with Retry-After
    max_bundle_unpacked_bytes: int = 256 << 20  # all files of a bundle, inflated
    max_bundle_members: int = 1000
    max_bundle_ratio: float = 100.0  # inflated/compressed size of a member larger than 1 MiB
    # --- what one device may send
    publish_records_per_s: float = 1000.0  # token bucket per device, records
    publish_records_burst: int = 5000
    publish_bytes_per_s: float = float(4 << 20)  # token bucket per device, frame bytes
    publish_bytes_burst: int = 32 << 20  # at least one frame (16 MiB) so any valid record can pass
    max_hello_bytes: int = 64 << 10  # the encoded hello frame
    max_hello_keys: int = 64  # metadata and capabilities keys each
    max_hello_value_bytes: int = 1024  # one metadata or capability value, as JSON
    max_hello_signals: int = 256
    # --- the NATS transport (federation/nats_hub.py); empty `nats`: the embedded WebSocket hub only
    nats: tuple[str, ...] = ()  # nats://host:port of the cluster's servers (all of them: failover)
    nats_node: str | None = None  # this node's id on NATS (default: host name and data directory)
    nats_creds: Path | None = None  # a NATS credentials file of the node
    nats_token: str | None = field(default=None, repr=False)  # or a token (STREAMQL_NATS_TOKEN)
    nats_lease_s: float = 10.0  # fragments on edges stop when their node is silent this long
    nats_replicas: int = 1  # JetStream replicas of the published records and presence (3 in a cluster)
    extra: dict = field(default_factory=dict)  # settings of parts written by others (the fleet planner)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "trusted_keys", tuple(Path(p) for p in self.trusted_keys or ()))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("requiring client certificates needs TLS (a certificate and key)")
        if not 0.0 <= self.deploy_failure_threshold <= 1.0:
            raise ValueError("the failure threshold is a fraction between 0 and 1")
        if (self.deploy_waves is not None and self.deploy_waves < 1) or self.heartbeat_s <= 0 \
                or self.deploy_ack_timeout_s <= 0 or self.deploy_wave_timeout_s <= 0:
            raise ValueError("waves, heartbeat, ack and wave timeouts must be positive")
        if self.deploy_concurrency < 1 or self.deploy_window < 1:
            raise ValueError("the deployment's concurrency and window are at least 1 device")
        if not 0 < self.deploy_first_wave_percent <= 100 or self.deploy_settle_s < 0:
            raise ValueError("the first wave is a percentage from 0 to 100, and settling takes no negative time")
        if self.statement_workers < 1 or self.device_timeout_s <= 0 or self.query_memory_mb <= 0 \
                or (self.query_seconds is not None and self.query_seconds <= 0):
            raise ValueError("statement workers, the device timeout and query limits must be positive")
        _check_role_limits(self.query_role_limits)
        if self.files_dir is not None:
            object.__setattr__(self, "files_dir", Path(self.files_dir))
        _check_nats(self)
        limits = {**DEFAULT_ROLE_LIMITS, **(self.rate_limits or {})}
        unknown = set(limits) - set(DEFAULT_ROLE_LIMITS)
        if unknown:
            raise ValueError(f"rate limits name unknown roles: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "rate_limits", limits)
        for name in ("max_statement_bytes", "max_statement_tokens", "max_json_depth", "max_uploads",
                     "max_bundle_unpacked_bytes", "max_bundle_members", "publish_records_burst", "max_hello_bytes",
                     "max_hello_keys", "max_hello_value_bytes", "max_hello_signals"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in ("idle_timeout_s", "body_timeout_s", "shutdown_timeout_s", "max_bundle_ratio",
                     "publish_records_per_s", "publish_bytes_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.publish_bytes_burst < MAX_FRAME_BYTES:
            raise ValueError(f"publish_bytes_burst must hold one frame ({MAX_FRAME_BYTES} bytes): a smaller "
                             "burst could never let a large record through")

    def query_limits(self, role: str | None) -> dict:
        """The statement limits of a role (its defaults and its ceiling): {"rows", "seconds", "memory_mb"}."""
        limits = {"rows": None, "seconds": self.query_seconds, "memory_mb": self.query_memory_mb}
        return {**limits, **self.query_role_limits.get(role or "", {})}

    @property
    def registry_path(self) -> Path:
        return self.data_dir / REGISTRY_FILE

    @property
    def registry_location(self) -> str:
        """What `open_registry` opens: the PostgreSQL URL when one is configured, else the file."""
        return self.registry or str(self.registry_path)

    @property
    def publish_path(self) -> Path:
        return self.data_dir / PUBLISH_FILE

    @property
    def bundle_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FederationConfig":
        return cls(data_dir=Path(args.data), host=args.host, port=args.port, tls_cert=args.tls_cert,
                   tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
                   max_request_bytes=args.max_request_bytes,
                   max_bundle_bytes=getattr(args, "max_bundle_bytes", 64 << 20),
                   trusted_keys=tuple(getattr(args, "trusted_key", None) or ()),
                   allow_unsigned_bundles=bool(getattr(args, "allow_unsigned_bundles", False)),
                   heartbeat_s=getattr(args, "heartbeat", 5.0),
                   deploy_wave_timeout_s=getattr(args, "deploy_wave_timeout", 300.0),
                   deploy_settle_s=getattr(args, "deploy_settle", 5.0),
                   deploy_concurrency=getattr(args, "deploy_concurrency", 64),
                   deploy_window=getattr(args, "deploy_window", 1000),
                   statement_workers=getattr(args, "statement_workers", 32),
                   device_timeout_s=getattr(args, "device_timeout", 10.0),
                   query_memory_mb=getattr(args, "query_memory_mb", 256.0),
                   query_seconds=getattr(args, "query_seconds", None),
                   query_role_limits=dict(map(parse_query_limits, getattr(args, "query_limits", None) or ())),
                   files_dir=getattr(args, "files", None),
                   registry=getattr(args, "registry", None),
                   **_nats_flags(args), **_limit_flags(args))


def _nats_flags(args: argparse.Namespace) -> dict:
    """--nats URL[,URL…], --nats-node, --nats-creds, --nats-token-file (or $STREAMQL_NATS_TOKEN), --nats-lease."""
    import os

    servers = [u.strip() for text in (getattr(args, "nats", None) or []) for u in text.split(",") if u.strip()]
    if not servers:
        return {}
    token = os.environ.get("STREAMQL_NATS_TOKEN") or None
    token_file = getattr(args, "nats_token_file", None)
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    out = {"nats": tuple(servers), "nats_node": getattr(args, "nats_node", None),
           "nats_creds": getattr(args, "nats_creds", None), "nats_token": token}
    if getattr(args, "nats_lease", None) is not None:
        out["nats_lease_s"] = args.nats_lease
    if getattr(args, "nats_replicas", None) is not None:
        out["nats_replicas"] = args.nats_replicas
    return out


def _check_nats(config: "FederationConfig") -> None:
    object.__setattr__(config, "nats", tuple(config.nats or ()))
    for url in config.nats:
        if not re.match(r"(nats|tls|ws|wss)://[^/\s]+$", url):
            raise ValueError(f"a NATS server is nats://host:port (or tls://), not {url!r}")
    if config.nats_creds is not None:
        object.__setattr__(config, "nats_creds", Path(config.nats_creds))
    if config.nats_node is not None and (config.nats_node == "all" or not 0 < len(config.nats_node) <= 128):
        raise ValueError("a NATS node id is 1-128 characters and not 'all'")
    if not config.nats_lease_s > 0:
        raise ValueError("nats_lease_s must be positive")
    if config.nats_replicas not in (1, 2, 3, 4, 5):
        raise ValueError("nats_replicas is 1 to 5 (JetStream's limit)")


def _limit_flags(args: argparse.Namespace) -> dict:
    """The limits given on the command line (absent flags keep the defaults)."""
    out = {}
    for name in ("max_statement_bytes", "max_statement_tokens", "idle_timeout_s", "body_timeout_s",
                 "shutdown_timeout_s", "max_uploads", "max_bundle_unpacked_bytes", "publish_records_per_s",
                 "publish_bytes_per_s"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    given = getattr(args, "rate_limit", None) or []
    if given:
        out["rate_limits"] = dict(RoleLimits.parse(text) for text in given)
    return out


QUERY_LIMIT_KEYS = ("rows", "seconds", "memory_mb")
QUERY_ROLES = ("read", "deploy", "admin")


def parse_query_limits(text: str) -> tuple[str, dict]:
    """`read:memory_mb=64,seconds=30` → ("read", {"memory_mb": 64.0, "seconds": 30.0})."""
    role, sep, pairs = text.partition(":")
    limits = {}
    for pair in filter(None, pairs.split(",")):
        key, eq, value = pair.partition("=")
        try:
            limits[key.strip()] = float(value) if key.strip() != "rows" else int(value)
        except ValueError:
            eq = ""
        if not eq:
            break
    else:
        if sep and limits:
            _check_role_limits({role: limits})
            return role, limits
    raise ValueError(f"query limits are ROLE:KEY=VALUE,… with ROLE one of {', '.join(QUERY_ROLES)} and KEY one of "
                     f"{', '.join(QUERY_LIMIT_KEYS)}, not {text!r}")


def _check_role_limits(role_limits: dict) -> None:
    for role, limits in role_limits.items():
        if role not in QUERY_ROLES:
            raise ValueError(f"query limits name an unknown role {role!r} (use {', '.join(QUERY_ROLES)})")
        for key, value in limits.items():
            if key not in QUERY_LIMIT_KEYS:
                raise ValueError(f"query limits of {role}: unknown limit {key!r} (use {', '.join(QUERY_LIMIT_KEYS)})")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"query limits of {role}: {key} must be a positive number, not {value!r}")
