"""Scripts without a prompt: `streamql run FILE…` and a script piped on standard input.

They print exactly as the shell does (the same `Runner`), send errors with carets to standard
error, and stop with a non-zero status at the first error.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..errors import QueryError
from .runner import Runner, Status
from .session import LocalSession

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def run_script(session, sources: list[tuple[str, str]], *, output: str | None = None,
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run (origin, text) pairs in order on a session; the process exit status."""
    runner = Runner(session, out, err, output=output or "table")
    for origin, text in sources:
        try:
            status = runner.run_text(text, origin=origin)
        except KeyboardInterrupt:
            status = Status.INTERRUPTED
        if status is Status.ERROR:
            return EXIT_ERROR
        if status is Status.INTERRUPTED:
            return EXIT_INTERRUPTED
        if status is Status.QUIT:
            break
    return 0


def read_sources(files: list[str], stdin: TextIO | None = None) -> list[tuple[str, str]]:
    sources = []
    for name in files:
        if name == "-":
            sources.append(("<stdin>", (stdin or sys.stdin).read()))
        elif Path(name).is_dir():
            sources.extend(model_sources(Path(name)))
        else:
            sources.append((name, Path(name).read_text(encoding="utf-8")))
    return sources


def model_sources(directory: Path) -> list[tuple[str, str]]:
    """An OSQL model directory (SA Engine's convention): its master.osql, then its tests
    (*.test.osql and test.osql), in name order."""
    master = directory / "master.osql"
    if not master.is_file():
        raise FileNotFoundError(2, "no master.osql in the model directory", str(master))
    tests = sorted(p for p in directory.iterdir() if p.is_file() and (p.name.endswith(".test.osql")
                                                                     or p.name == "test.osql"))
    return [(str(p), p.read_text(encoding="utf-8")) for p in [master] + tests]


def run_files(files: list[str], store: str | None = None, output: str | None = None, *,
              out: TextIO | None = None, err: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """`streamql run FILE…` ('-' reads standard input); with `store`, the engine is restored from
    that directory and saved back when every statement succeeded."""
    err = err if err is not None else sys.stderr
    try:
        sources = read_sources(files, stdin)
    except OSError as exc:
        err.write(f"streamql: cannot read {exc.filename}: {exc.strerror}\n")
        return EXIT_ERROR
    try:
        session = LocalSession(store_dir=store)
    except QueryError as exc:
        err.write(f"streamql: the store in {store} cannot be opened: {exc}\n")
        return EXIT_ERROR
    folders = [Path(name) for name in files if name != "-" and Path(name).is_dir()]
    if folders and session.engine.models_dir is None:   # models:folder('m') finds the model run
        session.engine.models_dir = folders[0].resolve().parent
    try:
        status = run_script(session, sources, output=output, out=out, err=err)
        if status == 0 and store:
            session.engine.save()
        return status
    finally:
        session.close()
