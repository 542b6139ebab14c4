"""`streamql federation …`: serve, provision devices, manage tokens.

    streamql federation --port 8080 --data DIR [--host 127.0.0.1] [--tls-cert C --tls-key K [--tls-client-ca CA]]
                        [--trusted-key PUB ...] [--heartbeat S] [--max-bundle-bytes N] [limits …]
    streamql federation provision --data DIR --id ID [--meta k=v ...] [--capability k=v ...]
    streamql federation token create --data DIR --role read|deploy|admin [--label L]
    streamql federation token list --data DIR
    streamql federation token revoke --data DIR --token-id N
    streamql federation nats-config --data DIR [--name N --listen H:P --cluster-listen H:P --route H:P …
                                    --mqtt-listen H:P --store-dir DIR -o FILE]

SIGTERM or SIGINT stops it within 10 s (federation/serve.py). The limits and their defaults are
in docs/operations.md ("Limits").

The main `streamql` command calls `register(subparsers)`; each parser sets `func(args) -> int`.
`python -m federation.cli …` works on its own.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from federation import nats_config
from federation.config import FederationConfig


def _attribute(text: str) -> tuple[str, Any]:
    """k=v with v as JSON when it parses (numbers, booleans, lists), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key, parsed if not isinstance(parsed, dict) else value


def _data_arg(parser: argparse.ArgumentParser, sub: bool) -> None:
    # on subcommands SUPPRESS keeps a --data given before the subcommand from being overwritten
    parser.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS if sub else None,
                        help="the federation's data directory (registry, bundles, admin.token)")
    parser.add_argument("--registry", metavar="URL", default=argparse.SUPPRESS if sub else None,
                        help="keep the registry in PostgreSQL (postgresql://user@host:port/db), shared by "
                             "every federation node given the same URL; default: an SQLite file in --data")
    parser.add_argument("--config", metavar="TOML", default=argparse.SUPPRESS if sub else None,
                        help="settings from a TOML file, keys named as the long options "
                             "(registry = \"postgresql://…\", port = 8080); flags given override it")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("federation", help="run or administer a federation service",
                                   description="Serve a StreamQL federation, or administer its registry.")
    _data_arg(parser, sub=False)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    parser.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    parser.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest JSON request body")
    parser.add_argument("--max-bundle-bytes", type=int, default=64 << 20, help="largest bundle upload")
    parser.add_argument("--trusted-key", action="append", default=[], metavar="PUB",
                        help="a public key (PEM) whose signature makes a bundle acceptable (repeatable)")
    parser.add_argument("--allow-unsigned-bundles", action="store_true",
                        help="accept bundles nobody signed (development only)")
    parser.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS",
                        help="heartbeat interval told to edges; silent for 3 × this means offline")
    parser.add_argument("--statement-workers", type=int, default=32, metavar="N",
                        help="worker threads statements run in (default 32)")
    parser.add_argument("--device-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long a connected device has to answer a query (default 10)")
    parser.add_argument("--query-memory-mb", type=float, default=256.0, metavar="MB",
                        help="a statement's memory limit when its request gives none (default 256)")
    parser.add_argument("--query-seconds", type=float, default=None, metavar="SECONDS",
                        help="a statement's time limit when its request gives none (default: none)")
    parser.add_argument("--query-limits", action="append", metavar="ROLE:KEY=VALUE,…",
                        help="a role's statement limits, its defaults and ceilings: read:memory_mb=64,seconds=30 "
                             "(keys rows, seconds, memory_mb; repeatable)")
    parser.add_argument("--files", metavar="DIR",
                        help="the only directory statements may read files from (csv:file_stream, create model "
                             "… from 'file'); default: none")
    limits = parser.add_argument_group("limits (docs/operations.md, Limits; defaults there)")
    limits.add_argument("--rate-limit", action="append", metavar="ROLE=RATE,BURST,CONCURRENT",
                        help="requests per second, burst and requests in flight of each token of a role "
                             "(read, deploy, admin, device; repeatable)")
    limits.add_argument("--max-statement-bytes", type=int, metavar="N", help="longest statement text")
    limits.add_argument("--max-statement-tokens", type=int, metavar="N",
                        help="most tokens (names, numbers, strings, symbols) of a statement")
    limits.add_argument("--idle-timeout", dest="idle_timeout_s", type=float, metavar="S",
                        help="close connections without a complete request head this long")
    limits.add_argument("--body-timeout", dest="body_timeout_s", type=float, metavar="S",
                        help="a request body must arrive within this (uploads: plus 1 s per 256 KiB)")
    limits.add_argument("--shutdown-timeout", dest="shutdown_timeout_s", type=float, metavar="S",
                        help="graceful shutdown budget after SIGTERM (the process exits after 10 s regardless)")
    limits.add_argument("--max-uploads", type=int, metavar="N", help="bundle uploads checked at once")
    limits.add_argument("--max-bundle-unpacked-bytes", type=int, metavar="N", help="a bundle's files, inflated")
    limits.add_argument("--publish-records-per-s", type=float, metavar="N", help="records a device may publish a second")
    limits.add_argument("--publish-bytes-per-s", type=float, metavar="N", help="bytes a device may publish a second")
    parser.add_argument("--deploy-wave-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long a rollout's wave waits at most for its devices to report healthy "
                             "(a statement's `wave timeout` overrides it)")
    parser.add_argument("--deploy-settle", type=float, default=5.0, metavar="SECONDS",
                        help="how long a device must look healthy after a change to count as healthy")
    parser.add_argument("--deploy-concurrency", type=int, default=64, metavar="N",
                        help="devices receiving a bundle's bytes at the same time (64)")
    parser.add_argument("--deploy-window", type=int, default=1000, metavar="N",
                        help="devices of one deployment sent to and not yet answered, at most (1000)")
    nats = parser.add_argument_group("NATS transport (docs/operations.md, Transport on NATS)")
    nats.add_argument("--nats", action="append", metavar="URL[,URL…]",
                      help="reach edges through NATS (nats://host:port of every server of the cluster)")
    nats.add_argument("--nats-node", metavar="ID", help="this node's id on NATS (default: host and data dir)")
    nats.add_argument("--nats-creds", metavar="FILE", help="the node's NATS credentials file")
    nats.add_argument("--nats-token-file", metavar="FILE", help="the node's NATS token (or $STREAMQL_NATS_TOKEN)")
    nats.add_argument("--nats-lease", type=float, metavar="SECONDS",
                      help="fragments on edges stop when this node is silent this long (10)")
    nats.add_argument("--nats-replicas", type=int, metavar="N",
                      help="JetStream replicas of published records and presence (1; 3 in a three-server cluster)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=serve)
    # the defaults, for --config to tell an unset flag from a given one
    parser.set_defaults(_parser_defaults={a.dest: a.default for a in parser._actions if a.dest != "help"})
    commands = parser.add_subparsers(dest="federation_command", metavar="COMMAND")

    prov = commands.add_parser("provision", help="register a device and print its token")
    _data_arg(prov, sub=True)
    prov.add_argument("--id", required=True, dest="device_id", help="the device id")
    prov.add_argument("--meta", type=_attribute, action="append", default=[], metavar="K=V",
                      help="a metadata key and value (repeatable)")
    prov.add_argument("--capability", type=_attribute, action="append", default=[], metavar="K=V",
                      help="a capability and its value (repeatable)")
    prov.add_argument("--json", action="store_true", help="print {id, token} as JSON")
    prov.set_defaults(func=provision_command)

    token = commands.add_parser("token", help="create, list or revoke tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_commands.add_parser("create", help="create a token and print it")
    _data_arg(create, sub=True)
    create.add_argument("--role", required=True, choices=["read", "deploy", "admin"])
    create.add_argument("--label", default="")
    create.set_defaults(func=token_create_command)
    listing = token_commands.add_parser("list", help="list active tokens (never their secrets)")
    _data_arg(listing, sub=True)
    listing.set_defaults(func=token_list_command)
    revoke = token_commands.add_parser("revoke", help="revoke a token by id")
    _data_arg(revoke, sub=True)
    revoke.add_argument("--token-id", type=int, required=True)
    revoke.set_defaults(func=token_revoke_command)
    nats_config.register_command(commands)   # streamql federation nats-config (federation/nats_config.py)
    return parser


def _require_data(args: argparse.Namespace) -> Path:
    data = getattr(args, "data", None)
    if not data:
        raise SystemExit("streamql federation: --data DIR is required")
    return Path(data)


def _open_registry(args: argparse.Namespace):
    from federation.config import REGISTRY_FILE
    from federation.registry_interface import open_registry

    _apply_config_file(args)
    if getattr(args, "registry", None):
        try:
            return open_registry(args.registry, follow=False)
        except Exception as exc:   # unreachable server, bad URL, refused credentials
            raise SystemExit(f"streamql federation: cannot open the registry {args.registry}: {exc}") from None
    data = _require_data(args)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return open_registry(data / REGISTRY_FILE)


def _apply_config_file(args: argparse.Namespace) -> None:
    """Fill what the command line left unset (None, or the parser's default) from --config."""
    path = getattr(args, "config", None)
    if not path or getattr(args, "_config_applied", False):
        return
    import tomllib

    try:
        settings = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"streamql federation: cannot read the config file {path}: {exc}") from None
    defaults = getattr(args, "_parser_defaults", {})
    for key, value in settings.items():
        dest = key.replace("-", "_")
        if dest not in defaults and not hasattr(args, dest):
            raise SystemExit(f"streamql federation: {path}: unknown setting {key!r}")
        if getattr(args, dest, None) in (None, defaults.get(dest)):
            setattr(args, dest, value)
    args._config_applied = True


def serve(args: argparse.Namespace) -> int:
    from federation.serve import serve as serve_until_stopped
    from federation.tls import ssl_context_for

    _apply_config_file(args)
    _require_data(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = FederationConfig.from_args(args)
    except ValueError as exc:
        raise SystemExit(f"streamql federation: {exc}") from None
    if config.registry:   # a clear error now, rather than a failed start with nothing said
        from federation.registry_interface import open_registry
        try:
            open_registry(config.registry, follow=False).close()   # also migrates, under its lock
        except Exception as exc:
            raise SystemExit(f"streamql federation: cannot open the registry {config.registry}: {exc}") from None
    scheme = "https" if config.tls else "http"
    return serve_until_stopped(config, ssl_context_for(config), announce=lambda: print(
        f"StreamQL federation on {scheme}://{config.host}:{config.port}", flush=True))


def provision_command(args: argparse.Namespace) -> int:
    from federation.auth import provision
    from streamql.errors import QueryError

    with _open_registry(args) as registry:
        try:
            done = provision(registry, args.device_id, dict(args.meta), dict(args.capability))
        except QueryError as exc:
            print(f"streamql federation provision: {exc.message}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps({"id": done.device.id, "token": done.token}))
    else:
        print(done.token)
    return 0


def token_create_command(args: argparse.Namespace) -> int:
    from federation.auth import create_token

    with _open_registry(args) as registry:
        _, token = create_token(registry, args.role, label=args.label)
    print(token)
    return 0


def token_list_command(args: argparse.Namespace) -> int:
    with _open_registry(args) as registry:
        for record in registry.list_tokens():
            owner = f"device {record.device_id}" if record.device_id else record.role
            print(f"{record.id}\t{owner}\t{record.label}")
    return 0


def token_revoke_command(args: argparse.Namespace) -> int:
    with _open_registry(args) as registry:
        if not registry.revoke_token(args.token_id):
            print(f"streamql federation token revoke: no active token {args.token_id}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamql")
    register(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv if argv[:1] == ["federation"] else ["federation", *argv])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
