"""A small metrics registry rendered in the Prometheus text exposition format (version 0.0.4).

`FederationMetrics` holds the service's standard metrics as attributes; other parts add their own
with `counter(…)`, `gauge(…)` or `callback(…)` (a function evaluated at scrape time):

    metrics = app[METRICS]
    metrics.queries_running.inc()
    metrics.query_rows.inc(len(batch)); metrics.query_rows_rate.mark(len(batch))
    metrics.counter("streamql_fragments_total", "Query fragments shipped to edges.", ("outcome",)).inc(outcome="answered")
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[str, ...]
Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.name, self.help, self.labelnames = name, help, tuple(labels)
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()  # metrics may be touched from executor threads too

    def _key(self, labels: Mapping[str, object]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    def samples(self) -> Iterable[Sample]:
        with self._lock:
            items = list(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        for key, value in items:
            yield dict(zip(self.labelnames, key)), value

    def value(self, **labels: object) -> float:
        return self._values.get(self._key(labels), 0.0)


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self.inc(-amount, **labels)


class CallbackMetric(_Metric):
    """Samples computed at scrape time: the function returns a number or {label value(s): number}."""

    def __init__(self, name: str, help: str, kind: str, function: Callable[[], float | Mapping], labels: Sequence[str] = ()):
        super().__init__(name, help, labels)
        self.kind, self.function = kind, function

    def samples(self) -> Iterable[Sample]:
        result = self.function()
        if not isinstance(result, Mapping):
            yield {}, float(result)
            return
        for key, value in result.items():
            key = key if isinstance(key, tuple) else (key,)
            yield dict(zip(self.labelnames, map(str, key))), float(value)


class RateMeter:
    """Events per second over the last `window` seconds (e.g. result rows merged per second)."""

    def __init__(self, window: int = 10, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self._buckets: dict[int, float] = {}
        self._lock = threading.Lock()

    def mark(self, n: float = 1.0) -> None:
        second = int(self.clock())
        with self._lock:
            self._buckets[second] = self._buckets.get(second, 0.0) + n
            if len(self._buckets) > 2 * self.window:
                for old in [s for s in self._buckets if s <= second - self.window]:
                    del self._buckets[old]

    def rate(self) -> float:
        now = int(self.clock())
        with self._lock:
            total = sum(v for s, v in self._buckets.items() if now - self.window < s <= now)
        return total / self.window


class MetricsRegistry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                raise ValueError(f"metric {metric.name} is already registered differently")
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help, labels))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, labels))  # type: ignore[return-value]

    def callback(self, name: str, help: str, function: Callable[[], float | Mapping], *,
                 kind: str = "gauge", labels: Sequence[str] = ()) -> CallbackMetric:
        metric = CallbackMetric(name, help, kind, function, labels)
        self._metrics[name] = metric  # re-registering replaces the function (a new app, same process)
        return metric

    def __contains__(self, name: str) -> bool:
        return name in self._metrics

    def render(self) -> str:
        lines = []
        for name in sorted(self._metrics):
            metric = self._metrics[name]
            help_text = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {metric.kind}")
            for labels, value in metric.samples():
                if labels:
                    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                    lines.append(f"{name}{{{inner}}} {_number(value)}")
                else:
                    lines.append(f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"


class FederationMetrics(MetricsRegistry):
    """The standard metrics of a federation; edge and deployment figures come from callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.queries_running = self.gauge("streamql_queries_running", "Fleet queries running now.")
        self.queries = self.counter("streamql_queries_total", "Statements run, by outcome.", ("outcome",))
        self.query_rows = self.counter("streamql_query_rows_total", "Result rows merged and sent to clients.")
        self.query_rows_rate = RateMeter()
        self.callback("streamql_query_rows_per_second", "Result rows merged per second, over the last 10 s.",
                      self.query_rows_rate.rate)
        self.errors = self.counter("streamql_errors_total", "Errors answered to clients, by kind.", ("kind",))
        self.http_requests = self.counter("streamql_http_requests_total", "HTTP requests by route and status.",
                                          ("method", "route", "status"))

    def watch_fleet(self, edges_registered: Callable[[], float], edges_online: Callable[[], float],
                    deployments: Callable[[], Mapping], targets: Callable[[], Mapping]) -> None:
        self.callback("streamql_edges_registered", "Devices in the registry.", edges_registered)
        self.callback("streamql_edges_online", "Devices connected now.", edges_online)
        self.callback("streamql_deployments", "Deployments by state.", deployments, labels=("state",))
        self.callback("streamql_deployment_targets", "Per-device deployment targets by state.", targets,
                      labels=("state",))
