"""The `streamql` command. Subcommands import their packages only when used, so a device that
only runs `streamql edge` never loads the shell, and `edge_engine`/`federation` stay optional.

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


def _add_shell(subparsers) -> None:
    parser = subparsers.add_parser("shell", help="the interactive shell")
    parser.add_argument("--federation", help="URL of a federation to connect to")
    from .client_cli import add_token_arguments
    add_token_arguments(parser)
    parser.add_argument("--store", help="a store directory for the local engine")
    parser.add_argument("--history", help="history file (default ~/.streamql_history)")
    parser.set_defaults(func=_shell)


def _shell(args) -> int:
    from .client_cli import token_from
    from .shell import main as shell_main
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
    try:
        from .shell.script import run_files
    except ImportError:
        run_files = _run_files_plain
    return run_files(args.files, store=args.store, output=args.output)


def _run_files_plain(files, store=None, output=None) -> int:
    """Run scripts with the plain printer (used until the shell package provides its own)."""
    from pathlib import Path

    from .engine import Engine
    from .errors import QueryError
    from .syntax import parse
    engine = Engine(store_dir=store)
    for name in files:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        try:
            statements = parse(text)
        except QueryError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        for statement in statements:
            try:
                result = engine._execute_statement(statement, text)
                if result.message:
                    print(result.message)
                for row in result:
                    print(row if not isinstance(row, tuple) else "\t".join(map(str, row)), flush=True)
            except QueryError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 1
    if store:
        engine.save()
    return 0


def _add_functions(subparsers) -> None:
    parser = subparsers.add_parser("functions", help="list the built-in functions")
    parser.add_argument("pattern", nargs="?", help="only names containing this")
    parser.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/language.md")
    parser.set_defaults(func=_functions)


def _functions(args) -> int:
    from .library import default_library
    from .library.docs import markdown_reference
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
    from . import __version__
    parser.add_argument("--version", action="version", version=f"streamql {__version__}")
    subparsers = parser.add_subparsers(dest="command")
    _add_shell(subparsers)
    _add_run(subparsers)
    _add_functions(subparsers)

    def models():
        from .models.cli import register
        return register

    def federation():
        from federation.cli import register
        return register

    def edge():
        from edge_engine.cli import register
        return register

    def query():
        from .client_cli import register
        return register

    def demo():
        from .demo import register
        return register

    for register in (models, federation, edge, query, demo):
        _optional(register, subparsers)
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
