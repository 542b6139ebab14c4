"""Helpers to drive the real shell in-process: prompt_toolkit's pipe input, a dummy terminal
output, results and errors captured in StringIO."""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

import streamql
from streamql.shell.repl import Shell
from streamql.shell.session import LocalSession


@dataclass
class Transcript:
    status: int
    out: str
    err: str
    shell: Shell


@pytest.fixture
def history_file(tmp_path):
    return tmp_path / "history"


@pytest.fixture
def engine():
    engine = streamql.Engine()
    yield engine
    engine.close()


@pytest.fixture
def drive(history_file, engine):
    """drive(keys, session=None, **runner_options) -> Transcript: type `keys` into a fresh shell
    (ending with Ctrl-D unless `eof=False`) and capture what it printed."""

    def run(keys: str | list[str], session=None, eof: bool = True, out=None, pause: float = 0.3,
            **options) -> Transcript:
        session = session or LocalSession(engine)
        out = out if out is not None else io.StringIO()
        err = io.StringIO()
        with create_pipe_input() as pipe:
            shell = Shell(session, history=str(history_file), input=pipe, output=DummyOutput(),
                          out=out, err=err, **options)
            if isinstance(keys, str):
                pipe.send_text(keys + ("\x04" if eof else ""))
                status = shell.run(banner=False)
            else:  # chunks typed with pauses, so asynchronous completion can catch up
                chunks = list(keys) + (["\x04"] if eof else [])

                def typist():
                    for chunk in chunks:
                        pipe.send_text(chunk)
                        time.sleep(pause)

                thread = threading.Thread(target=typist, daemon=True)
                thread.start()
                status = shell.run(banner=False)
                thread.join(5)
        return Transcript(status, out.getvalue(), err.getvalue(), shell)

    return run
