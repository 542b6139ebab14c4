"""The interactive loop: a prompt_toolkit prompt that submits at the closing `;`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings

from .. import __version__
from .completion import StreamQLCompleter
from .highlight import STYLE, StreamQLLexer
from .lexer import is_complete
from .runner import Runner
from .status import Status

DEFAULT_HISTORY = "~/.streamql_history"


def should_submit(text: str) -> bool:
    """Enter runs the input when it is empty, a meta-command, or ends its last statement with ';'."""
    return not text.strip() or is_complete(text)


def key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter")
    @bindings.add("c-j")
    def _enter(event):
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.apply_completion(state.current_completion)
            return
        if should_submit(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.newline(copy_margin=True)

    @bindings.add("escape", "enter")
    def _submit(event):
        event.current_buffer.validate_and_handle()

    return bindings


def open_history(path: str | os.PathLike | None) -> History:
    target = Path(os.path.expanduser(str(path or DEFAULT_HISTORY)))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
        return FileHistory(str(target))
    except OSError:
        return InMemoryHistory()


class Shell:
    """The REPL over a session. `input`/`output` are prompt_toolkit's (tests pass a pipe input
    and a dummy output); `out`/`err` are where results and errors are printed."""

    def __init__(self, session, *, history: History | str | None = None, input=None, output=None,
                 out: TextIO | None = None, err: TextIO | None = None, **runner_options):
        self.session = session
        self.runner = Runner(session, out, err, **runner_options)
        self.completer = StreamQLCompleter(session, commands=self.runner.commands.names())
        self.runner.on_change = self.completer.refresh
        if history is None or isinstance(history, (str, os.PathLike)):
            history = open_history(history)
        self.prompt_session = PromptSession(
            message=self._message, multiline=True, prompt_continuation=self._continuation,
            lexer=StreamQLLexer(), completer=self.completer, complete_while_typing=True, complete_in_thread=True,
            history=history, key_bindings=key_bindings(), style=STYLE, include_default_pygments_style=False,
            input=input, output=output, enable_open_in_editor=False)

    def _message(self):
        return [("class:prompt", f"{self.session.label}> ")]

    def _continuation(self, width: int, line_number: int, is_soft_wrap: bool):
        return [("class:continuation", "...> ".rjust(width))]

    def banner(self) -> str:
        where = f"federation {self.session.label}" if self.session.federated else "a local engine"
        return (f"StreamQL {__version__} on {where}. End statements with ';'. "
                "\\help for help, Ctrl-C stops a query, Ctrl-D leaves.")

    def run(self, banner: bool = True) -> int:
        if banner:
            self.runner.out.write(self.banner() + "\n")
            self.runner.out.flush()
        # Completion reads the catalog (over the network on a federation): fetch it before the
        # first prompt, and complete in a thread, so typing never waits for it.
        self.completer.prefetch()
        failures = 0
        while True:
            try:
                text = self.prompt_session.prompt()
                failures = 0
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            except Exception as exc:  # noqa: BLE001 - the terminal went wrong: say so, try again, then give up
                self.runner.report_bug(exc)
                failures += 1
                if failures >= 3:
                    return 1
                continue
            try:
                status = self.runner.run_text(text)
            except KeyboardInterrupt:  # between statements, or in a meta-command
                status = Status.INTERRUPTED
            if status is Status.QUIT:
                break
        return 0
