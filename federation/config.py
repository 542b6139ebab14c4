"""The federation's configuration: one frozen object built from the command line or by tests."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_FILE = "registry.sqlite3"
PUBLISH_FILE = "published.sqlite3"  # records edges publish, with the deduplication state


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
    # --- queries
    max_socket_queries: int = 8  # statements running at once on one /v1/query/ws socket
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
        if not 0 < self.deploy_first_wave_percent <= 100 or self.deploy_settle_s < 0:
            raise ValueError("the first wave is a percentage from 0 to 100, and settling takes no negative time")

    @property
    def registry_path(self) -> Path:
        return self.data_dir / REGISTRY_FILE

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
                   deploy_settle_s=getattr(args, "deploy_settle", 5.0))
