"""The federation's configuration: one frozen object built from the command line or by tests."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_FILE = "registry.sqlite3"


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
    extra: dict = field(default_factory=dict)  # settings of parts written later (query, deployments)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("requiring client certificates needs TLS (a certificate and key)")

    @property
    def registry_path(self) -> Path:
        return self.data_dir / REGISTRY_FILE

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "FederationConfig":
        return cls(data_dir=Path(args.data), host=args.host, port=args.port, tls_cert=args.tls_cert,
                   tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
                   max_request_bytes=args.max_request_bytes)
