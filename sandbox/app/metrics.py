"""Counters, gauges and histograms in the Prometheus text exposition format (version 0.0.4).

Small on purpose: label sets are fixed at registration, values live in dicts under one lock, and a
gauge can be a function read at scrape time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, registry: Registry, name: str, help_text: str, labels: Sequence[str]):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._lock = registry.lock
        self._values: dict[tuple[str, ...], float] = {}
        registry.metrics.append(self)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.label_names:
            items = [((), 0.0)]
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def __init__(self, registry, name, help_text, labels=(), read: Callable[[], float] | None = None):
        super().__init__(registry, name, help_text, labels)
        self._read = read

    def set(self, *labels: str, value: float) -> None:
        with self._lock:
            self._values[labels] = float(value)

    def lines(self) -> list[str]:
        if self._read is not None:
            return [f"{self.name} {_number(float(self._read()))}"]
        return super().lines()


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, registry, name, help_text, labels=(), buckets: Sequence[float] = DURATION_BUCKETS):
        super().__init__(registry, name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, *labels: str, value: float) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [0] * len(self.buckets) + [0.0, 0])
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        out = []
        for labels, series in items:
            for bound, count in zip(self.buckets, series, strict=False):
                le = f'le="{float(bound)!r}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {count}")
            inf = _labels(self.label_names, labels, 'le="+Inf"')
            out.append(f"{self.name}_bucket{inf} {series[-1]}")
            out.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(series[-2])}")
            out.append(f"{self.name}_count{_labels(self.label_names, labels)} {series[-1]}")
        return out


class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.metrics: list[_Metric] = []

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self, name, help_text, labels)

    def gauge(self, name, help_text, labels=(), read: Callable[[], float] | None = None) -> Gauge:
        return Gauge(self, name, help_text, labels, read)

    def histogram(self, name, help_text, labels=(), buckets=DURATION_BUCKETS) -> Histogram:
        return Histogram(self, name, help_text, labels, buckets)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"
