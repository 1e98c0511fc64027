"""The sandbox's receiver: one local HTTP server standing in for Slack, PagerDuty and Statuspage.

Procedures that notify people (Slack messages, PagerDuty pages, Statuspage incidents, generic
webhooks) are pointed at this server in the sandbox inventory. It answers each request the way the
real service does, keeps what it was sent, and lets a test read it back over HTTP, so tests check
what went over the wire rather than what a role says it did. It is an emulation: the real services
cannot be reached from here.

Run it::

    python -m sandbox.receiver --port 0 --port-file .sandbox/receiver.port
    # prints "listening on http://127.0.0.1:PORT"; SIGTERM or SIGINT stops it cleanly

or in-process (tests)::

    with Receiver() as rx:             # port 0: a free port
        post(rx.url + "/slack/services/T0/B0/X", {"text": "hi"})
        rx.received()                  # the same list as GET /_received

It binds loopback addresses only (127.0.0.0/8, ::1): it records credentials' presence and message
bodies, and is never meant to be reachable from another machine.

Endpoints
---------

Slack incoming webhooks -- ``POST /slack/<anything>`` (e.g. ``/slack/services/T000/B000/XXXX``).
  The body is JSON (``Content-Type: application/json``) or a form with a ``payload`` field holding
  JSON, as Slack accepts both. It must be an object with a non-empty ``text`` or ``blocks``.
  -> ``200 ok`` (text/plain), as Slack answers. Malformed JSON, or neither ``text`` nor ``blocks``
  -> ``400 invalid_payload`` (text/plain). (Slack itself says ``no_text`` for the second case; the
  receiver says ``invalid_payload`` for both so callers have one error to handle.)

PagerDuty Events API v2 -- ``POST /v2/enqueue``.
  Body ``{"routing_key", "event_action": "trigger"|"acknowledge"|"resolve", "dedup_key"?,
  "payload": {"summary", "source", "severity": "critical"|"error"|"warning"|"info", ...}}``.
  ``trigger`` needs ``payload.summary``, ``payload.source`` and a valid ``payload.severity``;
  ``acknowledge`` and ``resolve`` need ``dedup_key``. ``routing_key`` must be a non-empty string.
  -> ``202 {"status": "success", "message": "Event processed", "dedup_key": KEY}``; a trigger
  without ``dedup_key`` gets a generated one (32 hex digits), as PagerDuty does.
  Invalid -> ``400 {"status": "invalid event", "message": "Event object is invalid",
  "errors": ["'payload.summary' is missing or blank", ...]}``.
  ``POST /v2/change/enqueue`` (change events) -> ``202 {"status": "success", "message": "Change
  event processed"}`` when ``routing_key`` and ``payload.summary`` are present, 400 otherwise.
  The receiver also keeps the alerts' state by dedup key: ``GET /_pagerduty/alerts`` returns
  ``{dedup_key: {"status": "triggered"|"acknowledged"|"resolved", "summary", "severity",
  "source", "events": n}}`` (a test convenience; PagerDuty has no such endpoint).

Statuspage API v1 -- every request needs ``Authorization: OAuth <api key>`` (any non-empty key),
  else ``401 {"error": "Could not authenticate"}``. State lives in memory, per page id.

  - ``POST /v1/pages/<page_id>/incidents`` with ``{"incident": {"name", "status"?, "body"?,
    "impact_override"?, "components"?: {component_id: status}, "component_ids"?: [...]}}``
    -> ``201`` and the incident object. ``status`` defaults to ``investigating`` and must be one of
    investigating, identified, monitoring, resolved, scheduled, in_progress, verifying, completed
    (``422`` otherwise); a missing ``incident`` object or ``name`` -> ``422``.
  - ``PATCH`` (or ``PUT``) ``/v1/pages/<page_id>/incidents/<id>`` with the same fields -> ``200``
    and the updated incident; a change of status or a new body adds an incident update.
  - ``GET /v1/pages/<page_id>/incidents`` (newest first), ``.../incidents/unresolved``,
    ``GET .../incidents/<id>``, ``DELETE .../incidents/<id>`` (200 and the deleted incident).
  - ``GET /v1/pages/<page_id>/components`` and ``GET .../components/<id>``;
    ``PATCH`` (or ``PUT``) ``.../components/<id>`` with ``{"component": {"status": S}}`` where S is
    operational, degraded_performance, partial_outage, major_outage or under_maintenance
    -> ``200`` and the component (``422`` for another status). A component is created the first
    time it is named (by a PATCH or an incident's ``components``/``component_ids``), since the
    sandbox has no page set up beforehand; its name is its id.
  - An unknown incident -> ``404 {"error": "Not found"}``.

  The incident object has the real API's fields: ``id``, ``page_id``, ``name``, ``status``,
  ``impact`` (from ``impact_override`` if given, else the worst affected component: major_outage
  -> critical, partial_outage -> major, degraded_performance -> minor, otherwise none),
  ``impact_override``, ``shortlink``, ``created_at``, ``updated_at``, ``started_at``,
  ``monitoring_at``, ``resolved_at``, ``postmortem_body``, ``metadata``, ``components`` (the
  affected components' objects) and ``incident_updates``. As in Statuspage, ``incident_updates``
  lists the newest update first; each has ``id``, ``incident_id``, ``status``, ``body``,
  ``created_at``, ``updated_at``, ``display_at``, ``affected_components`` (``[{code, name,
  old_status, new_status}]``) and ``deliver_notifications``.

Generic JSON webhook -- ``POST /hooks/<anything>`` -> ``200 {"ok": true}`` (any body).

Alertmanager webhooks -- ``POST /alertmanager[/<anything>]`` -> ``200 {"ok": true}`` (any body): the
sandbox's Alertmanager sends every notification there (its ``webhook_configs``).

Anything else -> ``404 {"error": "Not found"}``.

Control endpoints (under ``/_``; these are not recorded)
---------------------------------------------------------

- ``GET /_health`` -> ``200 {"ok": true}``.
- ``GET /_received[?path_prefix=/v2/]`` -> the recorded requests, oldest first (by arrival), as a
  JSON list of ``{"method", "path", "query", "headers", "body", "received_at", "status"}``:

  * ``path`` without the query string; ``query`` the raw query string ("" when none);
  * ``headers`` as sent, except credentials masked as ``"***"``: ``Authorization``,
    ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key`` and any header whose name contains
    ``token``, ``key``, ``secret`` or ``auth``;
  * ``body`` the parsed JSON where the body was JSON, else the text (``null`` when empty), kept as
    sent except that any ``routing_key`` or ``service_key`` (PagerDuty's credentials), at any
    depth, is masked as ``"***"``; so a test can see *that* a key was sent but never its value;
  * ``received_at`` ISO 8601 UTC with milliseconds (``2026-01-01T12:00:00.123Z``);
  * ``status`` the HTTP status the receiver answered (including injected failures).

- ``DELETE /_received`` -> clears the list (``200 {"cleared": n}``).
- ``POST /_fail`` with ``{"path_prefix": "/v2/enqueue", "status": 429, "count": 2,
  "retry_after": 1, "method"?: "POST"}`` -> the next ``count`` requests whose path starts with
  ``path_prefix`` (and of that method, when given) are answered ``status`` with a JSON body
  ``{"error": "injected failure", "status": N}`` and, when ``retry_after`` is given, a
  ``Retry-After`` header; they are recorded like any other request. ``count`` defaults to 1 and
  ``-1`` means until cleared. Several rules may be active; the oldest matching one applies.
  ``status`` must be 400-599. -> ``200 {"rules": [...]}``.
- ``GET /_fail`` lists the active rules; ``DELETE /_fail`` clears them all.
- ``GET /_pagerduty/alerts`` as above; ``DELETE /_state`` forgets the PagerDuty and Statuspage
  state (the recorded requests stay).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 10 * 1024 * 1024

MASK = "***"
SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key"}
SECRET_HEADER_WORDS = ("token", "key", "secret", "auth")
SECRET_BODY_KEYS = {"routing_key", "service_key"}

PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")
SP_INCIDENT_STATUSES = (
    "investigating",
    "identified",
    "monitoring",
    "resolved",
    "scheduled",
    "in_progress",
    "verifying",
    "completed",
)
SP_UNRESOLVED = ("investigating", "identified", "monitoring")
SP_COMPONENT_STATUSES = (
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
)
SP_IMPACT = {"major_outage": "critical", "partial_outage": "major", "degraded_performance": "minor"}
SP_IMPACT_ORDER = ("none", "maintenance", "minor", "major", "critical")


def now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict (repeated names joined by ", "), credentials replaced by ``***``."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in SECRET_HEADERS or any(word in lower for word in SECRET_HEADER_WORDS):
            value = MASK
        out[name] = f"{out[name]}, {value}" if name in out and value != MASK else value
    return out


def mask_body(value: Any) -> Any:
    """A copy of a parsed JSON body with PagerDuty's credentials (at any depth) masked."""
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_BODY_KEYS else mask_body(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_body(v) for v in value]
    return value


def parse_body(raw: bytes) -> Any:
    """Parsed JSON where the body is JSON, else its text; ``None`` for an empty body."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _new_id(n: int = 12) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Response:
    """What a route answers: a status, a body (bytes, str or JSON-able) and extra headers."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = dict(headers or {})
        if isinstance(body, bytes):
            self.payload = body
            self.headers.setdefault("Content-Type", "application/octet-stream")
        elif isinstance(body, str):
            self.payload = body.encode()
            self.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif body is None:
            self.payload = b""
        else:
            self.payload = json.dumps(body).encode()
            self.headers.setdefault("Content-Type", "application/json; charset=utf-8")


def _json_error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


class State:
    """Everything the receiver holds: recorded requests, failure rules, emulated services' state.

    One lock guards it all; handlers run on many threads.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []
        self.fail_rules: list[dict[str, Any]] = []
        self.pd_alerts: dict[str, dict[str, Any]] = {}
        # page id -> {"incidents": {id: incident}, "order": [ids], "components": {id: component}}
        self.pages: dict[str, dict[str, Any]] = {}

    # -- failure injection -------------------------------------------------------------------

    def take_failure(self, method: str, path: str) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.fail_rules:
                if not path.startswith(rule["path_prefix"]):
                    continue
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule["remaining"] > 0:
                    rule["remaining"] -= 1
                if rule["remaining"] == 0:
                    self.fail_rules.remove(rule)
                return dict(rule)
        return None

    # -- statuspage --------------------------------------------------------------------------

    def page(self, page_id: str) -> dict[str, Any]:
        return self.pages.setdefault(page_id, {"incidents": {}, "order": [], "components": {}})

    def component(self, page_id: str, component_id: str) -> dict[str, Any]:
        comps = self.page(page_id)["components"]
        if component_id not in comps:
            ts = now_iso()
            comps[component_id] = {
                "id": component_id,
                "page_id": page_id,
                "group_id": None,
                "name": component_id,
                "description": None,
                "position": len(comps) + 1,
                "status": "operational",
                "showcase": True,
                "only_show_if_degraded": False,
                "group": False,
                "created_at": ts,
                "updated_at": ts,
            }
        return comps[component_id]


class Receiver:
    """The receiver as an object: ``start()`` serves on a thread, ``stop()`` ends it.

    ``Receiver(port=0)`` picks a free port; ``url`` is ``http://127.0.0.1:PORT``. Usable as a
    context manager. ``received()``, ``clear()`` and ``fail()`` do in-process what the control
    endpoints do over HTTP.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        if not is_loopback(host):
            raise ValueError(f"the receiver binds loopback addresses only, not {host!r}")
        self.host = host
        self.state = State()
        self.verbose = verbose
        handler = type("BoundHandler", (Handler,), {"state": self.state, "verbose": verbose})
        # A deep listen backlog: the load generator and concurrent tests open many connections at once.
        attrs: dict[str, Any] = {"request_queue_size": 256, "daemon_threads": True}
        if ":" in host:
            attrs["address_family"] = socket.AF_INET6
        server_cls = type("ReceiverServer", (ThreadingHTTPServer,), attrs)
        self.server = server_cls((host, port), handler)
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Receiver:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="receiver", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self, path_prefix: str = "") -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(r) for r in self.state.received if r["path"].startswith(path_prefix)]

    def clear(self) -> None:
        with self.state.lock:
            self.state.received.clear()

    def fail(self, path_prefix: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
        with self.state.lock:
            self.state.fail_rules.append(
                {
                    "path_prefix": path_prefix,
                    "status": status,
                    "remaining": count,
                    "retry_after": retry_after,
                    "method": None,
                }
            )


class Handler(BaseHTTPRequestHandler):
    """Routes one request; the state is bound on a subclass by :class:`Receiver`."""

    state: State
    verbose = False
    protocol_version = "HTTP/1.1"
    server_version = "sandbox-receiver/1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- plumbing ----------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.payload)

    def _handle(self) -> None:
        received_at = now_iso()
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(Response(400, "bad request body"))
            return
        if raw is None:
            self.close_connection = True
            self._send(_json_error(413, "Request body too large"))
            return

        if path.startswith("/_"):
            self._send(self._control(path, query, raw))
            return

        record = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": mask_headers(list(self.headers.items())),
            "body": mask_body(parse_body(raw)),
            "received_at": received_at,
            "status": None,
        }
        with self.state.lock:
            self.state.received.append(record)

        rule = self.state.take_failure(self.command, path)
        if rule is not None:
            headers = {}
            if rule.get("retry_after") is not None:
                headers["Retry-After"] = str(rule["retry_after"])
            response = Response(
                rule["status"], {"error": "injected failure", "status": rule["status"]}, headers
            )
        else:
            try:
                response = self._route(path, raw)
            except Exception as exc:  # a bug here must still answer, and show in the record
                response = _json_error(500, f"receiver error: {type(exc).__name__}: {exc}")
        with self.state.lock:
            record["status"] = response.status
        self._send(response)

    def _json(self, raw: bytes) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(raw.decode("utf-8"))

    # -- control -----------------------------------------------------------------------------

    def _control(self, path: str, query: str, raw: bytes) -> Response:
        method = self.command
        st = self.state
        if path == "/_health" and method == "GET":
            return Response(200, {"ok": True})
        if path == "/_received":
            if method == "GET":
                prefix = parse_qs(query).get("path_prefix", [""])[0]
                with st.lock:
                    items = [r for r in st.received if r["path"].startswith(prefix)]
                    return Response(200, items)
            if method == "DELETE":
                with st.lock:
                    n = len(st.received)
                    st.received.clear()
                return Response(200, {"cleared": n})
        if path == "/_fail":
            if method == "POST":
                try:
                    spec = self._json(raw)
                    rule = {
                        "path_prefix": str(spec.get("path_prefix", "/")),
                        "status": int(spec["status"]),
                        "remaining": int(spec.get("count", 1)),
                        "retry_after": spec.get("retry_after"),
                        "method": (spec.get("method") or None) and str(spec["method"]).upper(),
                    }
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    return _json_error(400, f"expected {{path_prefix, status, count?, retry_after?}}: {exc}")
                if not 400 <= rule["status"] <= 599 or rule["remaining"] == 0 or rule["remaining"] < -1:
                    return _json_error(400, "status must be 400-599 and count positive or -1")
                with st.lock:
                    st.fail_rules.append(rule)
                    return Response(200, {"rules": [dict(r) for r in st.fail_rules]})
            if method == "GET":
                with st.lock:
                    return Response(200, {"rules": [dict(r) for r in st.fail_rules]})
            if method == "DELETE":
                with st.lock:
                    n = len(st.fail_rules)
                    st.fail_rules.clear()
                return Response(200, {"cleared": n})
        if path == "/_pagerduty/alerts" and method == "GET":
            with st.lock:
                return Response(200, json.loads(json.dumps(st.pd_alerts)))
        if path == "/_state" and method == "DELETE":
            with st.lock:
                st.pd_alerts.clear()
                st.pages.clear()
            return Response(200, {"cleared": True})
        return _json_error(404, "Not found")

    # -- emulated services -------------------------------------------------------------------

    def _route(self, path: str, raw: bytes) -> Response:
        method = self.command
        segs = [s for s in path.split("/") if s]
        if segs[:1] == ["slack"]:
            return self._slack(raw) if method == "POST" else _json_error(405, "Method not allowed")
        if path in ("/v2/enqueue", "/v2/enqueue/"):
            return self._pd_event(raw) if method == "POST" else _json_error(405, "Method not allowed")
        if path in ("/v2/change/enqueue", "/v2/change/enqueue/"):
            return self._pd_change(raw) if method == "POST" else _json_error(405, "Method not allowed")
        if segs[:1] in (["hooks"], ["alertmanager"]):
            return (
                Response(200, {"ok": True})
                if method in ("POST", "PUT")
                else _json_error(405, "Method not allowed")
            )
        if len(segs) >= 4 and segs[0] == "v1" and segs[1] == "pages":
            return self._statuspage(segs[2], segs[3:], raw)
        return _json_error(404, "Not found")

    def _slack(self, raw: bytes) -> Response:
        ctype = self.headers.get("Content-Type", "")
        try:
            if "application/x-www-form-urlencoded" in ctype:
                form = parse_qs(raw.decode("utf-8"))
                body = json.loads(form["payload"][0])
            else:
                body = self._json(raw)
        except (ValueError, KeyError, IndexError):
            return Response(400, "invalid_payload")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return Response(400, "invalid_payload")
        return Response(200, "ok")

    @staticmethod
    def _pd_invalid(errors: list[str]) -> Response:
        return Response(
            400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        )

    def _pd_event(self, raw: bytes) -> Response:
        try:
            event = self._json(raw)
        except ValueError:
            return self._pd_invalid(["Event object is not valid JSON"])
        if not isinstance(event, dict):
            return self._pd_invalid(["Event object must be a JSON object"])
        errors = []
        routing_key = event.get("routing_key")
        if not isinstance(routing_key, str) or not routing_key.strip():
            errors.append("'routing_key' is missing or blank")
        action = event.get("event_action")
        if action not in PD_ACTIONS:
            errors.append("'event_action' is missing or invalid (expected trigger, acknowledge or resolve)")
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        payload = event.get("payload")
        if action == "trigger":
            if not isinstance(payload, dict):
                errors.append("'payload' is missing or not an object")
                payload = {}
            for field in ("summary", "source"):
                value = payload.get(field)
                if not isinstance(value, str) or not value.strip():
                    errors.append(f"'payload.{field}' is missing or blank")
            if isinstance(payload.get("summary"), str) and len(payload["summary"]) > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append(
                    "'payload.severity' is missing or invalid (expected critical, error, warning or info)"
                )
        elif action in ("acknowledge", "resolve") and not dedup_key:
            errors.append(f"'dedup_key' is required for {action} events")
        if errors:
            return self._pd_invalid(errors)
        if not dedup_key:
            dedup_key = secrets.token_hex(16)
        with self.state.lock:
            alert = self.state.pd_alerts.setdefault(dedup_key, {"status": None, "events": 0})
            alert["events"] += 1
            alert["status"] = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[
                action
            ]
            if action == "trigger":
                for field in ("summary", "source", "severity"):
                    alert[field] = payload.get(field)
        return Response(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})

    def _pd_change(self, raw: bytes) -> Response:
        try:
            event = self._json(raw)
        except ValueError:
            return self._pd_invalid(["Event object is not valid JSON"])
        errors = []
        if not isinstance(event, dict):
            return self._pd_invalid(["Event object must be a JSON object"])
        if not isinstance(event.get("routing_key"), str) or not event["routing_key"].strip():
            errors.append("'routing_key' is missing or blank")
        payload = event.get("payload")
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("summary"), str)
            or not payload["summary"]
        ):
            errors.append("'payload.summary' is missing or blank")
        if errors:
            return self._pd_invalid(errors)
        return Response(202, {"status": "success", "message": "Change event processed"})

    # -- statuspage ----------------------------------------------------------------------------

    def _statuspage(self, page_id: str, rest: list[str], raw: bytes) -> Response:
        auth = self.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "oauth" or not key.strip():
            return _json_error(401, "Could not authenticate")
        method = self.command
        body: dict[str, Any] = {}
        if method in ("POST", "PATCH", "PUT"):
            try:
                parsed = self._json(raw) if raw else {}
            except ValueError:
                return _json_error(400, "Body is not valid JSON")
            if not isinstance(parsed, dict):
                return _json_error(400, "Body must be a JSON object")
            body = parsed
        st = self.state
        with st.lock:
            page = st.page(page_id)
            kind = rest[0]
            if kind == "incidents":
                if len(rest) == 1:
                    if method == "GET":
                        return Response(
                            200, [self._sp_view(page_id, page["incidents"][i]) for i in page["order"]]
                        )
                    if method == "POST":
                        return self._sp_create(page_id, body)
                elif len(rest) == 2 and rest[1] == "unresolved" and method == "GET":
                    items = [page["incidents"][i] for i in page["order"]]
                    return Response(
                        200, [self._sp_view(page_id, i) for i in items if i["status"] in SP_UNRESOLVED]
                    )
                elif len(rest) == 2:
                    incident = page["incidents"].get(rest[1])
                    if incident is None:
                        return _json_error(404, "Not found")
                    if method == "GET":
                        return Response(200, self._sp_view(page_id, incident))
                    if method in ("PATCH", "PUT"):
                        return self._sp_update(page_id, incident, body)
                    if method == "DELETE":
                        del page["incidents"][rest[1]]
                        page["order"].remove(rest[1])
                        return Response(200, self._sp_view(page_id, incident))
                if len(rest) <= 2:
                    return _json_error(405, "Method not allowed")
                return _json_error(404, "Not found")
            if kind == "components":
                if len(rest) == 1 and method == "GET":
                    return Response(200, [dict(c) for c in page["components"].values()])
                if len(rest) == 2:
                    if method == "GET":
                        comp = page["components"].get(rest[1])
                        return Response(200, dict(comp)) if comp else _json_error(404, "Not found")
                    if method in ("PATCH", "PUT"):
                        spec = body.get("component")
                        if not isinstance(spec, dict):
                            return _json_error(422, "component is missing")
                        status = spec.get("status")
                        if status is not None and status not in SP_COMPONENT_STATUSES:
                            return _json_error(422, f"Status is invalid: {status!r}")
                        comp = st.component(page_id, rest[1])
                        for field in ("status", "name", "description"):
                            if field in spec:
                                comp[field] = spec[field]
                        comp["updated_at"] = now_iso()
                        return Response(200, dict(comp))
        return _json_error(404, "Not found")

    def _sp_view(self, page_id: str, incident: dict[str, Any]) -> dict[str, Any]:
        """A snapshot of an incident, with its affected components' current objects."""
        view = {k: v for k, v in incident.items() if k != "_component_ids"}
        view["components"] = [self.state.component(page_id, cid) for cid in incident["_component_ids"]]
        return json.loads(json.dumps(view))

    @staticmethod
    def _sp_check(spec: dict[str, Any]) -> str | None:
        """Validates an incident spec; returns an error message, or None when it is valid."""
        status = spec.get("status")
        if status is not None and status not in SP_INCIDENT_STATUSES:
            return f"Status is invalid: {status!r}"
        comps = spec.get("components")
        if comps is not None and (
            not isinstance(comps, dict) or any(s not in SP_COMPONENT_STATUSES for s in comps.values())
        ):
            return "components must map component ids to a component status"
        ids = spec.get("component_ids")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            return "component_ids must be a list of ids"
        impact = spec.get("impact_override")
        if impact is not None and impact not in SP_IMPACT_ORDER:
            return f"impact_override is invalid: {impact!r}"
        return None

    def _sp_write(self, page_id: str, incident: dict[str, Any], spec: dict[str, Any], created: bool) -> None:
        st = self.state
        ts = now_iso()
        old_status = incident.get("status")
        if "name" in spec:
            incident["name"] = spec["name"]
        if spec.get("status"):
            incident["status"] = spec["status"]
        if "impact_override" in spec:
            incident["impact_override"] = spec["impact_override"]
        if "metadata" in spec and isinstance(spec["metadata"], dict):
            incident["metadata"] = spec["metadata"]
        affected = []
        ids = list(incident["_component_ids"])
        for cid in spec.get("component_ids") or []:
            if cid not in ids:
                ids.append(cid)
        for cid, new_status in (spec.get("components") or {}).items():
            if cid not in ids:
                ids.append(cid)
            comp = st.component(page_id, cid)
            if comp["status"] != new_status:
                affected.append(
                    {
                        "code": cid,
                        "name": comp["name"],
                        "old_status": comp["status"],
                        "new_status": new_status,
                    }
                )
                comp["status"] = new_status
                comp["updated_at"] = ts
        for cid in ids:
            st.component(page_id, cid)
        incident["_component_ids"] = ids
        incident["components"] = [dict(st.component(page_id, cid)) for cid in ids]
        worst = "none"
        for comp in incident["components"]:
            level = SP_IMPACT.get(comp["status"], "none")
            if SP_IMPACT_ORDER.index(level) > SP_IMPACT_ORDER.index(worst):
                worst = level
        incident["impact"] = incident.get("impact_override") or worst
        if incident["status"] == "monitoring" and old_status != "monitoring":
            incident["monitoring_at"] = ts
        if incident["status"] in ("resolved", "completed") and not incident.get("resolved_at"):
            incident["resolved_at"] = ts
        if incident["status"] not in ("resolved", "completed"):
            incident["resolved_at"] = None
        incident["updated_at"] = ts
        body = spec.get("body")
        if created or body or incident["status"] != old_status or affected:
            update = {
                "id": _new_id(),
                "incident_id": incident["id"],
                "status": incident["status"],
                "body": body or "",
                "created_at": ts,
                "updated_at": ts,
                "display_at": ts,
                "affected_components": affected,
                "deliver_notifications": bool(spec.get("deliver_notifications", True)),
            }
            incident["incident_updates"].insert(0, update)

    def _sp_create(self, page_id: str, body: dict[str, Any]) -> Response:
        spec = body.get("incident")
        if not isinstance(spec, dict):
            return _json_error(422, "incident is missing")
        if not isinstance(spec.get("name"), str) or not spec["name"].strip():
            return _json_error(422, "Name can't be blank")
        spec = {"status": "investigating", **spec}
        error = self._sp_check(spec)
        if error:
            return _json_error(422, error)
        ts = now_iso()
        incident_id = _new_id()
        incident: dict[str, Any] = {
            "id": incident_id,
            "page_id": page_id,
            "name": spec["name"],
            "status": None,
            "impact": "none",
            "impact_override": None,
            "shortlink": f"https://stspg.io/{_new_id(7)}",
            "created_at": ts,
            "updated_at": ts,
            "started_at": ts,
            "monitoring_at": None,
            "resolved_at": None,
            "postmortem_body": None,
            "metadata": {},
            "components": [],
            "incident_updates": [],
            "_component_ids": [],
        }
        self._sp_write(page_id, incident, spec, created=True)
        page = self.state.page(page_id)
        page["incidents"][incident_id] = incident
        page["order"].insert(0, incident_id)
        return Response(201, self._sp_view(page_id, incident))

    def _sp_update(self, page_id: str, incident: dict[str, Any], body: dict[str, Any]) -> Response:
        spec = body.get("incident")
        if not isinstance(spec, dict):
            return _json_error(422, "incident is missing")
        error = self._sp_check(spec)
        if error:
            return _json_error(422, error)
        self._sp_write(page_id, incident, spec, created=False)
        return Response(200, self._sp_view(page_id, incident))


def _write_port_file(path: Path, port: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.receiver",
        description="Stand-in for Slack, PagerDuty and Statuspage that records what it receives.",
    )
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--verbose", action="store_true", help="log each request on stderr")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        receiver = Receiver(args.host, args.port, verbose=args.verbose)
    except (ValueError, OSError) as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run on the serving thread.
        threading.Thread(target=receiver.server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.port_file:
        _write_port_file(args.port_file, receiver.port)
    print(f"listening on {receiver.url}", flush=True)
    try:
        receiver.serve_forever()
    finally:
        receiver.server.server_close()
        if args.port_file:
            args.port_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
