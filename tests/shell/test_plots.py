"""Terminal charts and their live redraw."""
from __future__ import annotations

import io

import numpy as np
import pytest

from streamql.shell.plots import (BarChart, BrailleCanvas, LineChart, LiveArea, LivePlot, ScatterChart, TextChart,
                                  numbers, plot_kind)
from streamql.shell.runner import Runner
from streamql.shell.session import LocalSession
from streamql.values import Time, Timeval

from shell_fakes import TtyStringIO


def braille_dots(lines):
    return sum(bin(ord(ch) - 0x2800).count("1") for line in lines for ch in line if "\u2800" <= ch <= "\u28ff")


@pytest.mark.parametrize("directive, kind", [
    ("plot: Line plot", "line"), ("plot: bar plot", "bar"), ("plot:Scatter", "scatter"), ("plot: Text", "text"),
    ("plot: Pie plot", "unknown:Pie"), ("note: something", None),
])
def test_plot_kinds(directive, kind):
    assert plot_kind((directive,)) == kind


def test_numbers():
    assert numbers(3) == 3.0 and numbers(True) == 1.0 and numbers("x") is None and numbers(float("nan")) is None
    assert numbers(Timeval(Time(0), 2)) == 2.0
    assert list(numbers([1, 2])) == [1.0, 2.0]


def test_braille_canvas():
    canvas = BrailleCanvas(2, 1)
    canvas.dot(0, 0)
    canvas.dot(3, 3)
    assert canvas.lines() == ["\u2801\u2880"]
    canvas = BrailleCanvas(4, 2)
    canvas.line(0, 0, 7, 7)
    assert braille_dots(canvas.lines()) == 8


def test_line_chart_scrolls_scalars_and_replaces_vectors():
    chart = LineChart(["a", "b"], width=40, height=10)
    for i in range(500):
        chart.add((float(i), np.sin(np.arange(16) + i)))
    lines = chart.render()
    assert len(chart.history[0]) == chart.capacity   # only the newest samples are kept
    assert chart.history[0][-1] == 499.0
    assert len(chart.vectors[1]) == 16
    assert "500 rows" in lines[-1] and "[1] a" in lines[-1] and "[2] b" in lines[-1]
    assert braille_dots(lines) > 40
    assert all(len(line) <= 40 for line in lines[:-1])


def test_bar_chart_of_columns_of_a_vector_and_of_labels():
    chart = BarChart(["a", "b"], width=40, height=10)
    chart.add((1.0, 4.0))
    lines = chart.render()
    assert lines[0].startswith("a │██") and lines[1].startswith("b │████████")
    labelled = BarChart(["region", "n"], width=40, height=10)
    for row in [("US", 3), ("EU", 1), ("US", 5)]:
        labelled.add(row)
    assert [line.split("│")[0].strip() for line in labelled.render()[:2]] == ["US", "EU"]
    spectrum = BarChart(["fft"], width=40, height=10)
    spectrum.add((np.abs(np.sin(np.arange(200) / 10)),))
    assert any("█" in line for line in spectrum.render())


def test_scatter_and_text():
    scatter = ScatterChart(["x", "y"], width=40, height=10)
    for i in range(50):
        scatter.add((i, i * i))
    assert braille_dots(scatter.render()) >= 40
    text = TextChart(["temperature", "ok"], width=40)
    text.add((21.5, True))
    assert text.render() == ["temperature : 21.5", "         ok : true", "              (1 row)"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_live_redraw_in_place_at_a_bounded_rate():
    out, clock = TtyStringIO(), FakeClock()
    area = LiveArea(out, live=True, min_interval=0.1, clock=clock)
    plot = LivePlot(LineChart(["x"], width=40, height=8), area)
    for i in range(100):           # 100 rows in 0.99 s of fake time: at most ~10 frames
        clock.now = i * 0.01
        plot.add((float(i),))
    plot.finish()
    assert 9 <= area.frames <= 12
    text = out.getvalue()
    assert text.count("\x1b[8F\x1b[J") == area.frames - 1   # each redraw moves up over the last frame
    assert "100 rows" in text.rsplit("\x1b[J", 1)[1]


def test_not_a_terminal_prints_only_the_last_frame():
    out = io.StringIO()
    plot = LivePlot(LineChart(["x"], width=40, height=8), LiveArea(out, live=False))
    for i in range(100):
        plot.add((float(i),))
    plot.finish()
    assert "\x1b" not in out.getvalue()
    assert out.getvalue().count("rows") == 1


def test_a_plotted_stream_updates_while_it_runs(engine):
    out = TtyStringIO()
    runner = Runner(LocalSession(engine), out, io.StringIO(), plot_size=(50, 10), redraw_interval=0.05)
    runner.run_text("//plot: Line plot\nselect stream of x, x * 2 from Real x where x in timeout(heartbeat(0.01), 0.6);")
    frames = out.getvalue().count("\x1b[J")
    assert frames >= 3               # redrawn as rows arrived, not only at the end
    assert "\x1b[32m" in out.getvalue()   # coloured series on a terminal
