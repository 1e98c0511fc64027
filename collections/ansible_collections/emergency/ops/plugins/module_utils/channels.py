# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Notification channels: a Slack incoming webhook, PagerDuty Events API v2, Statuspage API v1 and a
generic JSON webhook, each sent with retries.

``deliver(channel, message)`` sends one message and returns what became of it; it never raises for
the channel's own failures, because a channel that is down must not stop a recovery. 429 and 5xx
answers (and connection errors) are retried with exponential back-off, honouring ``Retry-After``,
within the channel's time budget; any other 4xx is final. The outcome names the channel and the HTTP
status, never its URL or token (a Slack webhook URL is a credential).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import email.utils
import json
import socket
import time
import urllib.error

from ansible.module_utils.urls import open_url

KINDS = ("slack", "pagerduty", "statuspage", "webhook")
# PagerDuty's payload.severity per incident severity.
PAGERDUTY_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}
# Statuspage's component status per incident severity while it is open.
COMPONENT_STATUS = {
    "P0": "major_outage",
    "P1": "partial_outage",
    "P2": "degraded_performance",
    "P3": "degraded_performance",
}
RETRIED = (429, 500, 502, 503, 504)


class Outcome(dict):
    """``{"status": "sent"|"failed", "attempts": n, "http_status": s, "error": text, ...}``."""


def _retry_after(headers, fallback):
    value = (headers or {}).get("Retry-After") if headers else None
    if not value:
        return fallback
    try:
        return max(0.0, float(value))
    except ValueError:
        try:  # an HTTP date
            moment = email.utils.parsedate_to_datetime(value)
            return max(0.0, moment.timestamp() - time.time())
        except (TypeError, ValueError):
            return fallback


def request(method, url, body, headers, budget=20.0, attempts=5, backoff=0.5, timeout=5.0, sleep=time.sleep):
    """Sends one HTTP request with retries. Returns ``(outcome, parsed answer or None)``."""
    deadline = time.monotonic() + budget
    data = json.dumps(body).encode() if body is not None else None
    wanted = dict({"Content-Type": "application/json", "Accept": "application/json"}, **(headers or {}))
    last_status, last_error, delay = None, None, backoff
    for attempt in range(1, attempts + 1):
        wait = delay
        try:
            left = min(timeout, max(0.5, deadline - time.monotonic()))
            with open_url(
                url, data=data, method=method, headers=wanted, timeout=left, follow_redirects="none"
            ) as answer:
                raw = answer.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
                return Outcome(status="sent", attempts=attempt, http_status=answer.status), parsed
        except urllib.error.HTTPError as exc:
            last_status, last_error = exc.code, "HTTP %d" % exc.code
            if exc.code not in RETRIED:
                return Outcome(
                    status="failed", attempts=attempt, http_status=exc.code, error=last_error
                ), None
            wait = _retry_after(exc.headers, delay)
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last_status, last_error = None, "unreachable (%s)" % type(reason).__name__
            wait = delay
        delay *= 2
        if attempt == attempts or time.monotonic() + wait > deadline:
            break
        sleep(wait)
    return Outcome(status="failed", attempts=attempt, http_status=last_status, error=last_error), None


def deliver(channel, message, sleep=time.sleep):
    """Sends ``message`` (see ``payload``) to ``channel`` (its settings with credentials resolved)."""
    kind = channel["kind"]
    budget = float(channel.get("budget_seconds") or 20)
    attempts = int(channel.get("attempts") or 5)
    method, url, body, headers = payload(channel, message)
    outcome, answer = request(method, url, body, headers, budget=budget, attempts=attempts, sleep=sleep)
    if kind == "statuspage" and outcome["status"] == "sent" and isinstance(answer, dict):
        outcome["external_id"] = answer.get("id")
        outcome["shortlink"] = answer.get("shortlink")
    if kind == "pagerduty" and isinstance(answer, dict):
        outcome["dedup_key"] = answer.get("dedup_key")
    return outcome


def payload(channel, message):
    """The request for one channel: ``(method, url, body, headers)``.

    ``message``: ``incident`` (id), ``step`` (opened, update, resolved, escalation, procedure, manual),
    ``text`` (the rendered template), ``summary`` (one line), ``severity``, ``status``, ``title``,
    ``services``, ``source`` (the platform), ``action`` (PagerDuty's event_action) and, for
    Statuspage, ``external_id`` (its incident, once created)."""
    kind = channel["kind"]
    if kind == "slack":
        return "POST", channel["url"], {"text": message["text"]}, {}
    if kind == "webhook":
        body = {
            k: message.get(k) for k in ("incident", "step", "severity", "status", "title", "services", "text")
        }
        headers = {"Authorization": "Bearer %s" % channel["token"]} if channel.get("token") else {}
        return "POST", channel["url"], body, headers
    if kind == "pagerduty":
        body = {
            "routing_key": channel["routing_key"],
            "event_action": message["action"],
            "dedup_key": message["incident"],
        }
        if message["action"] == "trigger":
            body["payload"] = {
                "summary": message["summary"][:1024],
                "source": message.get("source") or "emergency-ops",
                "severity": PAGERDUTY_SEVERITY.get(message.get("severity"), "error"),
                "component": ",".join(message.get("services") or []) or None,
                "group": message.get("source"),
                "class": "incident",
                "custom_details": {
                    "incident": message["incident"],
                    "severity": message.get("severity"),
                    "status": message.get("status"),
                    "text": message["text"],
                },
            }
            body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
        return "POST", channel["url"].rstrip("/") + "/v2/enqueue", body, {}
    if kind == "statuspage":
        base = "%s/v1/pages/%s/incidents" % (channel["url"].rstrip("/"), channel["page_id"])
        components = {}
        for service in message.get("services") or []:
            component = (channel.get("components") or {}).get(service)
            if component:
                components[component] = (
                    "operational"
                    if message.get("status") == "resolved"
                    else COMPONENT_STATUS.get(message.get("severity"), "degraded_performance")
                )
        incident = {"status": message.get("status") or "investigating", "body": message["text"]}
        if components:
            incident["components"] = components
            incident["component_ids"] = sorted(components)
        headers = {"Authorization": "OAuth %s" % channel["api_key"]}
        if message.get("external_id"):
            return "PATCH", "%s/%s" % (base, message["external_id"]), {"incident": incident}, headers
        incident["name"] = message.get("title") or message["summary"]
        incident["metadata"] = {"emergency_ops": {"incident": message["incident"]}}
        return "POST", base, {"incident": incident}, headers
    raise ValueError("unknown channel kind %r" % kind)
