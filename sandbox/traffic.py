"""A bounded, open-loop HTTP load generator: what clients see while a procedure runs.

::

    python -m sandbox.traffic --url http://127.0.0.1:8080 --rps 50 --seconds 30 \\
        [--path /healthz --path /api/orders ...] [--host api.matchbook.example] [--timeout 5] [--json]

It sends ``rps`` GET requests per second for ``seconds`` seconds. It is open-loop: request *i* is
scheduled at ``start + i / rps`` whatever happened to the earlier ones, and handed to a bounded pool
of worker threads, so a slow or dead server does not slow the offered load down, the way real
clients keep arriving during an outage. The pool starts with 4 threads and grows, while every
thread is busy and requests are waiting, up to ``min(64, 2 * rps)``: few threads are cheapest
when answers are quick (the machine has few cores), many are needed when they are slow.

Requests go to the ``--path`` values in turn (request *i* to ``paths[i % len(paths)]``); each path
is appended to the URL's own path. With no ``--path`` the URL itself is requested. Each request
uses a new connection (``Connection: close``), redirects are not followed (a 3xx is an answer), and
proxy settings from the environment are ignored. ``--host`` sends that ``Host`` header instead of
the URL's host, as a client that resolved the name to this address would: through the sandbox's
ingress (``python -m driver sandbox traffic --url <ingress.url> --host api.matchbook.example``) the
host picks the Ingress rule.

Bounds: at most 2000 requests per second, 3600 seconds and 200000 requests in one run; anything
beyond, a non-positive rate or duration, or a URL that is not ``http(s)://host[:port][/path]``
is refused with exit code 2 and one message on stderr, and nothing is sent.

Measures
--------

Each request belongs to the second it was *scheduled* in (second ``k`` holds requests ``k*rps`` to
``(k+1)*rps - 1``), so a run that is not stopped early sends exactly ``rps * seconds`` requests and
every second has ``rps`` of them, even when answers arrive late.

- ``statuses``: responses by HTTP status code (keys are strings: ``{"200": 45, "503": 5}``);
- ``failures``: requests that got no HTTP response, by kind: ``timeout`` (no answer within
  ``--timeout`` seconds per socket operation), ``refused`` (connection refused), ``disconnected``
  (the server closed or reset the connection before answering), ``protocol`` (not valid HTTP),
  ``error`` (any other socket or TLS error);
- ``failed``: non-2xx/3xx responses plus failures; ``ok``: 2xx and 3xx responses;
- ``latency_ms``: ``{"p50", "p90", "p99", "max"}`` over the requests that got a response (any
  status), nearest-rank percentiles, ``null`` when none did. Latency runs from the request's
  *scheduled* time to the end of the response body, so time a request waited for a free worker
  counts (no coordinated omission);
- ``max_lag_ms`` (total only): the longest a request waited between its scheduled time and being
  sent. When it is large, the generator (or the machine) could not keep up and the latencies
  include that wait. (Both the generator and the sandbox's servers are Python on a small machine:
  a few hundred requests per second is comfortable, much more than that shows up here.)

Output
------

By default, one line per second as each second's requests have all finished, then a total line::

    second   0: sent 50  ok 45  failed 5  [200:45 503:5]  p50 2.1 p90 4.0 p99 9.8 max 10.2 ms
    second   1: sent 50  ok 40  failed 10  [200:40]  failures [refused:10]  p50 ...
    total: sent 100  ok 85  failed 15  [200:85 503:5]  failures [refused:10]  p50 ...  in 2.0 s, lag max 3 ms

With ``--json``, only one JSON document, at the end::

    {
      "config": {"url": str, "host": str | null, "paths": [str], "rps": float, "seconds": float,
                 "timeout": float, "workers": int, "planned": int},
      "seconds": [{"second": int, "sent": int, "ok": int, "failed": int,
                   "statuses": {code: int}, "failures": {kind: int},
                   "latency_ms": {"p50": float, "p90": float, "p99": float, "max": float} | null}],
      "total": {"sent": int, "ok": int, "failed": int, "statuses": {code: int},
                "failures": {kind: int}, "latency_ms": {...} | null, "duration_s": float,
                "max_lag_ms": float, "workers_started": int, "stopped_early": bool}
    }

Exit codes: 0 when it ran, whatever the answers were; 2 for refused arguments; 130 when
interrupted (SIGINT or SIGTERM), after printing the report of what was sent until then.

Library
-------

``run(url, rps, seconds, paths=None, timeout=5.0, host=None) -> Report`` runs to the end. ``start(...)``
returns a :class:`Run` at once, sending in the background: ``.stop()`` stops scheduling new
requests (those in flight finish), ``.wait()`` returns the final :class:`Report`, and
``.report()`` a snapshot at any time -- for benchmarks that run it while a procedure runs.
``main(argv, default_url=None)`` is the command line; a caller that knows the sandbox's ingress
passes it as ``default_url`` so ``--url`` becomes optional.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import queue
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_RPS = 2000
MAX_SECONDS = 3600
MAX_REQUESTS = 200_000
MAX_WORKERS = 64
INITIAL_WORKERS = 4


class BoundsError(ValueError):
    """The arguments ask for more (or less) than the generator will send; nothing was sent."""


@dataclass
class Target:
    scheme: str
    host: str
    port: int
    base_path: str

    def path_for(self, path: str) -> str:
        if not path:
            return self.base_path or "/"
        return self.base_path.rstrip("/") + (path if path.startswith("/") else "/" + path)


def parse_url(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BoundsError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BoundsError(f"bad URL {url!r}: expected http(s)://host[:port][/path]")
    base = parts.path or ""
    if parts.query:
        base += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), base)


def check_bounds(rps: float, seconds: float) -> int:
    """The number of requests planned; raises BoundsError when the run is out of bounds."""
    if not (rps > 0 and seconds > 0) or math.isinf(rps) or math.isinf(seconds):
        raise BoundsError(f"rps and seconds must be positive (got rps={rps}, seconds={seconds})")
    planned = round(rps * seconds)
    if rps > MAX_RPS or seconds > MAX_SECONDS or planned > MAX_REQUESTS:
        raise BoundsError(
            f"refusing rps={rps:g} seconds={seconds:g} ({planned} requests): the limits are "
            f"{MAX_RPS} requests per second, {MAX_SECONDS} seconds and {MAX_REQUESTS} requests per run"
        )
    if planned < 1:
        raise BoundsError(f"rps={rps:g} for {seconds:g} s is less than one request")
    return planned


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """Nearest-rank p50/p90/p99 and the maximum, rounded to 0.01 ms; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * n) - 1)], 2)

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": round(ordered[-1], 2)}


@dataclass
class Bucket:
    """One scheduled second's outcomes."""

    second: int
    planned: int
    scheduled: int = 0
    sent: int = 0
    done: int = 0
    dropped: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = sum(n for code, n in self.statuses.items() if 200 <= code < 400)
        answered = sum(self.statuses.values())
        return {
            "second": self.second,
            "sent": self.sent,
            "ok": ok,
            "failed": answered - ok + sum(self.failures.values()),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": dict(sorted(self.failures.items())),
            "latency_ms": percentiles(self.latencies),
        }


@dataclass
class Report:
    """A run's outcome; ``to_dict()`` is the ``--json`` document (see the module docstring)."""

    config: dict[str, Any]
    seconds: list[dict[str, Any]]
    total: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "seconds": self.seconds, "total": self.total}

    @property
    def sent(self) -> int:
        return self.total["sent"]

    @property
    def ok(self) -> int:
        return self.total["ok"]

    @property
    def failed(self) -> int:
        return self.total["failed"]

    @property
    def statuses(self) -> dict[str, int]:
        return self.total["statuses"]

    @property
    def failures(self) -> dict[str, int]:
        return self.total["failures"]


def classify(exc: BaseException) -> str:
    """The failure kind of an exception raised while sending a request."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "disconnected"
    if isinstance(exc, ConnectionAbortedError | http.client.IncompleteRead):
        return "disconnected"
    if isinstance(exc, http.client.HTTPException):
        return "protocol"
    return "error"


class Run:
    """A load run in the background; see :func:`start`."""

    def __init__(
        self,
        url: str,
        rps: float,
        seconds: float,
        paths: Sequence[str] | None = None,
        timeout: float = 5.0,
        on_second: Callable[[dict[str, Any]], None] | None = None,
        host: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.target = parse_url(url)
        # More headers for every request (an API key, say); never in the report.
        self.headers = dict(headers or {})
        if host is not None and (not host.strip() or any(c in host for c in "\r\n /")):
            raise BoundsError(f"bad Host header {host!r}: expected a host name[:port]")
        self.host = host
        self.planned = check_bounds(rps, seconds)
        if not timeout > 0:
            raise BoundsError(f"timeout must be positive (got {timeout})")
        self.url = url
        self.rps = float(rps)
        self.seconds = float(seconds)
        self.paths = list(paths) if paths else [""]
        self.timeout = float(timeout)
        self.workers = max(1, min(MAX_WORKERS, math.ceil(self.rps * 2)))
        self._busy = 0
        self.on_second = on_second
        self._context = ssl.create_default_context() if self.target.scheme == "https" else None
        self._lock = threading.Lock()
        n_buckets = math.ceil(self.planned / self.rps - 1e-9)
        self._buckets = []
        for k in range(n_buckets):
            first, last = math.ceil(k * self.rps - 1e-9), math.ceil((k + 1) * self.rps - 1e-9)
            self._buckets.append(Bucket(k, min(last, self.planned) - min(first, self.planned)))
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._scheduled_all = False
        self._scheduled = 0
        self._workers_left = 0
        self._next_emit = 0
        self._max_lag = 0.0
        self._started = 0.0
        self._ended: float | None = None
        self._threads: list[threading.Thread] = []

    # -- control -----------------------------------------------------------------------------

    def start(self) -> Run:
        self._started = time.monotonic()
        for _ in range(min(self.workers, INITIAL_WORKERS)):
            self._add_worker()
        threading.Thread(target=self._schedule, name="traffic-scheduler", daemon=True).start()
        return self

    def _add_worker(self) -> None:
        with self._lock:
            self._workers_left += 1
            name = f"traffic-{len(self._threads)}"
        t = threading.Thread(target=self._work, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        """Stops scheduling; requests not yet sent are dropped, those in flight finish."""
        self._stop.set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> Report:
        """Waits for the end of the run (or ``timeout`` seconds) and returns the report."""
        self._finished.wait(timeout)
        return self.report()

    def report(self) -> Report:
        """The report of what has finished so far (the final one once ``done``)."""
        with self._lock:
            seconds = [b.summary() for b in self._buckets if b.sent]
            statuses: Counter = Counter()
            failures: Counter = Counter()
            latencies: list[float] = []
            for b in self._buckets:
                statuses.update(b.statuses)
                failures.update(b.failures)
                latencies.extend(b.latencies)
            ok = sum(n for code, n in statuses.items() if 200 <= code < 400)
            end = self._ended if self._ended is not None else time.monotonic()
            total = {
                "sent": sum(b.sent for b in self._buckets),
                "ok": ok,
                "failed": sum(statuses.values()) - ok + sum(failures.values()),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "failures": dict(sorted(failures.items())),
                "latency_ms": percentiles(latencies),
                "duration_s": round(end - self._started, 3) if self._started else 0.0,
                "max_lag_ms": round(self._max_lag * 1000, 2),
                "workers_started": len(self._threads),
                "stopped_early": self._stop.is_set() and self._scheduled < self.planned,
            }
        config = {
            "url": self.url,
            "host": self.host,
            "paths": self.paths,
            "rps": self.rps,
            "seconds": self.seconds,
            "timeout": self.timeout,
            "workers": self.workers,
            "planned": self.planned,
        }
        return Report(config, seconds, total)

    # -- threads -----------------------------------------------------------------------------

    def _schedule(self) -> None:
        start = self._started
        i = 0
        try:
            while i < self.planned and not self._stop.is_set():
                now = time.monotonic()
                while i < self.planned and start + i / self.rps <= now:
                    due = start + i / self.rps
                    with self._lock:
                        self._buckets[self._bucket_of(i)].scheduled += 1
                        self._scheduled = i + 1
                    self._queue.put((i, due, self.paths[i % len(self.paths)]))
                    i += 1
                # Grow the pool, up to its bound, while every worker is busy and requests wait.
                with self._lock:
                    grow = self._busy >= len(self._threads) and len(self._threads) < self.workers
                if grow and not self._queue.empty():
                    self._add_worker()
                if i < self.planned:
                    self._stop.wait(max(0.0, start + i / self.rps - time.monotonic()))
        finally:
            with self._lock:
                self._scheduled = i
                self._scheduled_all = True
                self._emit_ready()
            for _ in range(len(self._threads)):
                self._queue.put(None)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            i, due, path = job
            k = self._bucket_of(i)
            if self._stop.is_set():
                # Dropped before being sent: it counts in no second.
                with self._lock:
                    self._buckets[k].dropped += 1
                    self._emit_ready()
                continue
            sent_at = time.monotonic()
            with self._lock:
                self._busy += 1
                self._buckets[k].sent += 1
                self._max_lag = max(self._max_lag, sent_at - due)
            status, kind = self._request(path)
            elapsed_ms = (time.monotonic() - due) * 1000
            with self._lock:
                self._busy -= 1
                bucket = self._buckets[k]
                bucket.done += 1
                if status is not None:
                    bucket.statuses[status] += 1
                    bucket.latencies.append(elapsed_ms)
                else:
                    bucket.failures[kind] += 1
                self._emit_ready()
        self._maybe_finish()

    def _bucket_of(self, i: int) -> int:
        return min(int(i / self.rps + 1e-9), len(self._buckets) - 1)

    def _maybe_finish(self) -> None:
        with self._lock:
            self._workers_left -= 1
            if self._workers_left == 0:
                self._ended = time.monotonic()
                self._emit_ready()
                self._finished.set()

    def _emit_ready(self) -> None:
        """Calls on_second for each second, in order, once all its requests are finished.

        Called with the lock held, so on_second runs under it and must be quick (printing a line).
        """
        while self._next_emit < len(self._buckets):
            b = self._buckets[self._next_emit]
            fully_scheduled = b.scheduled >= b.planned or self._scheduled_all
            if not (fully_scheduled and b.done + b.dropped >= b.scheduled):
                return
            self._next_emit += 1
            if self.on_second is not None and b.sent:
                self.on_second(b.summary())

    def _request(self, path: str) -> tuple[int | None, str | None]:
        t = self.target
        if self._context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                t.host, t.port, timeout=self.timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)
        headers = {"Connection": "close", "User-Agent": "sandbox-traffic", **self.headers}
        if self.host:
            headers["Host"] = self.host  # http.client then leaves out its own
        try:
            conn.request("GET", t.path_for(path), headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status, None
        except (OSError, http.client.HTTPException) as exc:
            return None, classify(exc)
        finally:
            conn.close()


def start(
    url: str,
    rps: float,
    seconds: float,
    paths: Sequence[str] | None = None,
    timeout: float = 5.0,
    on_second: Callable[[dict[str, Any]], None] | None = None,
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> Run:
    """Starts a run in the background and returns it; raises BoundsError before sending anything."""
    return Run(url, rps, seconds, paths, timeout, on_second, host, headers).start()


def run(
    url: str,
    rps: float,
    seconds: float,
    paths: Sequence[str] | None = None,
    timeout: float = 5.0,
    host: str | None = None,
) -> Report:
    """Runs to the end and returns the report; raises BoundsError before sending anything."""
    return start(url, rps, seconds, paths, timeout, host=host).wait()


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items())


def format_line(label: str, s: dict[str, Any]) -> str:
    line = f"{label}: sent {s['sent']}  ok {s['ok']}  failed {s['failed']}"
    if s["statuses"]:
        line += f"  [{_counts(s['statuses'])}]"
    if s["failures"]:
        line += f"  failures [{_counts(s['failures'])}]"
    lat = s["latency_ms"]
    if lat:
        line += f"  p50 {lat['p50']:.1f} p90 {lat['p90']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms"
    return line


def main(
    argv: Sequence[str] | None = None, default_url: str | None = None, default_host: str | None = None
) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.traffic",
        description="Send a fixed rate of GET requests for a bounded time and report what came back.",
    )
    parser.add_argument(
        "--url",
        required=default_url is None,
        default=default_url,
        help="base URL" + (f" (default {default_url})" if default_url else ""),
    )
    parser.add_argument("--rps", type=float, required=True, help=f"requests per second (at most {MAX_RPS})")
    parser.add_argument("--seconds", type=float, required=True, help=f"duration (at most {MAX_SECONDS})")
    parser.add_argument(
        "--path", action="append", dest="paths", help="path to request, in turn with the others (repeatable)"
    )
    parser.add_argument(
        "--host",
        help="Host header to send (e.g. an Ingress rule's host), instead of the URL's host"
        + (f" (default {default_host} with the default URL)" if default_host else ""),
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request socket timeout, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.host is None and default_host and args.url == default_url:
        args.host = default_host  # the sandbox's ingress routes by the Ingress rule's host

    def print_second(summary: dict[str, Any]) -> None:
        print(format_line(f"second {summary['second']:3d}", summary), flush=True)

    try:
        handle = Run(
            args.url,
            args.rps,
            args.seconds,
            args.paths,
            args.timeout,
            None if args.json else print_second,
            args.host,
        )
    except BoundsError as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return 2

    interrupted = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        interrupted.set()
        handle.stop()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        handle.start()
        while not handle.done:
            handle.wait(0.2)
        report = handle.report()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        total = report.total
        print(
            format_line("total", total)
            + f"  in {total['duration_s']:.1f} s, lag max {total['max_lag_ms']:.0f} ms",
            flush=True,
        )
    return 130 if interrupted.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
