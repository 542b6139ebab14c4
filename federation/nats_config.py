"""The NATS side of a scale-out federation: its secrets and the nats-server configuration.

    security = NatsSecurity.load_or_create(data_dir)     # nats-security.json, mode 0600
    text = server_config(security, ServerSettings(name="n1", store_dir="/var/lib/nats", ...))

The generated configuration has two accounts: STREAMQL (edges, MQTT devices and federation nodes;
JetStream with the account limits below) and SYS (the system account, used by nodes to kick the
connections of revoked tokens). Every connection except the nodes' own two users goes to the auth
callout (`$SYS.REQ.USER.AUTH`, answered by federation nodes, federation/nats_auth.py), which checks
the token against the registry and answers with a user JWT signed by `issuer_seed`.

The same nats-security.json must be on every federation node and its public parts in every
server's configuration: `streamql federation nats-config` prints one server's file from it.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from federation import nats_subjects

SECURITY_FILE = "nats-security.json"
ACCOUNT = "STREAMQL"
SYSTEM_ACCOUNT = "SYS"


@dataclass(frozen=True)
class EdgeQuotas:
    """What bounds one device's publishing (docs/operations.md, "Securing the NATS transport").

    max_payload: the largest message any connection may send (server-wide `max_payload`: nats-server
    applies no per-user payload or subscription limits to callout users outside operator mode, so
    the bound is the server's, and a larger message ends the sender's connection).
    publish_backlog: records of one edge SQL_PUB holds at once (`max_msgs_per_subject` with
    `discard_new_per_subject`; records leave the stream at its max_age, so this is also a rate:
    backlog per retention period): beyond it the edge gets an error ack and keeps its records
    (its store-and-forward resends them later); no edge can fill the stream for the others.
    publish_record_bytes: the largest published record the stream accepts (`max_msg_size`).
    """

    max_payload: int = 8 << 20     # the NATS transport's deploy frames carry 1 MiB of bundle each
    publish_backlog: int = 100_000
    publish_record_bytes: int = 256 * 1024


@dataclass(frozen=True)
class AccountLimits:
    """JetStream limits of the STREAMQL account: the fleet's total storage and stream count."""

    max_file: str = "10G"
    max_mem: str = "1G"
    max_streams: int = 64
    max_consumers: int = 100_000


@dataclass(frozen=True)
class NatsSecurity:
    issuer_seed: str           # the callout's account key: signs every user JWT (keep secret)
    node_password: str
    sys_password: str
    node_user: str = "streamql-node"
    sys_user: str = "streamql-sys"
    mqtt_gateways: tuple[str, ...] = ()   # edges that may read every MQTT device's readings
    quotas: EdgeQuotas = field(default_factory=EdgeQuotas)
    limits: AccountLimits = field(default_factory=AccountLimits)

    @property
    def issuer_public(self) -> str:
        from federation import nats_jwt   # nkeys: the `nats` extra, not needed to register the command
        return nats_jwt.public_key(self.issuer_seed)

    @classmethod
    def generate(cls, **overrides) -> "NatsSecurity":
        from federation import nats_jwt   # nkeys: the `nats` extra
        return cls(issuer_seed=nats_jwt.new_seed("account"), node_password=secrets.token_urlsafe(24),
                   sys_password=secrets.token_urlsafe(24), **overrides)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "NatsSecurity":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("nats-security.json holds one JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys in nats-security.json: {', '.join(sorted(unknown))}")
        quotas = EdgeQuotas(**data.pop("quotas", {}))
        limits = AccountLimits(**data.pop("limits", {}))
        gateways = tuple(data.pop("mqtt_gateways", ()))
        security = cls(quotas=quotas, limits=limits, mqtt_gateways=gateways, **data)
        security.issuer_public  # a bad seed fails here, not at the first connection
        return security

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike) -> "NatsSecurity":
        path = Path(data_dir) / SECURITY_FILE
        if path.exists():
            return cls.from_json(path.read_text())
        security = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(security.to_json())
        return security


@dataclass(frozen=True)
class ServerSettings:
    """One nats-server of the cluster; addresses are host:port."""

    name: str = "streamql-nats-1"
    listen: str = "0.0.0.0:4222"
    store_dir: str = "/var/lib/nats/jetstream"
    cluster_name: str = "streamql"
    cluster_listen: str | None = None
    routes: tuple[str, ...] = ()
    mqtt_listen: str | None = None
    monitor_listen: str | None = None


def _quoted(text: str) -> str:
    return json.dumps(text)   # a JSON string is a valid nats-server config string


WRITE_DEADLINE = "60s"
# seconds a connecting client may take to be authorized, the callout's answer included: at the
# server's default (2 s) 3,500–5,500 of 10,000 edges connecting at once were refused on a 2-core
# box, each node's callout answering late while its loop was busy with the storm's hellos, and
# every refused edge came back to add to the storm. The edge waits a little longer
# (edge_engine/nats_link.py CONNECT_TIMEOUT_S; edge_engine/nats_handshake.py says what nats-py needs)
AUTH_TIMEOUT_S = 8


def security_block(security: NatsSecurity) -> str:
    """Accounts, system account and auth callout: the part every server of the cluster shares."""
    limits = security.limits
    return "\n".join([
        "accounts {",
        f"  {ACCOUNT} {{",
        f"    jetstream: {{ max_file: {limits.max_file}, max_mem: {limits.max_mem}, "
        f"max_streams: {limits.max_streams}, max_consumers: {limits.max_consumers} }}",
        f"    users: [ {{ user: {_quoted(security.node_user)}, password: {_quoted(security.node_password)} }} ]",
        "  }",
        f"  {SYSTEM_ACCOUNT} {{",
        f"    users: [ {{ user: {_quoted(security.sys_user)}, password: {_quoted(security.sys_password)} }} ]",
        "  }",
        "}",
        f"system_account: {SYSTEM_ACCOUNT}",
        f"max_payload: {security.quotas.max_payload}",
        # a federation node whose loop is held a few seconds under 10,000 edges must not be cut as a
        # slow consumer at the default 10 s (its frames of the gap lost, its edges closed)
        f"write_deadline: {_quoted(WRITE_DEADLINE)}",
        "authorization {",
        "  # every other connection is decided by the federation nodes (federation/nats_auth.py)",
        f"  timeout: {AUTH_TIMEOUT_S}",
        "  auth_callout {",
        f"    issuer: {_quoted(security.issuer_public)}",
        f"    account: {ACCOUNT}",
        f"    auth_users: [ {_quoted(security.node_user)}, {_quoted(security.sys_user)} ]",
        "  }",
        "}",
    ]) + "\n"


def server_config(security: NatsSecurity, settings: ServerSettings) -> str:
    """A complete nats-server configuration file for one server of the cluster."""
    lines = [
        "# generated by `streamql federation nats-config`: the same security block on every server",
        f"server_name: {_quoted(settings.name)}",
        f"listen: {_quoted(settings.listen)}",
        f"jetstream {{ store_dir: {_quoted(settings.store_dir)} }}",
    ]
    if settings.monitor_listen:
        lines.append(f"http: {_quoted(settings.monitor_listen)}")
    if settings.cluster_listen:
        routes = ", ".join(_quoted(f"nats-route://{route}") for route in settings.routes)
        lines.append(f"cluster {{ name: {_quoted(settings.cluster_name)}, "
                     f"listen: {_quoted(settings.cluster_listen)}, routes: [ {routes} ] }}")
    elif settings.routes:
        raise ValueError("routes need a cluster listen address (--cluster-listen)")
    if settings.mqtt_listen:
        # MQTT devices authenticate through the same callout (password = their device token)
        lines.append(f"mqtt {{ listen: {_quoted(settings.mqtt_listen)} }}")
    return "\n".join(lines) + "\n" + security_block(security)


def publish_quota_settings(quotas: EdgeQuotas) -> dict:
    """The SQL_PUB settings (nats-py StreamConfig keyword arguments) that make the quotas per edge:
    records of one edge beyond the backlog are refused, not evicting older ones, so nothing
    published is silently lost. The hub adds them to its stream's own settings."""
    return {"max_msgs_per_subject": quotas.publish_backlog, "discard": "new", "discard_new_per_subject": True,
            "max_msg_size": quotas.publish_record_bytes}


def publish_stream_config(quotas: EdgeQuotas, *, replicas: int = 1) -> dict:
    """A whole SQL_PUB stream with the quotas (for tests and tools; the hub makes its own)."""
    return {"name": nats_subjects.PUBLISH_STREAM, "subjects": [f"{nats_subjects.PREFIX}.pub.*"],
            "num_replicas": replicas, **publish_quota_settings(quotas)}


def register_command(commands) -> None:
    """`streamql federation nats-config`: print one nats-server's configuration (creating the
    federation's nats-security.json in --data on first use)."""
    parser = commands.add_parser(
        "nats-config", help="print a nats-server configuration for the scale-out federation",
        description="Print the configuration of one nats-server of the cluster: accounts, JetStream limits, the "
                    "auth callout answered by federation nodes, cluster routes, the MQTT listener. The secrets "
                    f"come from DIR/{SECURITY_FILE} (created on first use, mode 0600; copy it to every node).")
    parser.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS,
                        help="the federation's data directory (holds nats-security.json)")
    parser.add_argument("--name", default="streamql-nats-1", help="this server's name (unique in the cluster)")
    parser.add_argument("--listen", default="0.0.0.0:4222", metavar="HOST:PORT", help="client port")
    parser.add_argument("--store-dir", default="/var/lib/nats/jetstream", metavar="DIR", help="JetStream storage")
    parser.add_argument("--cluster-name", default="streamql")
    parser.add_argument("--cluster-listen", metavar="HOST:PORT", help="route port (a cluster needs it)")
    parser.add_argument("--route", action="append", default=[], metavar="HOST:PORT",
                        help="another server's route address (repeatable; its own is ignored by the server)")
    parser.add_argument("--mqtt-listen", metavar="HOST:PORT", help="accept MQTT-only devices on this port")
    parser.add_argument("--monitor-listen", metavar="HOST:PORT", help="the HTTP monitoring port")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the configuration here (mode 0600)")
    parser.set_defaults(func=nats_config_command)


def nats_config_command(args) -> int:
    import sys
    data = getattr(args, "data", None)
    if not data:
        print("streamql federation nats-config: --data DIR is required", file=sys.stderr)
        return 2
    try:
        security = NatsSecurity.load_or_create(data)
        text = server_config(security, ServerSettings(
            name=args.name, listen=args.listen, store_dir=args.store_dir, cluster_name=args.cluster_name,
            cluster_listen=args.cluster_listen, routes=tuple(args.route), mqtt_listen=args.mqtt_listen,
            monitor_listen=args.monitor_listen))
    except (ValueError, TypeError, OSError) as error:
        print(f"streamql federation nats-config: {error}", file=sys.stderr)
        return 2
    if args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds passwords
        with os.fdopen(fd, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
