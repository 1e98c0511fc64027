"""The incident desk's pieces that need no platform: folding entries, matchers and durations, the
channels' payloads, back-off, and templates a user overrides."""

from __future__ import annotations

import datetime
import http.server
import threading

import pytest

from ansible_collections.emergency.ops.plugins.module_utils import channels, silences
from ansible_collections.emergency.ops.plugins.module_utils.incident_record import fold
from driver.desk import Desk, Policy


def entry(kind, at, **fields):
    return {"incident": "INC-1", "kind": kind, "at": at, "by": fields.pop("by", "alice"), **fields}


def test_fold_keeps_the_first_open_and_each_milestone():
    state = fold(
        [
            entry("opened", "2026-12-04T03:00:00.000Z", title="api down", severity="P1", services=["api"]),
            entry("opened", "2026-12-04T03:00:01.000Z", title="re-run", severity="P3", by="bob"),
            entry("status", "2026-12-04T03:04:00.000Z", status="identified", message="bad release"),
            entry(
                "procedure",
                "2026-12-04T03:06:00.000Z",
                event="finished",
                procedure="rollback",
                status="succeeded",
                changed=True,
                services=["indexer"],
            ),
            entry("silence", "2026-12-04T03:07:00.000Z", action="created", silence_id="s1"),
            entry("silence", "2026-12-04T03:08:00.000Z", action="expired", silence_id="s1"),
            entry("resolved", "2026-12-04T03:20:00.000Z", message="ok", root_cause="1.5.0"),
        ]
    )
    assert (state["title"], state["severity"], state["status"]) == ("api down", "P1", "resolved")
    assert state["acknowledged_at"] == "2026-12-04T03:04:00.000Z"
    assert state["mitigated_at"] == "2026-12-04T03:06:00.000Z"  # the rollback that changed the platform
    assert state["resolved_at"] == "2026-12-04T03:20:00.000Z"
    assert state["services"] == ["api", "indexer"]
    assert state["silences"] == []
    assert state["operators"] == ["alice", "bob"]
    assert state["last_action"] == "rollback succeeded"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("severity=warning", {"name": "severity", "value": "warning", "isRegex": False, "isEqual": True}),
        ("team!=db", {"name": "team", "value": "db", "isRegex": False, "isEqual": False}),
        ("alertname=~Kube.*", {"name": "alertname", "value": "Kube.*", "isRegex": True, "isEqual": True}),
        ("job!~node|blackbox", {"name": "job", "value": "node|blackbox", "isRegex": True, "isEqual": False}),
    ],
)
def test_matchers_as_alertmanager_takes_them(text, expected):
    assert silences.parse_matcher(text) == expected


@pytest.mark.parametrize("text", ["severity", "=x", "a=", "1a=b", "a b=c"])
def test_malformed_matchers_are_refused(text):
    with pytest.raises(ValueError):
        silences.parse_matcher(text)


def test_durations():
    assert silences.parse_duration("1h") == datetime.timedelta(hours=1)
    assert silences.parse_duration("2h30m") == datetime.timedelta(hours=2, minutes=30)
    assert silences.parse_duration("1d") == datetime.timedelta(days=1)
    for bad in ("", "soon", "0m", "1w", "-1h"):
        with pytest.raises(ValueError):
            silences.parse_duration(bad)


def message(**overrides):
    return {
        "incident": "INC-1",
        "step": "opened",
        "text": "api down\nmore",
        "summary": "api down",
        "severity": "P0",
        "status": "investigating",
        "title": "api down",
        "services": ["api", "crank"],
        "source": "matchbook",
        "action": "trigger",
        **overrides,
    }


def test_pagerduty_payload_uses_the_incident_as_dedup_key():
    method, url, body, _ = channels.payload(
        {"kind": "pagerduty", "url": "https://events.example/", "routing_key": "R"}, message()
    )
    assert (method, url) == ("POST", "https://events.example/v2/enqueue")
    assert body["dedup_key"] == "INC-1" and body["event_action"] == "trigger"
    assert body["payload"]["severity"] == "critical" and body["payload"]["component"] == "api,crank"
    _, _, resolve, _ = channels.payload(
        {"kind": "pagerduty", "url": "https://events.example", "routing_key": "R"}, message(action="resolve")
    )
    assert resolve == {"routing_key": "R", "event_action": "resolve", "dedup_key": "INC-1"}


def test_statuspage_creates_once_then_updates_its_incident():
    channel = {
        "kind": "statuspage",
        "url": "https://sp.example",
        "page_id": "p1",
        "api_key": "K",
        "components": {"api": "c-api"},
    }
    method, url, body, headers = channels.payload(channel, message())
    assert (method, url) == ("POST", "https://sp.example/v1/pages/p1/incidents")
    assert body["incident"]["components"] == {"c-api": "major_outage"}
    assert body["incident"]["name"] == "api down" and headers == {"Authorization": "OAuth K"}
    method, url, body, _ = channels.payload(channel, message(external_id="x1", status="resolved"))
    assert (method, url) == ("PATCH", "https://sp.example/v1/pages/p1/incidents/x1")
    assert body["incident"]["components"] == {"c-api": "operational"} and "name" not in body["incident"]


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429 with Retry-After: 0, then 503, then 200; counts requests."""

    answers = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_retries_429_and_5xx_but_not_other_4xx():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    waits = []
    try:
        Flaky.answers[:] = [429, 503]
        outcome, _ = channels.request("POST", url, {}, {}, sleep=waits.append)
        assert (outcome["status"], outcome["attempts"]) == ("sent", 3)
        assert waits == [0.0, 1.0]  # Retry-After: 0, then the back-off's second step
        Flaky.answers[:] = [404]
        outcome, _ = channels.request("POST", url, {}, {}, sleep=waits.append)
        assert (outcome["status"], outcome["attempts"], outcome["http_status"]) == ("failed", 1, 404)
        Flaky.answers[:] = [503] * 10
        outcome, _ = channels.request("POST", url, {}, {}, attempts=3, sleep=lambda s: None)
        assert (outcome["status"], outcome["attempts"], outcome["error"]) == ("failed", 3, "HTTP 503")
        assert url not in str(outcome)
    finally:
        server.shutdown()


def test_a_template_of_the_inventory_replaces_the_shipped_one(tmp_path):
    (tmp_path / "opened.j2").write_text("[{{ severity }}] {{ title }} at {{ platform }}")
    policy = Policy("matchbook", {}, {}, {}, [], {}, str(tmp_path), {}, "", {})
    desk = Desk.__new__(Desk)  # rendering needs the policy only
    desk.policy = policy
    state = {"id": "INC-1", "title": "api down", "severity": "P1", "services": []}
    assert desk.render("opened", state) == "[P1] api down at matchbook"
    assert "INCIDENT RESOLVED" in desk.render("resolved", dict(state, status="resolved"))
