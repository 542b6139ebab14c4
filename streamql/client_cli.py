"""`streamql query --federation URL --token T "select …;"`: rows as they arrive, then each device's
outcome (on standard error, so standard output holds only rows).

    streamql query --federation https://fed:8080 --token $T --ca-file ca.pem "select id(e) from Edge e;"
    streamql query --federation URL --format json "…"        one JSON array per row (NDJSON)
    streamql query --federation URL --token T -f script.sql   every statement of a file, in order

The token is best given in a file (`--token-file PATH`) or in $STREAMQL_TOKEN: a `--token T` on
the command line is visible to every user of the machine (`ps`). Exit status:
    0    every statement ran and every selected device answered
    1    a statement's error (the message has its position)
    2    usage
    3    the federation refused (401, 403, 404) or could not be reached
    4    an incomplete answer: some selected device did not answer (offline, timed out, failed,
         skipped); the rows of those that did were printed, the status says which did not
    5    the federation refused the request for now (429, too many requests): retry later
    130  interrupted (Ctrl-C)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import codec
from .client import FederationRequestError, FederationUnavailable, connect
from .errors import QueryError
from .syntax import parse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("query", help="run a statement on a federation",
                                   description="Run StreamQL statements on a federation and print the rows.")
    parser.add_argument("statement", nargs="?", help="the statement (or use --file)")
    parser.add_argument("--federation", required=True, metavar="URL", help="the federation, http(s)://host:port")
    add_token_arguments(parser)
    parser.add_argument("--ca-file", metavar="PEM", help="trust this CA for https (a private federation)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    parser.add_argument("--file", "-f", metavar="FILE", help="run every statement of a script file")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: tab-separated values (default); json: one JSON array per row")
    parser.add_argument("--quiet", "-q", action="store_true", help="do not print the status per device")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for a deployment to settle before the next statement")
    parser.add_argument("--deploy-timeout", type=float, default=300.0, metavar="S",
                        help="how long to wait for a deployment to settle (default 300 s)")
    parser.set_defaults(func=run)
    return parser


SHOWN_DEVICES = 20   # devices that did not answer, listed one per line (the summary counts them all)
TOKEN_HELP = ("bearer token; visible to other users in ps: prefer --token-file or $STREAMQL_TOKEN")


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """--token (discouraged: argv is public) and --token-file; $STREAMQL_TOKEN when neither."""
    parser.add_argument("--token", help=TOKEN_HELP)
    parser.add_argument("--token-file", metavar="PATH", help="a file whose first line is the bearer token")


def token_from(args: argparse.Namespace) -> str | None:
    """The token of --token-file, else --token, else None (the client then reads $STREAMQL_TOKEN)."""
    path = getattr(args, "token_file", None)
    if path:
        try:
            lines = Path(path).expanduser().read_text().strip().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        if not lines or not lines[0].strip():
            raise ValueError(f"the token file {path} is empty")
        return lines[0].strip()
    return getattr(args, "token", None)


def _text(value: Any) -> str:

    plain = codec.to_plain(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def _print_row(row: Any, width: int, fmt: str) -> None:

    values = list(row) if width > 1 and isinstance(row, tuple) else [row]
    if fmt == "json":
        print(json.dumps(codec.to_plain(values), ensure_ascii=False), flush=True)
    else:
        print("\t".join(_text(v) for v in values), flush=True)


def _print_status(result, quiet: bool) -> None:
    if result.message:
        print(result.message, file=sys.stderr)
    if result.deployment_id:
        print(f"deployment {result.deployment_id}", file=sys.stderr)
    status = result.status
    if quiet or not status:
        return
    summary = getattr(status, "summary", None)
    if summary is not None:
        print(summary() + ("" if getattr(status, "complete", True) else " · partial answer"), file=sys.stderr)
    shown = [(d, o) for d, o in sorted(status.items()) if not isinstance(o, dict) or o.get("outcome") != "answered"]
    if not shown:
        return
    more = len(shown) - SHOWN_DEVICES
    shown = shown[:SHOWN_DEVICES]
    width = max(len(str(device)) for device, _ in shown)
    for device, outcome in shown:
        outcome = outcome if isinstance(outcome, dict) else {"outcome": outcome}
        reason = outcome.get("reason")
        line = f"{device:<{width}}  {outcome.get('outcome', '?'):<10} {outcome.get('rows', 0):>8} rows"
        print(line + (f"  {reason}" if reason else ""), file=sys.stderr)
    if more > 0:
        print(f"… and {more} more device{'s' if more != 1 else ''} that did not answer", file=sys.stderr)


def _wait(fleet, deployment_id: str, timeout: float, quiet: bool) -> None:
    """Wait for a rollout to settle, so the next statement of a script sees its outcome."""
    progress = fleet.wait_deployment(deployment_id, timeout)
    counts = progress.get("counts", {})
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    print(f"deployment {deployment_id} {progress.get('state', '?')}: {summary or 'no devices'}", file=sys.stderr)
    if quiet:
        return
    for device in progress.get("devices", []):
        if device.get("state") in ("skipped", "failed"):
            print(f"  {device['id']}  {device['state']}  {device.get('reason') or ''}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:

    if bool(args.statement) == bool(args.file):
        print("streamql query: give one statement, or --file FILE", file=sys.stderr)
        return 2
    try:
        fleet = connect(args.federation, token_from(args), ca_file=args.ca_file, verify=not args.insecure)
    except ValueError as exc:
        print(f"streamql query: {exc}", file=sys.stderr)
        return 2
    if args.file:
        script = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        try:
            statements = [script[s.span.start:s.span.end] + ";" for s in parse(script)]
        except QueryError as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 1
    else:
        statements = [args.statement]
    incomplete = False
    for text in statements:
        result = None
        try:
            result = fleet.query(text, format="msgpack")
            for row in result:
                if result.kind != "deployment":
                    _print_row(row, len(result.columns), args.format)
            if result.deployment_id and not args.no_wait:
                _print_status(result, args.quiet)
                _wait(fleet, result.deployment_id, args.deploy_timeout, args.quiet)
                continue
        except FederationRequestError as exc:
            print(f"streamql query: {exc}", file=sys.stderr)
            if exc.status == 429:
                return 5
            return 3 if exc.status in (401, 403, 404, 501) or exc.status is None else 1
        except FederationUnavailable as exc:
            print(f"streamql query: {exc}", file=sys.stderr)
            return 3
        except QueryError as exc:
            print(str(exc), file=sys.stderr)
            if result is not None and result.status:
                _print_status(result, args.quiet)
            return 1
        except KeyboardInterrupt:
            if result is not None:
                result.close()
            return 130
        _print_status(result, args.quiet)
        incomplete = incomplete or result.complete is False
    return 4 if incomplete else 0
