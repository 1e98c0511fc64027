"""``python -m sandbox.app serve``: one service of the platform, as a pod's container runs it.

HTTP/1.0 on the standard library's threading server (one thread per request; each connection
closes after its answer, so a shutdown waits only for requests, not idle keep-alive clients).
Every role serves ``/health/live``, ``/health/ready`` (and ``/health``, the same), ``/health/database``
and ``/metrics``; the api role adds its endpoints (api.py), the indexer and the crank their loops
(workers.py).

The image's tag is the version. ``faulty`` answers a share of the API requests
(``SANDBOX_FAULTY_ERROR_RATE``, default 0.2, spread evenly: every fifth at 0.2) with 500, each
API request ``SANDBOX_FAULTY_LATENCY_MS`` (default 100) slower; ``slow`` adds
``SANDBOX_SLOW_LATENCY_MS`` (default 300) to every API request. API requests are ``/`` and
``/api/...``; health and metrics are never slowed or failed.

SIGTERM or SIGINT: not ready at once, serving on for ``SANDBOX_SHUTDOWN_DELAY_SECONDS`` (default
1) so the endpoints and the proxies take the pod out, then no new connections, the requests in
flight finished, the loops stopped, exit 0.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import signal
import threading
import time
import traceback
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.app import log
from sandbox.app.backends import (
    READ_ONLY,
    USABLE,
    Cache,
    Database,
    Missing,
    ReadOnly,
    Unavailable,
)
from sandbox.app.metrics import CONTENT_TYPE, Registry

WRITE_TABLES = {"api": "orders", "indexer": "events", "crank": "orders"}
MAX_BODY = 64 * 1024


def image_tag(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else "latest"


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able, or str for text
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, default=_json_default).encode() + b"\n"


class HTTPError(Exception):
    def __init__(self, status: int, error: str, **extra: Any):
        super().__init__(error)
        self.response = Response(status, {"error": error, **extra})


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Any  # email.message.Message: case-insensitive
    client: str
    body: bytes

    def json(self) -> dict:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise HTTPError(400, "the body is not JSON") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return value

    @property
    def forwarded_for(self) -> str | None:
        return self.headers.get("X-Forwarded-For")


@dataclass
class Route:
    method: str
    template: str
    handler: Callable[[Request], Response]
    api: bool  # an API request: faulty and slow images act on it

    def match(self, path: str) -> dict[str, str] | None:
        want, got = self.template.strip("/").split("/"), path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params = {}
        for pattern, segment in zip(want, got, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = urllib.parse.unquote(segment)
            elif pattern != segment:
                return None
        return params


class RateMeter:
    """Things done per second over the last ``window`` seconds."""

    def __init__(self, window: float = 10.0):
        self.window, self.started = window, time.monotonic()
        self._events: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, n: float) -> None:
        with self._lock:
            self._events.append((time.monotonic(), n))

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window:
                self._events.popleft()
            done = sum(n for _t, n in self._events)
        return done / max(min(self.window, now - self.started), 1.0)


class Faults:
    """What the image's tag does to API requests."""

    def __init__(self, tag: str):
        self.tag = tag
        self.error_rate = (
            float(os.environ.get("SANDBOX_FAULTY_ERROR_RATE", "0.2")) if tag == "faulty" else 0.0
        )
        latency = {"faulty": ("SANDBOX_FAULTY_LATENCY_MS", "100"), "slow": ("SANDBOX_SLOW_LATENCY_MS", "300")}
        name, default = latency.get(tag, (None, "0"))
        self.latency = float(os.environ.get(name, default)) / 1000 if name else 0.0
        self._credit = 0.0
        self._lock = threading.Lock()

    def apply(self) -> None:
        if self.latency > 0:
            time.sleep(self.latency)
        if self.error_rate > 0:
            # Error diffusion rather than chance: the share is exact over any run of requests.
            with self._lock:
                self._credit += self.error_rate
                fail = self._credit >= 1.0
                if fail:
                    self._credit -= 1.0
            if fail:
                raise HTTPError(500, "internal error (faulty build)")


class Service:
    def __init__(self, role: str, image: str):
        self.role, self.image, self.version = role, image, image_tag(image)
        self.pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or "-"
        log.pod = self.pod
        self.stopping = False
        self.stop = threading.Event()  # set when the background loops are to stop
        self.faults = Faults(self.version)
        self.routes: list[Route] = []

        self.metrics = registry = Registry()
        self.requests = registry.counter(
            "http_requests_total", "HTTP requests answered, by route template, method and status code.",
            ("route", "method", "code"),
        )  # fmt: skip
        self.durations = registry.histogram(
            "http_request_duration_seconds", "Time to answer HTTP requests.", ("route", "method")
        )
        db_failures = registry.counter("db_connection_failures_total", "Failed database connection attempts.")
        redis_failures = registry.counter(
            "redis_connection_failures_total", "Failed Redis connection attempts."
        )
        registry.gauge("app_info", "The running build.", ("role", "version", "pod")).set(
            role, self.version, self.pod, value=1
        )
        registry.gauge("app_ready", "1 while the pod reports ready.", read=lambda: float(self.ready()[0]))
        registry.gauge(
            "app_database_read_only",
            "1 while the database answers but refuses writes.",
            read=lambda: float(self.db.state == READ_ONLY),
        )
        self.in_flight = 0
        self._in_flight_lock = threading.Lock()
        registry.gauge(
            "http_requests_in_flight", "Requests being answered.", read=lambda: float(self.in_flight)
        )
        self.rows = registry.counter(
            "rows_processed_total", "Rows (api: orders; indexer: events; crank: items)."
        )
        self.rows_rate = RateMeter()
        registry.gauge(
            "rows_processed_per_second",
            "rows_processed_total per second over 10 s.",
            read=self.rows_rate.rate,
        )

        database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
        self.db = (
            Database(database_url, f"matchbook-{role}/{self.pod}", db_failures, WRITE_TABLES[role])
            if database_url
            else Missing("database", "DATABASE_URL", db_failures)
        )
        self.cache = (
            Cache(redis_url, redis_failures) if redis_url else Missing("redis", "REDIS_URL", redis_failures)
        )

        self.route("GET", "/health/live", self.live, api=False)
        self.route("GET", "/health/ready", self.readiness, api=False)
        self.route("GET", "/health", self.readiness, api=False)
        self.route("GET", "/health/database", self.database_health, api=False)
        self.route("GET", "/metrics", self.scrape, api=False)
        self.route("GET", "/", self.about)

        from sandbox.app import api, workers

        self.part = {"api": api.Api, "indexer": workers.Indexer, "crank": workers.Crank}[role](self)

    def route(self, method: str, template: str, handler, api: bool = True) -> None:
        self.routes.append(Route(method, template, handler, api))

    def processed(self, n: int) -> None:
        self.rows.inc(amount=n)
        self.rows_rate.add(n)

    # -- health ----------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict]:
        failed = [
            {"backend": b.name, "state": b.state, "detail": b.detail}
            for b in (self.db, self.cache)
            if b.state not in USABLE
        ]
        ready = not self.stopping and not failed
        body = {
            "status": "ready" if ready else "not ready",
            "role": self.role,
            "version": self.version,
            "pod": self.pod,
            "database": self.db.state,
            "redis": self.cache.state,
            "shutting_down": self.stopping,
            "failed": failed,
            **self.part.status(),
        }
        return ready, body

    def live(self, _req: Request) -> Response:
        return Response(200, {"status": "alive", "role": self.role, "pod": self.pod})

    def readiness(self, _req: Request) -> Response:
        ready, body = self.ready()
        return Response(200 if ready else 503, body)

    def database_health(self, _req: Request) -> Response:
        state = self.db.state
        body = {"database": state, "detail": self.db.detail, "server": self.db.where, "user": self.db.user}
        return Response(200 if state in USABLE else 503, body)

    def scrape(self, _req: Request) -> Response:
        return Response(200, self.metrics.render(), content_type=CONTENT_TYPE)

    def about(self, _req: Request) -> Response:
        return Response(200, {"service": f"matchbook-{self.role}", "version": self.version, "pod": self.pod})

    # -- requests --------------------------------------------------------------------------------
    def find(self, method: str, path: str) -> tuple[Route | None, dict, int]:
        allowed = False
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, 200
            allowed = True
        return None, {}, 405 if allowed else 404

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        with self._in_flight_lock:
            self.in_flight += 1
        try:
            self._handle(http)
        finally:
            with self._in_flight_lock:
                self.in_flight -= 1

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        method = http.command
        parts = urllib.parse.urlsplit(http.path)
        path = parts.path or "/"
        route, params, found = self.find(method, path)
        label = route.template if route else "unmatched"
        try:
            length = int(http.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise HTTPError(413, "the body is too large")
            body = http.rfile.read(length) if length > 0 else b""
            if route is None:
                raise HTTPError(found, "not found" if found == 404 else "method not allowed")
            if route.api:
                self.faults.apply()
            query = dict(urllib.parse.parse_qsl(parts.query))
            request = Request(method, path, params, query, http.headers, http.client_address[0], body)
            response = route.handler(request)
        except HTTPError as exc:
            response = exc.response
        except ReadOnly:
            response = Response(503, {"error": "read-only", "detail": "the database refuses writes"})
        except Unavailable as exc:
            response = Response(503, {"error": f"{exc.backend} unavailable", "state": exc.state})
        except ValueError:
            response = Response(400, {"error": "bad request"})
        except Exception as exc:
            log.error(f"{method} {path} failed: {type(exc).__name__}: {traceback.format_exc(limit=3)!r}")
            response = Response(500, {"error": "internal error"})
        payload = response.encode()
        try:
            http.send_response(response.status)
            http.send_header("Content-Type", response.content_type)
            http.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                http.send_header(name, value)
            http.end_headers()
            if method != "HEAD":
                http.wfile.write(payload)
        except OSError:
            pass  # the client went away; the request is still counted and logged
        seconds = time.monotonic() - started
        self.requests.inc(label, method, str(response.status))
        self.durations.observe(label, method, value=seconds)
        log.request(method, path, response.status, seconds)


class Handler(BaseHTTPRequestHandler):
    server_version = "matchbook"
    timeout = 15  # a client that connects and sends nothing does not hold a shutdown up for long
    service: Service

    def do_GET(self):
        self.service.handle(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def log_message(self, format, *args):
        pass  # one line per request is written by Service.handle


def serve(role: str, listen: tuple[str, int], image: str) -> int:
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    service = Service(role, image)
    handler = type("BoundHandler", (Handler,), {"service": service})
    try:
        server = ThreadingHTTPServer(listen, handler)
    except OSError as exc:
        log.error(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}")
        return 1
    server.daemon_threads = False  # server_close() waits for the requests in flight

    threads = [
        threading.Thread(
            target=backend.monitor, args=(service.stop,), name=f"{backend.name}-monitor", daemon=True
        )
        for backend in (service.db, service.cache)
    ]
    threads += [
        threading.Thread(target=loop, name=loop.__name__, daemon=True) for loop in service.part.loops()
    ]
    for thread in threads:
        thread.start()
    http_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="http")
    http_thread.start()
    log.info(f"matchbook-{role} {service.version} serving on {listen[0]}:{listen[1]}")

    while not stop_requested.wait(0.5):
        pass
    service.stopping = True
    delay = float(os.environ.get("SANDBOX_SHUTDOWN_DELAY_SECONDS", "1"))
    log.info(f"shutting down: not ready, serving for {delay:g} s more")
    time.sleep(delay)
    server.shutdown()
    http_thread.join()
    server.server_close()  # joins the request threads
    service.stop.set()
    for thread in threads:
        thread.join(timeout=5)
    service.db.close()
    service.cache.close()
    log.info("stopped")
    return 0
