"""The `streamql model` command: init, pack, keygen, sign, verify, inspect and test bundles.

`register(subparsers)` adds the `model` subcommand to the main `streamql` parser; the parsed
arguments carry `func`, which runs the command and returns the exit status. `main(argv)` runs it
standalone: `python -m streamql.model_cli pack DIR`. Errors print one plain line to stderr and
exit with status 1 (2 for usage errors, from argparse).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from .engine import Engine
from .errors import QueryError
from .models.bundle import inspect, pack, read_bundle, sign, verify
from .models.bundle_template import init_bundle
from .models.install import install_bundle, run_bundle_tests
from .models.signing import key_id, keygen, load_public_key

__all__ = ["build_parser", "main", "register"]

EngineFactory = Callable[[], Any]


def _capabilities(text: str | None) -> dict | None:
    if text is None:
        return None
    source = text
    if not text.lstrip().startswith("{"):
        try:
            with open(text, encoding="utf-8") as fh:
                source = fh.read()
        except OSError as exc:
            raise QueryError(f"cannot read the capabilities file '{text}' ({exc.strerror})") from None
    try:
        caps = json.loads(source)
    except json.JSONDecodeError as exc:
        raise QueryError(f"the capabilities are not valid JSON ({exc})") from None
    if not isinstance(caps, dict):
        raise QueryError("the capabilities must be a JSON object")
    return caps


# --- commands -------------------------------------------------------------------------------------

def _cmd_init(args, out) -> int:
    written = init_bundle(args.dir, name=args.name)
    print(f"created bundle template in {args.dir} ({len(written)} files)", file=out)
    for path in written:
        print(f"  {os.path.relpath(path, args.dir)}", file=out)
    return 0


def _cmd_pack(args, out) -> int:
    path = pack(args.dir, args.output)
    bundle = read_bundle(path)
    print(f"packed {bundle.name} {bundle.version} into {path} (sha256 {bundle.sha256})", file=out)
    return 0


def _cmd_keygen(args, out) -> int:
    priv, pub = keygen(args.prefix, overwrite=args.force)
    print(f"private key: {priv} (keep it secret; mode 0600)", file=out)
    print(f"public key:  {pub} (key id {key_id(load_public_key(pub))})", file=out)
    return 0


def _cmd_sign(args, out) -> int:
    path = sign(args.bundle, args.key, args.output)
    bundle = read_bundle(path)
    print(f"signed {bundle.name} {bundle.version}: {path} (key id {bundle.signatures[-1]['key_id']})", file=out)
    return 0


def _cmd_verify(args, out) -> int:
    bundle = verify(args.bundle, args.pubkey)
    print(f"OK: {bundle.name} {bundle.version} is signed by key {bundle.verified_by}"
          f" and every file matches its hash", file=out)
    return 0


def _cmd_inspect(args, out) -> int:
    report = inspect(args.bundle, capabilities=_capabilities(args.capabilities),
                     trusted_keys=[args.pubkey] if args.pubkey else None)
    if args.json:
        json.dump(report, out, indent=2, sort_keys=False, default=str)
        out.write("\n")
    else:
        out.write(render_inspect(report))
    return 0


def _cmd_test(args, out) -> int:
    bundle = read_bundle(args.bundle, trusted_keys=[args.pubkey] if args.pubkey else None)
    engine = args.engine_factory()
    installed = install_bundle(engine, bundle, _capabilities(args.capabilities), autostart=args.autostart)
    report = run_bundle_tests(bundle, engine)
    if args.json:
        json.dump({**report.to_dict(), "variants": installed.variants}, out, indent=2)
        out.write("\n")
    else:
        chosen = ", ".join(f"{m}: {v}" for m, v in installed.variants.items()) or "no models"
        print(f"testing {bundle.name} {bundle.version} ({chosen})", file=out)
        print(report.summary(), file=out)
    return 0 if report.passed else 1


# --- text rendering -------------------------------------------------------------------------------

def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _shape(entries: list[dict]) -> str:
    return ", ".join(f"{e['name']} ({', '.join(str(d) for d in e['shape'])}) {e['dtype']}" for e in entries)


def _req_text(req: dict | None) -> str:
    if not req:
        return "-"
    parts = []
    for key in ("ram_kb", "flash_kb"):
        if req.get(key) is not None:
            parts.append(f"{key[:-3]} {req[key]} KB")
    if req.get("signals"):
        parts.append("signals " + ", ".join(req["signals"]))
    if req.get("runtimes"):
        parts.append("runtimes " + ", ".join(f"{k}{'' if v is None else ' ' + str(v)}" for k, v in req["runtimes"].items()))
    if req.get("cpu"):
        parts.append(f"cpu {req['cpu']}")
    return "; ".join(parts) or "-"


def render_inspect(report: dict) -> str:
    lines = [f"bundle {report['name']} {report['version']}", f"  sha256       {report['sha256']}"]
    if report.get("description"):
        lines.append(f"  description  {report['description']}")
    signed = ", ".join(report["signed_by"]) if report["signed_by"] else "unsigned"
    lines.append(f"  signed by    {signed}")
    lines.append(f"  requirements {_req_text(report.get('requirements'))}")
    for key, value in (report.get("provenance") or {}).items():
        lines.append(f"  provenance   {key}: {json.dumps(value) if not isinstance(value, str) else value}")
    for key in ("scripts", "autostart", "tests"):
        lines.append(f"  {key:<12} {', '.join(report[key]) or '-'}")
    for name, rows in report["models"].items():
        lines.append(f"  model {name}")
        for row in rows:
            acc = "" if row.get("accuracy") is None else f", accuracy {row['accuracy']}"
            lines.append(f"    variant {row['id']} ({row['kind']}, {row.get('artifact') or 'inline spec'}{acc})")
            info = row.get("info")
            if info:
                lines.append(f"      inputs   {_shape(info['inputs'])}")
                lines.append(f"      outputs  {_shape(info['outputs'])}")
                lines.append(f"      size {_bytes(info['size_bytes'])}, arena {_bytes(info['arena_bytes'])},"
                             f" {info['macs']:,} MACs, quantization {info['quantization']}")
                if info.get("ops"):
                    lines.append(f"      ops      {', '.join(info['ops'])}")
                lines.append(f"      sha256   {info['sha256']}")
            if row.get("error"):
                lines.append(f"      error    {row['error']}")
            lines.append(f"      needs    {_req_text(row.get('requirements'))}")
    if "fit" in report:
        fit = report["fit"]
        if fit["ok"]:
            chosen = ", ".join(f"{m}: {v}" for m, v in fit["variants"].items())
            lines.append(f"  fits the device ({chosen})")
        else:
            lines.append(f"  does not fit the device: {fit['reason']}")
    return "\n".join(lines) + "\n"


# --- wiring ---------------------------------------------------------------------------------------

_COMMANDS = {
    "init": _cmd_init, "pack": _cmd_pack, "keygen": _cmd_keygen, "sign": _cmd_sign,
    "verify": _cmd_verify, "inspect": _cmd_inspect, "test": _cmd_test,
}


def _add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    p = sub.add_parser("init", help="create a working bundle template in DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--name", help="bundle name (default: the directory's name)")
    p = sub.add_parser("pack", help="pack a bundle directory into one file")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default NAME-VERSION.sqlbundle)")
    p = sub.add_parser("keygen", help="make an Ed25519 key pair PREFIX.key / PREFIX.pub")
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p = sub.add_parser("sign", help="sign a packed bundle")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--key", required=True, metavar="KEY", help="the private key (.key)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the signed bundle here (default: in place)")
    p = sub.add_parser("verify", help="check a bundle's signature and hashes")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--pubkey", required=True, metavar="PUB", help="the public key (.pub)")
    p = sub.add_parser("inspect", help="manifest, requirements and model info of a bundle")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--capabilities", metavar="JSON|FILE", help="a device's capabilities: show the variants it gets")
    p.add_argument("--pubkey", metavar="PUB", help="require a valid signature by this key")
    p = sub.add_parser("test", help="install a bundle into a fresh engine and run its tests")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--pubkey", metavar="PUB", help="require a valid signature by this key")
    p.add_argument("--capabilities", metavar="JSON|FILE", help="choose variants for these capabilities")
    p.add_argument("--autostart", action="store_true", help="also start the autostart queries")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run(args: argparse.Namespace) -> int:
    out = getattr(args, "out", None) or sys.stdout
    try:
        return _COMMANDS[args.model_command](args, out)
    except QueryError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(f"  ({note})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1


def register(subparsers: Any, engine_factory: EngineFactory | None = None) -> argparse.ArgumentParser:
    """Add `model` to the main parser's subparsers; `args.func(args)` then runs it."""
    parser = subparsers.add_parser("model", help="build, sign, inspect and test model bundles",
                                   description="Build, sign, inspect and test model bundles.")
    _add_commands(parser)
    parser.set_defaults(func=_run, engine_factory=engine_factory or Engine)
    return parser


def build_parser(engine_factory: EngineFactory | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamql model",
                                     description="Build, sign, inspect and test model bundles.")
    _add_commands(parser)
    parser.set_defaults(func=_run, engine_factory=engine_factory or Engine)
    return parser


def main(argv: list[str] | None = None, engine_factory: EngineFactory | None = None) -> int:
    args = build_parser(engine_factory).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
