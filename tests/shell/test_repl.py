"""The real shell, driven through prompt_toolkit's pipe input."""
from __future__ import annotations

import json


from streamql.shell.session import LocalSession

ENTER = "\r"


def test_multiline_input_runs_at_the_closing_semicolon(drive):
    t = drive("select x * 10\r from Integer x\r where x in iota(1, 3)\r;\r")
    assert t.status == 0
    assert t.out.split() == ["x", "*", "10", "--------", "10", "20", "30", "(3", "rows)"]
    assert t.err == ""


def test_semicolons_in_strings_and_comments_do_not_submit(drive):
    t = drive("select 'a;b' -- not yet;\r/* nor ; here */ as s;\r")
    assert " a;b" in t.out and "(1 row)" in t.out
    assert t.out.count("(1 row)") == 1


def test_several_statements_in_one_input_run_in_order(drive):
    t = drive("create function twice(Number x) -> Number as x * 2; select twice(21);\r")
    assert "function twice created" in t.out
    assert " 42" in t.out


def test_history_persists_across_runs(drive, history_file):
    drive("select 1;\r")
    drive("select 'second';\r")
    assert "select 1;" in history_file.read_text()
    # Up arrow recalls the previous run's statement in a new shell
    t = drive("\x1b[A" + ENTER)
    assert "second" in t.out


def test_ctrl_c_at_the_prompt_clears_the_input_and_keeps_going(drive):
    t = drive("select 'dropped'\x03select 'kept';\r")
    assert "kept" in t.out and "dropped" not in t.out


def test_errors_show_a_caret_and_never_a_traceback(drive):
    t = drive("select 1;\rselect x from Real x\r where x in iota(1, 2) and y > 2;\rselect 'after';\r")
    assert "NameError at line 2, column 28: unknown variable y" in t.err
    assert "  2 |  where x in iota(1, 2) and y > 2;\n    |                            ^" in t.err
    assert "Traceback" not in t.err + t.out
    assert "after" in t.out


def test_a_parse_error_points_into_the_second_statement(drive):
    t = drive("select 1; select 1 +;\r")
    assert "ParseError at line 1, column 21" in t.err
    assert "|                     ^" in t.err


class BrokenSession(LocalSession):
    """A session with a bug: run raises something that is not a QueryError."""

    def run(self, text):
        if "boom" in text:
            raise ZeroDivisionError("division by zero")
        return super().run(text)


def test_a_bug_prints_a_short_message_and_the_session_goes_on(drive, engine):
    t = drive("select 'boom';\rselect 'fine';\r", session=BrokenSession(engine))
    assert "internal error: ZeroDivisionError: division by zero" in t.err
    assert "Traceback" not in t.err
    assert "fine" in t.out


def test_output_formats(drive):
    t = drive("\\output csv\rselect x, 'a,b' as s, [1, 2] as v from Integer x where x in iota(1, 2);\r"
              "\\output json\rselect x as n, null as z from Integer x where x in iota(1, 1);\r"
              "\\output\r")
    lines = t.out.splitlines()
    assert lines[0:3] == ["x,s,v", '1,"a,b","[1,2]"', '2,"a,b","[1,2]"']
    assert json.loads(lines[3]) == {"n": 1, "z": None}
    assert "Output is json" in t.out
    assert "Output is csv." in t.err  # with CSV/JSON, messages stay off standard output


def test_timing(drive):
    t = drive("\\timing\rselect 1;\r\\timing off\rselect 2;\r")
    assert "Timing is on." in t.out and "Timing is off." in t.out
    assert t.out.count("Time: ") == 1


def test_meta_commands(drive, engine, tmp_path):
    engine.add_signal("vibration", [0.1, 0.2, 0.3])
    script = tmp_path / "setup.sql"
    script.write_text("create type Truck properties (name Charstring key, payload Real);\n"
                      "create table Reading(id Integer, value Real, unique(id));\n"
                      "create model centroids as kmeans([[0.1, 0.2], [0.9, 0.8]]);\n")
    t = drive(f"\\read {script}\r\\help\r\\functions winagg\r\\describe winagg\r\\describe Truck\r"
              "\\describe Reading\r\\describe centroids\r\\describe Integer\r\\signals\r\\models\r"
              "\\edges\r\\nonsense\r\\describe nothing_here\r")
    out, err = t.out, t.err
    assert "type Truck created" in out and "table Reading created" in out
    assert "\\functions [pattern]" in out and "\\describe NAME" in out
    assert "winagg(Stream of T s, Integer size, Integer stride) -> Stream of Vector of T" in out
    assert "Count windows" in out
    assert "name(Truck" in out and "payload(Truck" in out and "supertypes: Object" in out
    assert "id Integer" in out and "value Real" in out
    assert "kind: kmeans" in out and "version: 1" in out
    assert "supertypes: Number, Object" in out
    assert "vibration" in out and "centroids" in out
    assert "\\edges needs a federation" in err
    assert "unknown command \\nonsense" in err
    assert "nothing is called 'nothing_here'" in err


def test_quit(drive):
    t = drive("\\q\rselect 'not run';\r", eof=False)
    assert t.status == 0 and "not run" not in t.out


def test_tab_completes_in_the_real_shell(drive):
    t = drive(["select sqr", "\t", "(16);\r"])
    assert "sqrt(16)" in t.out and " 4.0" in t.out


def test_plot_directive_draws_a_chart(drive):
    t = drive("//plot: Line plot\rselect stream of sin(x / 5.0) from Integer x where x in siota(1, 60);\r",
              plot_size=(60, 12))
    lines = t.out.splitlines()
    braille = [line for line in lines if any("\u2801" <= ch <= "\u28ff" for ch in line)]
    assert len(braille) >= 8
    assert "60 rows" in t.out
    assert "┤" in t.out and "└" in t.out
