"""Terminal charts for `//plot: Line plot` (Bar, Scatter, Text) before a query.

Charts take rows as they arrive and render to lines of text: line and scatter plots on a braille
canvas (2×4 dots per character), bar charts with eighth blocks, a text panel of the latest row.
A `LiveArea` redraws a chart in place on a terminal at a bounded rate; elsewhere (a pipe, a
file) it prints the last frame once, when the query ends.

What is plotted: numbers (Integer, Real, Boolean, the value of a Timeval) and numeric vectors.
A scalar column is a series over time (the latest samples scroll); a vector column is a series
over its index, replaced by each new row. Several columns give several series.
"""
from __future__ import annotations

import math
import re
import shutil
import time
from collections import deque
from typing import Any, Callable, TextIO

import numpy as np

from ..values import Time, Timeval
from .formatting import cell_text

KINDS = ("line", "bar", "scatter", "text")
_DIRECTIVE = re.compile(r"^plot\s*:\s*(\w+)", re.IGNORECASE)
COLORS = (32, 36, 33, 35, 34, 31, 92, 96)   # ANSI foreground per series
BRAILLE_BASE = 0x2800
# dot bit for (x in 0..1, y in 0..3) inside one braille cell
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
EIGHTHS = " ▏▎▍▌▋▊▉█"
VERTICAL = " ▁▂▃▄▅▆▇█"


def plot_kind(directives) -> str | None:
    """'line' for `//plot: Line plot` (also 'Line', 'line chart'), None when there is no plot."""
    for directive in directives or ():
        match = _DIRECTIVE.match(directive.strip())
        if match:
            word = match.group(1).lower()
            for kind in KINDS:
                if word.startswith(kind):
                    return kind
            return "unknown:" + match.group(1)
    return None


def numbers(value: Any) -> float | np.ndarray | None:
    """A plottable view of a value: a float, a 1-D float array, or None."""
    if isinstance(value, Timeval):
        return numbers(value.value)
    if isinstance(value, Time):
        return float(value.seconds)
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (np.ndarray, list, tuple)):
        try:
            array = np.asarray(value, dtype=float).ravel()
        except (TypeError, ValueError):
            return None
        return array if array.size else None
    return None


def _colored(text: str, series: int | None, color: bool) -> str:
    if not color or series is None:
        return text
    return f"\x1b[{COLORS[series % len(COLORS)]}m{text}\x1b[0m"


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


def _label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


# ------------------------------------------------------------------------------ the canvas
class BrailleCanvas:
    """A grid of braille characters addressed by dots: (0, 0) is the top-left dot."""

    def __init__(self, columns: int, rows: int):
        self.columns, self.rows = max(1, columns), max(1, rows)
        self.width, self.height = self.columns * 2, self.rows * 4
        self._bits = [[0] * self.columns for _ in range(self.rows)]
        self._series: list[list[int | None]] = [[None] * self.columns for _ in range(self.rows)]

    def dot(self, x: int, y: int, series: int = 0) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            row, column = y // 4, x // 2
            self._bits[row][column] |= _DOTS[x % 2][y % 4]
            self._series[row][column] = series

    def line(self, x0: int, y0: int, x1: int, y1: int, series: int = 0) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error = dx + dy
        while True:
            self.dot(x0, y0, series)
            if x0 == x1 and y0 == y1:
                return
            twice = 2 * error
            if twice >= dy:
                error += dy
                x0 += sx
            if twice <= dx:
                error += dx
                y0 += sy

    def lines(self, color: bool = False) -> list[str]:
        out = []
        for bits, series in zip(self._bits, self._series):
            # one colour escape per run of cells of the same series, not one per cell
            runs: list[tuple[int | None, list[str]]] = []
            for b, s in zip(bits, series):
                owner = s if b else None
                if runs and runs[-1][0] == owner:
                    runs[-1][1].append(chr(BRAILLE_BASE + b))
                else:
                    runs.append((owner, [chr(BRAILLE_BASE + b)]))
            out.append("".join(_colored("".join(chars), owner, color) for owner, chars in runs))
        return out


def _framed(canvas_lines: list[str], low: float, high: float, footer: str, legend: str) -> list[str]:
    """Y labels at the top, middle and bottom of a canvas, an axis, the footer and a legend."""
    labels = {0: _label(high), len(canvas_lines) - 1: _label(low)}
    if len(canvas_lines) >= 5:
        middle = (low + high) / 2
        labels[(len(canvas_lines) - 1) // 2] = _label(0.0 if abs(middle) < (high - low) * 1e-6 else middle)
    gutter = max(len(t) for t in labels.values())
    out = []
    for i, text in enumerate(canvas_lines):
        label = labels.get(i)
        out.append(f"{label.rjust(gutter)} ┤{text}" if label is not None else f"{' ' * gutter} │{text}")
    out.append(" " * gutter + " └" + "─" * max(0, _visible_len(canvas_lines[0]) if canvas_lines else 0))
    out.append(" " * (gutter + 2) + footer + (("   " + legend) if legend else ""))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def _legend(names: list[str], color: bool) -> str:
    if len(names) < 2:
        return ""
    return "  ".join(_colored("━━", i, color) + " " + name if color else f"[{i + 1}] {name}"
                     for i, name in enumerate(names))


def _range(values: list[np.ndarray]) -> tuple[float, float]:
    finite = [v[np.isfinite(v)] for v in values if v.size]
    finite = [v for v in finite if v.size]
    if not finite:
        return 0.0, 1.0
    low = float(min(v.min() for v in finite))
    high = float(max(v.max() for v in finite))
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


# ------------------------------------------------------------------------------ the charts
class Chart:
    """Rows in, text out. `width` and `height` are in characters for the whole chart."""

    def __init__(self, columns: list[str], width: int = 80, height: int = 16):
        self.columns = list(columns)
        self.width = max(20, width)
        self.height = max(4, height)
        self.rows = 0

    def add(self, values: tuple) -> None:
        self.rows += 1

    def render(self, color: bool = False) -> list[str]:
        raise NotImplementedError

    def _canvas_size(self) -> tuple[int, int]:
        return self.width - 12, self.height - 2


class LineChart(Chart):
    def __init__(self, columns, width=80, height=16):
        super().__init__(columns, width, height)
        columns_wide, _ = self._canvas_size()
        self.capacity = columns_wide * 2
        self.history = [deque(maxlen=self.capacity) for _ in self.columns]
        self.vectors: list[np.ndarray | None] = [None] * len(self.columns)

    def add(self, values: tuple) -> None:
        super().add(values)
        for i, value in enumerate(values[:len(self.columns)]):
            number = numbers(value)
            if isinstance(number, np.ndarray):
                self.vectors[i] = number
            elif number is not None or self.history[i]:
                self.history[i].append(np.nan if number is None else number)

    def series(self) -> list[tuple[str, np.ndarray, bool]]:
        """(name, values, scrolls) per plotted series."""
        out = []
        for name, history, vector in zip(self.columns, self.history, self.vectors):
            if vector is not None:
                out.append((name, vector, False))
            elif history:
                out.append((name, np.array(history, dtype=float), True))
        return out

    def render(self, color: bool = False) -> list[str]:
        columns, rows = self._canvas_size()
        canvas = BrailleCanvas(columns, rows)
        series = self.series()
        low, high = _range([values for _, values, _ in series])
        scale = (canvas.height - 1) / (high - low)
        for index, (_, values, scrolls) in enumerate(series):
            n = len(values)
            if scrolls:
                xs = np.arange(n)  # one dot column per sample, the newest at the right once full
            else:
                xs = np.round(np.arange(n) * ((canvas.width - 1) / max(1, n - 1))).astype(int)
            previous = None
            for x, y in zip(xs, values):
                if not math.isfinite(y):
                    previous = None
                    continue
                point = (int(x), int(round((high - y) * scale)))
                if previous is not None:
                    canvas.line(*previous, *point, series=index)
                else:
                    canvas.dot(*point, series=index)
                previous = point
        latest = ", ".join(f"{name}={_label(float(v[-1]))}" for name, v, s in series if s and v.size
                           and math.isfinite(v[-1]))
        footer = _rows(self.rows) + (f", latest {latest}" if latest else "")
        return _framed(canvas.lines(color), low, high, footer, _legend([n for n, _, _ in series], color))


class ScatterChart(Chart):
    """Points (x, y): two numeric columns, a 2-vector, or x = row number for one column;
    with more columns the first is x and each other is a series."""

    def __init__(self, columns, width=80, height=16, capacity: int = 4000):
        super().__init__(columns, width, height)
        self.points: deque[tuple[int, float, float]] = deque(maxlen=capacity)
        self.names: list[str] = []

    def add(self, values: tuple) -> None:
        super().add(values)
        nums = [numbers(v) for v in values]
        if len(nums) == 1:
            value = nums[0]
            if isinstance(value, np.ndarray) and value.size == 2:
                self._point(0, self.columns[0], value[0], value[1])
            elif isinstance(value, np.ndarray):
                for x, y in enumerate(value):
                    self._point(0, self.columns[0], x, y)
            elif value is not None:
                self._point(0, self.columns[0], self.rows, value)
            return
        x = nums[0]
        if isinstance(x, np.ndarray) or x is None:
            return
        for i, y in enumerate(nums[1:]):
            if y is not None and not isinstance(y, np.ndarray):
                self._point(i, self.columns[i + 1], x, y)

    def _point(self, series: int, name: str, x: float, y: float) -> None:
        if math.isfinite(x) and math.isfinite(y):
            while len(self.names) <= series:
                self.names.append(name)
            self.points.append((series, float(x), float(y)))

    def render(self, color: bool = False) -> list[str]:
        columns, rows = self._canvas_size()
        canvas = BrailleCanvas(columns, rows)
        if self.points:
            xs = np.array([p[1] for p in self.points])
            ys = np.array([p[2] for p in self.points])
        else:
            xs = ys = np.array([])
        x_low, x_high = _range([xs])
        low, high = _range([ys])
        for series, x, y in self.points:
            canvas.dot(int(round((x - x_low) / (x_high - x_low) * (canvas.width - 1))),
                       int(round((high - y) / (high - low) * (canvas.height - 1))), series)
        footer = f"{len(self.points)} points, x {_label(x_low)} … {_label(x_high)}"
        return _framed(canvas.lines(color), low, high, footer, _legend(self.names, color))


class BarChart(Chart):
    """Bars of the latest row: a vector's elements, or one bar per numeric column; rows of
    (label, number) keep one bar per label. Up to `height` bars run across with labels; a long
    vector draws as columns instead (a spectrum, a window)."""

    def __init__(self, columns, width=80, height=16):
        super().__init__(columns, width, height)
        self.labels: list[str] = []
        self.values: list[float] = []
        self._by_label: dict[str, float] = {}

    def add(self, values: tuple) -> None:
        super().add(values)
        nums = [numbers(v) for v in values]
        if len(values) >= 2 and isinstance(values[0], str) and isinstance(nums[1], float):
            self._by_label[values[0]] = nums[1]
            self.labels, self.values = list(self._by_label), list(self._by_label.values())
        elif len(nums) == 1 and isinstance(nums[0], np.ndarray):
            self.values = [float(v) for v in nums[0]]
            self.labels = [str(i + 1) for i in range(len(self.values))]
        else:
            pairs = [(c, n) for c, n in zip(self.columns, nums) if isinstance(n, float)]
            self.labels = [c for c, _ in pairs]
            self.values = [n for _, n in pairs]

    def render(self, color: bool = False) -> list[str]:
        if not self.values:
            return [f"(no numbers to plot after {self.rows} rows)"]
        if len(self.values) > self.height - 1:
            return self._columns(color)
        gutter = min(20, max(len(label) for label in self.labels))
        numbers_width = max(len(_label(v)) for v in self.values)
        room = max(4, self.width - gutter - numbers_width - 4)
        high = max(max(self.values), 0.0)
        low = min(min(self.values), 0.0)
        span = (high - low) or 1.0
        out = []
        for i, (label, value) in enumerate(zip(self.labels, self.values)):
            eighths = int(round(abs(value) / span * room * 8)) if math.isfinite(value) else 0
            bar = "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")
            out.append(f"{label[:gutter].rjust(gutter)} │{_colored(bar, i if len(self.columns) > 1 else 0, color)}"
                       f" {_label(value)}")
        out.append(" " * gutter + f"   {_rows(self.rows)}")
        return out

    def _columns(self, color: bool) -> list[str]:
        columns, rows = self._canvas_size()
        values = np.array(self.values, dtype=float)
        if values.size > columns:  # keep peaks: the max of each group of neighbouring bars
            edges = np.linspace(0, values.size, columns + 1).astype(int)
            values = np.array([values[a:b].max() for a, b in zip(edges[:-1], edges[1:]) if b > a])
        low, high = min(0.0, float(np.nanmin(values))), max(0.0, float(np.nanmax(values)))
        span = (high - low) or 1.0
        heights = np.round((values - low) / span * rows * 8).astype(int)
        heights = np.repeat(heights, max(1, min(4, columns // max(1, len(heights)))))  # few bars: wider
        canvas = []
        for row in range(rows):
            floor = (rows - 1 - row) * 8
            cells = "".join(VERTICAL[min(8, max(0, h - floor))] for h in heights)
            canvas.append(_colored(cells, 0, color))
        return _framed(canvas, low, high, f"{len(self.values)} bars, {_rows(self.rows)}", "")


class TextChart(Chart):
    """The latest row, one column per line, with the row count."""

    def __init__(self, columns, width=80, height=16):
        super().__init__(columns, width, height)
        self.latest: tuple = ()

    def add(self, values: tuple) -> None:
        super().add(values)
        self.latest = values

    def render(self, color: bool = False) -> list[str]:
        gutter = max((len(c) for c in self.columns), default=0)
        out = []
        for name, value in zip(self.columns, self.latest):
            text = cell_text(value)[: max(10, self.width - gutter - 3)]
            out.append(f"{name.rjust(gutter)} : {_colored(text, 0, color) if color else text}")
        out.append(f"{' ' * gutter}   ({_rows(self.rows)})")
        return out


CHARTS = {"line": LineChart, "bar": BarChart, "scatter": ScatterChart, "text": TextChart}


def make_chart(kind: str, columns: list[str], width: int | None = None, height: int | None = None) -> Chart:
    size = shutil.get_terminal_size((80, 24))
    width = width or min(size.columns, 160) - 1
    height = height or max(6, min(18, size.lines - 6))
    return CHARTS[kind](columns, width, height)


# ---------------------------------------------------------------------------- live redraw
class LiveArea:
    """Lines redrawn in place on a terminal (cursor up, clear, write), at most every
    `min_interval` seconds; when not live, only the final frame is printed."""

    def __init__(self, out: TextIO, live: bool, min_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.out = out
        self.live = live
        self.min_interval = min_interval
        self.clock = clock
        self.height = 0
        self.frames = 0
        self._last = -math.inf

    def due(self) -> bool:
        return self.clock() - self._last >= self.min_interval

    def draw(self, lines: list[str]) -> None:
        self._last = self.clock()
        if not self.live:
            return
        erase = f"\x1b[{self.height}F\x1b[J" if self.height else ""
        self.out.write(erase + "".join(line + "\n" for line in lines))
        self.out.flush()
        self.height = len(lines)
        self.frames += 1

    def finish(self, lines: list[str]) -> None:
        if self.live:
            self.draw(lines)
        else:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
            self.frames += 1


class LivePlot:
    """A chart fed by rows and drawn in a `LiveArea` as they come, at a bounded rate."""

    def __init__(self, chart: Chart, area: LiveArea, color: bool = False):
        self.chart = chart
        self.area = area
        self.color = color
        self._dirty = False

    @property
    def rows(self) -> int:
        return self.chart.rows

    def add(self, values: tuple) -> None:
        self.chart.add(values)
        self._dirty = True
        self.tick()

    def tick(self) -> None:
        if self._dirty and self.area.live and self.area.due():
            self.area.draw(self.chart.render(self.color))
            self._dirty = False

    def finish(self) -> None:
        self.area.finish(self.chart.render(self.color))
