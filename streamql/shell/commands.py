"""Meta-commands: lines starting with a backslash, run by the shell rather than the engine."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Callable

from .formatting import FORMATS, make_printer
from .session import match_name
from .status import Status

HELP = """\
Statements end with ';' and may span lines; Enter runs them once the ';' is typed.
  select x * 2 from Integer x where x in iota(1, 3);
  select stream of x from Real x where x in heartbeat(0.5);     -- Ctrl-C stops it
A comment line before a query draws its rows as a live chart:
  //plot: Line plot        (or Bar plot, Scatter plot, Text)
Tab completes keywords, functions, types, signals, models, flows{fleet}.
Ctrl-C stops a running query or clears the input; Ctrl-D leaves.

Meta-commands:"""


class Commands:
    """The backslash commands of one runner (and so of one session)."""

    def __init__(self, runner):  # the Runner whose session and output the commands use
        self.runner = runner
        self.table: dict[str, tuple[Callable[[list[str]], Status | None], str, str]] = {
            "help": (self.help, "", "this help"),
            "functions": (self.functions, "[pattern]", "functions whose name contains pattern (or matches a glob)"),
            "describe": (self.describe, "NAME", "a function's overloads, a type, a table, a model or a signal"),
            "signals": (self.signals, "", "the signals queries can read"),
            "models": (self.models, "", "the installed models"),
            "flows": (self.flows, "", "named flows (publish / subscribe)"),
            "edges": (self.edges, "[pattern]", "the federation's edges (federation only)"),
            "timing": (self.timing, "[on|off]", "print how long each statement took"),
            "output": (self.output, "[table|csv|json]", "how rows are printed"),
            "read": (self.read, "FILE", "run the statements of a file"),
            "q": (self.quit, "", "leave (also \\quit, Ctrl-D)"),
        }
        self.aliases = {"?": "help", "h": "help", "quit": "q", "exit": "q", "d": "describe", "i": "read",
                        "df": "functions"}

    def names(self) -> list[str]:
        return sorted(self.table) + ["quit"]

    def run(self, line: str) -> Status:
        try:
            words = shlex.split(line[1:].strip())
        except ValueError:
            words = line[1:].split()
        if not words:
            return self._fail("an empty command: try \\help")
        name = words[0].lower()
        name = self.aliases.get(name, name)
        entry = self.table.get(name)
        if entry is None:
            return self._fail(f"unknown command \\{words[0]}: try \\help")
        try:
            status = entry[0](words[1:])
        except KeyboardInterrupt:
            return Status.INTERRUPTED
        except OSError as exc:
            return self._fail(f"\\{name}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except Exception as exc:  # noqa: BLE001 - a failing catalog call must not end the shell
            self.runner.report_bug(exc)
            return Status.ERROR
        return status or Status.OK

    # -------------------------------------------------------------------------- helpers
    def _print(self, text: str = "") -> None:
        self.runner.out.write(text + "\n")
        self.runner.out.flush()

    def _fail(self, message: str) -> Status:
        self.runner.err.write(message + "\n")
        self.runner.err.flush()
        return Status.ERROR

    @property
    def session(self):
        return self.runner.session

    # ------------------------------------------------------------------------- commands
    def help(self, args: list[str]) -> None:
        fleet = ", edge ids and metadata keys" if self.session.federated else ""
        self._print(HELP.format(fleet=fleet))
        for name, (_, usage, text) in self.table.items():
            self._print(f"  \\{(name + ' ' + usage).strip():26} {text}")

    def functions(self, args: list[str]) -> Status | None:
        pattern = args[0] if args else None
        rows = [f for f in self.session.functions() if f["name"][:1].isalpha() and match_name(pattern, f["name"])]
        if not rows:
            return self._fail(f"no function matches '{pattern}'")
        width = min(60, max(len(f["signature"]) for f in rows))
        for f in sorted(rows, key=lambda f: f["name"]):
            doc = f.get("doc") or ""
            self._print(f"{f['signature']:{width}}  {doc}".rstrip())
        return None

    def describe(self, args: list[str]) -> Status | None:
        if not args:
            return self._fail("\\describe takes a name: \\describe winagg")
        name = args[0]
        sections = self.session.describe(name)
        if not sections:
            return self._fail(f"nothing is called '{name}' (not a function, type, table, model or signal)")
        for i, section in enumerate(sections):
            if i:
                self._print()
            self._print(f"{name}: {section.title}")
            for line in section.lines:
                self._print(f"  {line}")
        return None

    def _names(self, names: list[str], empty: str) -> None:
        if not names:
            self._print(empty)
        for name in names:
            self._print(name)

    def signals(self, args: list[str]) -> None:
        self._names(self.session.signals(), "(no signals: add them with Engine.add_signal, or run on an edge)")

    def models(self, args: list[str]) -> None:
        self._names(self.session.models(), "(no models: create model NAME from 'file.tflite';)")

    def flows(self, args: list[str]) -> None:
        self._names(self.session.flows(), "(no flows: publish(stream, 'name') makes one)")

    def edges(self, args: list[str]) -> Status | None:
        if not self.session.federated:
            return self._fail("\\edges needs a federation: streamql shell --federation URL --token TOKEN")
        pattern = args[0] if args else None
        edges = [e for e in self.session.edges() if match_name(pattern, str(e.get("id", "")))]
        if not edges:
            self._print("(no edges)")
            return None
        keys = []
        for edge in edges:
            for key in edge:
                if key not in keys and key != "id" and not isinstance(edge[key], (dict, list)):
                    keys.append(key)
        for edge in edges:
            metadata = edge.get("metadata") if isinstance(edge.get("metadata"), dict) else {}
            for key in metadata:
                if key not in keys:
                    keys.append(key)
        printer = make_printer(self.runner.output, self.runner.out)
        printer.begin(["id", *keys], [], "bag")
        readable = self.runner.output == "table"
        for edge in edges:
            metadata = edge.get("metadata") if isinstance(edge.get("metadata"), dict) else {}
            values = [edge.get(k, metadata.get(k)) for k in keys]
            if readable:   # epoch seconds as local time for people; CSV and JSON keep the numbers
                values = [_clock(v) if k in _TIMES else v for k, v in zip(keys, values)]
            printer.row(tuple([edge.get("id")] + values))
        printer.end()
        return None

    def timing(self, args: list[str]) -> Status | None:
        if args and args[0].lower() not in ("on", "off"):
            return self._fail("\\timing takes on or off")
        self.runner.timing = (args[0].lower() == "on") if args else not self.runner.timing
        self.runner.info(f"Timing is {'on' if self.runner.timing else 'off'}.")
        return None

    def output(self, args: list[str]) -> Status | None:
        if not args:
            self._print(f"Output is {self.runner.output} (choose from {', '.join(FORMATS)}).")
            return None
        kind = args[0].lower()
        if kind not in FORMATS:
            return self._fail(f"\\output takes {', '.join(FORMATS)}, not '{args[0]}'")
        self.runner.set_output(kind)
        self.runner.info(f"Output is {kind}.")
        return None

    def read(self, args: list[str]) -> Status:
        if not args:
            return self._fail("\\read takes a file name")
        path = Path(args[0]).expanduser()
        text = path.read_text(encoding="utf-8")
        return self.runner.run_text(text, origin=str(path))

    def quit(self, args: list[str]) -> Status:
        return Status.QUIT


_TIMES = {"created", "last_seen", "connected_at", "disconnected_at"}


def _clock(value):
    """Epoch seconds as `YYYY-MM-DD HH:MM:SS` local time; anything else unchanged."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return value
