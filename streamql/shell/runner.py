"""Running input: statements and meta-commands, results printed as they arrive.

The REPL, `\\read FILE`, `streamql run FILE` and a piped script all go through `Runner.run_text`,
so they print alike. A statement runs in a worker thread that iterates its result and hands rows
over a bounded buffer; the main thread prints them and stays free to take Ctrl-C, which closes the
result (the engine cancels the query at its next check) and returns to the caller.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, TextIO

from ..errors import QueryCancelled, QueryError, Span
from ..syntax import parse
from .commands import Commands
from .formatting import FORMATS, as_tuple, make_printer
from .lexer import Piece, scan, split
from .plots import LiveArea, LivePlot, make_chart, plot_kind
from .progress import is_complete, render_progress
from .status import Status

TICK = 0.05           # how often the main thread wakes while waiting for rows
CANCEL_GRACE = 2.0    # how long a cancelled query may take to stop before it is left behind


class Runner:
    """Runs statements on a session and prints what they give.

    `out` gets rows and messages, `err` errors (and, with CSV or JSON output, messages and
    timings, so `out` stays machine-readable). `live` redraws plots and progress in place
    (a terminal); `color` adds ANSI colours.
    """

    def __init__(self, session, out: TextIO | None = None, err: TextIO | None = None, *,
                 output: str = "table", timing: bool = False, live: bool | None = None,
                 color: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 plot_size: tuple[int, int] | None = None, redraw_interval: float = 0.1):
        self.session = session
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.output = output
        self.timing = timing
        tty = _isatty(self.out)
        self.live = tty if live is None else live
        self.color = tty if color is None else color
        self.clock = clock
        self.plot_size = plot_size
        self.redraw_interval = redraw_interval
        self.on_change: Callable[[], None] | None = None   # the completer refreshes its catalog
        self.commands = Commands(self)

    # --------------------------------------------------------------------------- input
    def run_text(self, text: str, origin: str | None = None) -> Status:
        """Run every piece of `text` in order; stop at the first error, an interrupt or `\\q`."""
        for piece in split(text):
            if piece.kind == "meta":
                status = self.commands.run(piece.text)
            else:
                status = self.run_statement(text, piece, origin)
            if status is not Status.OK:
                return status
        return Status.OK

    def run_statement(self, source: str, piece: Piece, origin: str | None = None) -> Status:
        chunk = piece.text
        if all(token.trivia or token.type == "SEMICOLON" for token in scan(chunk)):
            return Status.OK  # an empty statement: a lone ';'
        try:
            script = parse(chunk)
        except QueryError as exc:
            self.report(exc, source, piece, origin)
            return Status.ERROR
        if not len(script):
            return Status.OK
        statement = script[0]
        started = self.clock()
        try:
            status = self._execute(chunk, statement, source, piece, origin)
        finally:
            if self.on_change is not None:  # any statement may add names (a query can publish a flow)
                self.on_change()
        if self.timing and status is not Status.ERROR:
            self.info(f"Time: {(self.clock() - started) * 1000:.1f} ms")
        engine = getattr(self.session, "engine", None)
        if status is Status.OK and getattr(engine, "quit_requested", False):   # OSQL's `quit;`
            engine.quit_requested = False
            return Status.QUIT
        return status

    # ------------------------------------------------------------------------ execution
    def _execute(self, chunk: str, statement, source: str, piece: Piece, origin: str | None) -> Status:
        job = Job(self.session.run, chunk)
        sink: Sink | None = None
        shown = 0    # status changes of a standing fleet stream printed so far
        try:
            for event, payload in job.events(TICK):
                shown = self._status_changes(job.result, shown)
                if event == "tick":
                    if sink is not None:
                        sink.tick()
                elif event == "row":
                    sink.row(payload)
                    if sink.finished:
                        job.cancel()
                        break
                elif event == "result":
                    sink = self._sink(payload, statement)
                elif event == "end":
                    break
                elif event == "error":
                    if sink is not None:
                        sink.end(interrupted=True)
                        sink = None
                    self.report(payload, source, piece, origin)
                    self.fleet_summary(job.result)
                    return Status.ERROR
                else:  # a bug
                    if sink is not None:
                        sink.end(interrupted=True)
                        sink = None
                    self.report_bug(*payload)
                    return Status.ERROR
            if sink is not None:
                sink.end()
            self.fleet_summary(job.result)
            return Status.OK
        except KeyboardInterrupt:
            return self._interrupted(job, sink)
        except QueryError as exc:  # raised while printing a row (a bad value): keep the session
            job.cancel()
            self.report(exc, source, piece, origin)
            return Status.ERROR
        except Exception as exc:  # noqa: BLE001 - a bug in printing must not end the shell
            job.cancel()
            self.report_bug(exc, traceback.format_exc())
            return Status.ERROR

    def _interrupted(self, job: "Job", sink: "Sink | None") -> Status:
        job.cancel()
        try:
            stopped = job.join(CANCEL_GRACE)
        except KeyboardInterrupt:
            stopped = False
        try:
            if sink is not None:
                sink.end(interrupted=True)
        except Exception:  # noqa: BLE001 - the last frame is a courtesy
            pass
        rows = sink.rows if sink is not None else 0
        note = "cancelled" if job.result is not None else "interrupted"
        if sink is not None and sink.counts_rows:
            note += f" after {rows} row{'' if rows == 1 else 's'}"
        if not stopped:
            note += " (the statement is still finishing in the background)"
        if self.live:
            self.out.write("\r\x1b[K")  # over the terminal's echoed ^C (and any half-printed row)
            self.out.flush()
        if isinstance(sink, ProgressSink):
            # only the watching stopped; the sink said so ("the rollout goes on")
            if not stopped:
                self.info("(the watching is still finishing in the background)", always_err=True)
            return Status.INTERRUPTED
        self.info(f"({note})", always_err=True)
        return Status.INTERRUPTED

    def _sink(self, result, statement) -> "Sink":
        kind = getattr(result, "kind", "bag")
        if kind == "deployment":
            return ProgressSink(self)
        if kind == "statement":
            return MessageSink(self, result)
        if kind == "explain":
            return LinesSink(self)
        columns = list(getattr(result, "columns", []) or ["value"])
        plot = plot_kind(getattr(statement, "directives", ()))
        if plot is not None and plot.startswith("unknown:"):
            self.info(f"unknown plot kind '{plot[8:]}': use Line, Bar, Scatter or Text plot; printing rows",
                      always_err=True)
            plot = None
        if plot is not None:
            return PlotSink(self, plot, columns)
        return RowSink(self, result, columns)

    # ---------------------------------------------------------------------------- fleets
    def fleet_summary(self, result) -> None:
        """After a statement on a federation, how every selected device fared:
        `58 answered · 2 offline (wl-0031, dt-0005) · 0 failed`."""
        status = getattr(result, "status", None)
        summary = getattr(status, "summary", None)
        if summary is None or not len(status) or getattr(result, "kind", None) == "deployment":
            return
        complete = getattr(status, "complete", True)
        self.info(self._dim(summary() + ("" if complete else " · partial answer")))

    def _status_changes(self, result, shown: int) -> int:
        """A standing fleet stream's devices coming and going, printed as they happen."""
        changes = getattr(result, "status_changes", None)
        if not changes or len(changes) <= shown:
            return shown
        for change in changes[shown:]:
            reason = f": {change['reason']}" if change.get("reason") else ""
            self.info(self._dim(f"-- {change['device']} {change['outcome']}{reason}"), always_err=self.live)
        return len(changes)

    def _dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.color else text

    # ---------------------------------------------------------------------------- output
    def info(self, text: str, always_err: bool = False) -> None:
        """A message for people: on `out` with a table, on `err` with CSV/JSON output."""
        stream = self.err if always_err or self.output != "table" else self.out
        stream.write(text + "\n")
        stream.flush()

    def report(self, exc: QueryError, source: str, piece: Piece | None = None, origin: str | None = None) -> None:
        """An error with its caret under the offending text of `source` (the whole input)."""
        if isinstance(exc, QueryCancelled):
            self.info("(cancelled)", always_err=True)
            return
        if piece is not None:
            relocate(exc, source, piece)
        prefix = f"{origin}: " if origin else ""
        self.err.write(prefix + str(exc) + "\n")
        self.err.flush()

    def report_bug(self, exc: BaseException, trace: str | None = None) -> None:
        self.err.write(f"internal error: {type(exc).__name__}: {exc} (a bug in StreamQL; the session goes on)\n")
        self.err.flush()

    def set_output(self, kind: str) -> None:
        if kind not in FORMATS:
            raise ValueError(kind)
        self.output = kind


def relocate(exc: QueryError, source: str, piece: Piece) -> None:
    """Make an error's position point into the whole input instead of its statement's text."""
    if exc.source is not None and exc.source not in (piece.text, source):
        return  # the error is about other text (a function body created earlier)
    if exc.source != source and exc.span is not None and piece.start:
        span = exc.span
        exc.span = Span.at(source, piece.start + span.start, max(1, span.end - span.start))
    exc.source = source


# ------------------------------------------------------------------------------ the worker
class Job:
    """One statement in a worker thread. Events: ('result', r), ('row', v)…, ('end', None), or
    ('error', QueryError) / ('bug', (exc, trace)).

    Rows pass through a deque (appending is cheap and thread-safe) with an Event that wakes the
    main thread when the deque fills from empty; the worker waits while `capacity` rows are
    unread, so a fast query cannot outrun the terminal by more than that."""

    def __init__(self, run: Callable[[str], Any], text: str, capacity: int = 10_000):
        self._run = run
        self._text = text
        self._items: deque = deque()
        self._capacity = capacity
        self._ready = threading.Event()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self.result = None
        self._thread = threading.Thread(target=self._work, daemon=True, name="streamql-shell-statement")
        self._thread.start()

    def _work(self) -> None:
        try:
            result = self._run(self._text)
            self.result = result
            if self._cancelled.is_set():
                _close(result)
                return
            self._put(("result", result))
            items, ready, cancelled, capacity = self._items, self._ready, self._cancelled, self._capacity
            for row in result:
                if cancelled.is_set():
                    break
                items.append(("row", row))
                if not ready.is_set():
                    ready.set()
                while len(items) > capacity and not cancelled.is_set():
                    time.sleep(0.001)
            self._put(("end", None))
        except QueryError as exc:
            self._put(("error", exc))
        except BaseException as exc:  # noqa: BLE001 - reported as a bug, the shell goes on
            self._put(("bug", (exc, traceback.format_exc())))
        finally:
            self._done.set()
            self._ready.set()

    def _put(self, item) -> None:
        self._items.append(item)
        self._ready.set()

    def events(self, tick: float):
        """Events as they come, with ('tick', None) when nothing came for `tick` seconds."""
        items, ready = self._items, self._ready
        while True:
            if not items:
                if self._done.is_set():
                    if not items:
                        return
                else:
                    ready.wait(tick)
                    ready.clear()
                    if not items:
                        yield ("tick", None)
                        continue
            while items:
                yield items.popleft()

    def cancel(self) -> None:
        self._cancelled.set()
        if self.result is not None:
            _close(self.result)

    def join(self, timeout: float) -> bool:
        return self._done.wait(timeout)


def _close(result) -> None:
    try:
        result.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001
        return False


# ------------------------------------------------------------------------------- the sinks
class Sink:
    """Where one result's rows go."""

    counts_rows = True
    finished = False

    def __init__(self, runner: Runner):
        self.runner = runner
        self.rows = 0

    def row(self, value) -> None:
        self.rows += 1

    def tick(self) -> None:
        pass

    def end(self, interrupted: bool = False) -> None:
        pass


class RowSink(Sink):
    def __init__(self, runner: Runner, result, columns: list[str]):
        super().__init__(runner)
        self.width = len(columns)
        self.printer = make_printer(runner.output, runner.out)
        self.printer.begin(columns, list(getattr(result, "types", []) or []), getattr(result, "kind", "bag"))

    def row(self, value) -> None:
        super().row(value)
        self.printer.row(as_tuple(value, self.width))

    def tick(self) -> None:
        self.printer.tick()

    def end(self, interrupted: bool = False) -> None:
        self.printer.end(interrupted)


class MessageSink(Sink):
    counts_rows = False

    def __init__(self, runner: Runner, result):
        super().__init__(runner)
        message = getattr(result, "message", None)
        if message:
            runner.info(str(message))


class LinesSink(Sink):
    """EXPLAIN: the plan's lines as they are."""

    def row(self, value) -> None:
        super().row(value)
        self.runner.out.write(f"{value}\n")
        self.runner.out.flush()


class PlotSink(Sink):
    def __init__(self, runner: Runner, kind: str, columns: list[str]):
        super().__init__(runner)
        width, height = runner.plot_size or (None, None)
        chart = make_chart(kind, columns, width, height)
        area = LiveArea(runner.out, runner.live, runner.redraw_interval, runner.clock)
        self.plot = LivePlot(chart, area, color=runner.color)
        self.width = len(columns)

    def row(self, value) -> None:
        super().row(value)
        self.plot.add(as_tuple(value, self.width))

    def tick(self) -> None:
        self.plot.tick()

    def end(self, interrupted: bool = False) -> None:
        self.plot.finish()


class ProgressSink(Sink):
    """Deployment progress: redraw the bar at each record until the rollout completes."""

    counts_rows = False

    def __init__(self, runner: Runner):
        super().__init__(runner)
        self.area = LiveArea(runner.out, runner.live, runner.redraw_interval, runner.clock)
        self.record: dict | None = None
        self._dirty = False

    def _lines(self) -> list[str]:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        return render_progress(self.record or {}, width=width, color=self.runner.color)

    def row(self, value) -> None:
        super().row(value)
        self.record = value
        self._dirty = True
        if is_complete(value):
            self.finished = True
        self.tick()

    def tick(self) -> None:
        if self._dirty and self.area.live and self.area.due():
            self.area.draw(self._lines())
            self._dirty = False

    def end(self, interrupted: bool = False) -> None:
        if self.record is None:
            self.runner.info("(no progress reported)")
            return
        self.area.finish(self._lines())
        if interrupted and not is_complete(self.record):
            self.runner.info("(stopped watching: the rollout goes on on the federation)", always_err=True)
