"""The `streamql` command. `edge` and `federation` dispatch to their packages, imported only when
the parser is built and skipped when they are not installed, so both stay optional.

    streamql                       the interactive shell on a local engine
    streamql shell [--federation URL [--token-file PATH]]   (or $STREAMQL_TOKEN; --token T shows in ps)
    streamql run FILE…             run scripts, printing rows as they arrive
    streamql query --federation URL --token-file PATH "select …"
    streamql model init|pack|keygen|sign|verify|inspect|test …
    streamql edge --config edge.toml | --simulate N --federation URL
    streamql federation --port 8080 --data DIR | provision | token …
    streamql demo                  a federation and a simulated fleet, with the shell
    streamql functions [--markdown]
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import __version__
from .client_cli import add_token_arguments, token_from
from .client_cli import register as register_query
from .demo import register as register_demo
from .library import default_library
from .library.docs import markdown_reference
from .model_cli import register as register_model
from .shell import main as shell_main
from .shell.script import run_files


def _add_shell(subparsers) -> None:
    parser = subparsers.add_parser("shell", help="the interactive shell")
    parser.add_argument("--federation", help="URL of a federation to connect to")
    add_token_arguments(parser)
    parser.add_argument("--store", help="a store directory for the local engine")
    parser.add_argument("--history", help="history file (default ~/.streamql_history)")
    parser.set_defaults(func=_shell)


def _shell(args) -> int:
    try:
        args.token = token_from(args)
    except ValueError as exc:
        print(f"streamql shell: {exc}", file=sys.stderr)
        return 2
    return shell_main(args)


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run StreamQL scripts")
    parser.add_argument("files", nargs="+", help="script files ('-' for standard input)")
    parser.add_argument("--store", help="a store directory to restore from and save to")
    parser.add_argument("--output", choices=("table", "csv", "json"), default=None)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    return run_files(args.files, store=args.store, output=args.output)


def _add_functions(subparsers) -> None:
    parser = subparsers.add_parser("functions", help="list the built-in functions")
    parser.add_argument("pattern", nargs="?", help="only names containing this")
    parser.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/language.md")
    parser.set_defaults(func=_functions)


def _functions(args) -> int:
    if args.markdown:
        print(markdown_reference(default_library()))
        return 0
    for overload in default_library().all():
        if args.pattern and args.pattern.lower() not in overload.name:
            continue
        print(f"{overload.signature:70} {overload.doc}")
    return 0


def _optional(register: Callable[[], Callable], subparsers) -> None:
    try:
        register()(subparsers)
    except ImportError:  # the package is not installed here
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamql", description="StreamQL: query fleets of edge devices")
    parser.add_argument("--version", action="version", version=f"streamql {__version__}")
    subparsers = parser.add_subparsers(dest="command")
    _add_shell(subparsers)
    _add_run(subparsers)
    _add_functions(subparsers)
    register_model(subparsers)

    def federation():
        from federation.cli import register
        return register

    def edge():
        from edge_engine.cli import register
        return register

    for register in (federation, edge):
        _optional(register, subparsers)
    register_query(subparsers)
    register_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        argv = ["shell"]
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
