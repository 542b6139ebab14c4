"""The StreamQL shell: an interactive prompt (and script runner) over a `Session`.

    streamql                          the shell on a local engine (a piped script runs instead)
    streamql shell --federation URL --token T
    streamql run FILE…                scripts, printed as the shell prints

Modules: `lexer` (a tolerant scanner from the grammar's terminals: splitting and highlighting),
`highlight`, `completion`, `formatting` (table / CSV / JSON), `plots` (terminal charts),
`progress` (deployment progress), `runner` (statements in a worker, Ctrl-C, printing),
`commands` (backslash commands), `session` (the `Session` interface and `LocalSession`),
`federation` (`FederationSession`), `repl` (the prompt), `script` (`run_files`).
"""
from __future__ import annotations

import sys

from ..errors import QueryError
from . import federation
from .script import run_script
from .session import LocalSession, Section, Session

__all__ = ["main", "open_session", "LocalSession", "Session", "Section"]


def open_session(args) -> Session:
    """A local session, or one on the federation named by `args.federation`."""
    url = getattr(args, "federation", None)
    if url:
        return federation.connect(url, getattr(args, "token", None))
    return LocalSession(store_dir=getattr(args, "store", None))


def main(args) -> int:
    """`streamql shell`: the REPL on a terminal; a script piped on standard input runs as with
    `streamql run -`."""
    try:
        session = open_session(args)
    except ImportError:
        print("streamql: this installation has no federation client (streamql.connect)", file=sys.stderr)
        return 2
    except (QueryError, OSError) as exc:
        print(f"streamql: cannot open the session: {exc}", file=sys.stderr)
        return 2
    try:
        if not sys.stdin.isatty():
            status = run_script(session, [("<stdin>", sys.stdin.read())])
        else:
            from .repl import Shell  # prompt_toolkit, only for a terminal
            status = Shell(session, history=getattr(args, "history", None)).run()
        save = getattr(getattr(session, "engine", None), "save", None)
        if save is not None and getattr(args, "store", None) and status == 0:
            save()
        return status
    finally:
        session.close()
