"""Printing as rows arrive, and Ctrl-C on a running query (in-process)."""
from __future__ import annotations

import _thread
import io
import threading
import time

import numpy as np

from streamql.shell.formatting import CsvPrinter, JsonPrinter, TablePrinter, cell_text
from streamql.shell.runner import Runner, Status
from streamql.shell.session import LocalSession
from streamql.values import Time, Timeval


class GatedResult:
    """A stream whose second row waits for a gate: shows whether the first row is printed at once."""

    kind = "stream"
    columns = ["x"]
    types = ["Integer"]
    message = None

    def __init__(self):
        self.gate = threading.Event()
        self.closed = threading.Event()

    def __iter__(self):
        yield 1
        self.gate.wait(10)
        yield 2

    def close(self):
        self.closed.set()
        self.gate.set()


class GatedSession(LocalSession):
    def __init__(self, engine, result):
        super().__init__(engine)
        self.result = result

    def run(self, text):
        return self.result if "gated" in text else super().run(text)


def run_in_thread(runner, text):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("status", runner.run_text(text)), daemon=True)
    thread.start()
    return thread, box


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_continuous_query_prints_each_row_at_once(engine):
    result = GatedResult()
    out = io.StringIO()
    runner = Runner(GatedSession(engine, result), out, io.StringIO())
    thread, box = run_in_thread(runner, "select 'gated';")
    assert wait_for(lambda: "      1" in out.getvalue())   # printed while the second row is still waiting
    assert " x\n" in out.getvalue()
    result.gate.set()
    thread.join(5)
    assert box["status"] is Status.OK
    assert out.getvalue().endswith("      2\n(2 rows)\n")


def test_a_bag_is_aligned_after_a_moment_even_if_it_never_ends_quickly(engine):
    result = GatedResult()
    result.kind = "bag"
    out = io.StringIO()
    runner = Runner(GatedSession(engine, result), out, io.StringIO())
    thread, box = run_in_thread(runner, "select 'gated';")
    assert wait_for(lambda: " 1" in out.getvalue())   # buffered at most ~0.5 s
    result.gate.set()
    thread.join(5)
    assert out.getvalue() == " x\n---\n 1\n 2\n(2 rows)\n"


def test_ctrl_c_cancels_an_endless_query_and_the_session_goes_on(engine):
    out, err = io.StringIO(), io.StringIO()
    runner = Runner(LocalSession(engine), out, err)
    timer = threading.Timer(0.4, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    status = runner.run_text("select stream of x from Real x where x in heartbeat(0.02);")
    assert status is Status.INTERRUPTED
    assert time.monotonic() - started < 3
    assert "(cancelled after" in err.getvalue()
    assert "still finishing" not in err.getvalue()   # the query itself stopped, not just the printing
    assert out.getvalue().count("\n") > 3
    assert runner.run_text("select 'alive';") is Status.OK
    assert "alive" in out.getvalue()


def test_values_as_cells():
    assert cell_text("plain") == "plain"
    assert cell_text(None) == "null" and cell_text(True) == "true"
    assert cell_text(np.arange(3)) == "[0, 1, 2]"
    assert cell_text(np.arange(100)) == "[0, 1, 2, 3, 4, 5, …, 98, 99] (100)"
    assert cell_text(np.arange(100), full=True).count(",") == 99
    assert cell_text(Time(0.0)) == "1970-01-01T00:00:00Z"
    assert cell_text(Timeval(Time(0.0), 2.5)) == "1970-01-01T00:00:00Z 2.5"
    assert len(cell_text("x" * 500)) == 60


def test_printers():
    out = io.StringIO()
    table = TablePrinter(out)
    table.begin(["name", "n"], ["Charstring", "Integer"], "bag")
    table.row(("a", 1))
    table.row(("long name", 100))
    table.end()
    assert out.getvalue() == ("    name   |  n\n-----------+-----\n a         |   1\n long name | 100\n(2 rows)\n")

    out = io.StringIO()
    csv = CsvPrinter(out)
    csv.begin(["s", "v", "t"], [], "stream")
    csv.row(('say "hi"', np.array([1.5, 2.0]), None))
    assert out.getvalue() == 's,v,t\n"say ""hi""","[1.5,2.0]",\n'

    out = io.StringIO()
    json_lines = JsonPrinter(out)
    json_lines.begin(["x", "x"], [], "bag")
    json_lines.row((float("nan"), Time(0.0)))
    assert out.getvalue() == '{"x": null, "x_2": "1970-01-01T00:00:00Z"}\n'


def test_statement_messages_and_explain(engine):
    out = io.StringIO()
    runner = Runner(LocalSession(engine), out, io.StringIO())
    assert runner.run_text("create type T; explain select x from Integer x where x in iota(1, 3);") is Status.OK
    assert out.getvalue().startswith("type T created\nbag query")


def test_a_run_time_error_points_into_the_whole_input(engine):
    out, err = io.StringIO(), io.StringIO()
    runner = Runner(LocalSession(engine), out, err)
    assert runner.run_text("select 1;\nselect [1, 2][5];\nselect 'not run';") is Status.ERROR
    assert err.getvalue() == ("RuntimeError at line 2, column 8: index 5 is out of range 1..2\n"
                              "  2 | select [1, 2][5];\n"
                              "    |        ^^^^^^^^^\n")
    assert "not run" not in out.getvalue()
