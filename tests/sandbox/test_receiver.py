"""The receiver over real HTTP on 127.0.0.1: each stand-in API, the record, failure injection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from sandbox.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method, url, body=None, headers=None, raw=None):
    """(status, headers, body) of one request; the body parsed as JSON when it is JSON."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with OPENER.open(req, timeout=5) as resp:
            status, rheaders, payload = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, rheaders, payload = exc.code, exc.headers, exc.read()
    text = payload.decode()
    try:
        return status, rheaders, json.loads(text)
    except ValueError:
        return status, rheaders, text


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


def test_slack_webhook_answers_ok_and_rejects_bad_payloads(rx):
    url = rx.url + "/slack/services/T000/B000/XXXX"
    status, headers, body = call("POST", url, {"text": "db restored"})
    assert (status, body) == (200, "ok")
    assert headers["Content-Type"].startswith("text/plain")
    assert call("POST", url, {"blocks": [{"type": "section"}]})[::2] == (200, "ok")
    form = urllib.parse.urlencode({"payload": json.dumps({"text": "as a form"})}).encode()
    assert (
        call("POST", url, raw=form, headers={"Content-Type": "application/x-www-form-urlencoded"})[2] == "ok"
    )
    assert call("POST", url, raw=b"{not json", headers={"Content-Type": "application/json"})[::2] == (
        400,
        "invalid_payload",
    )
    assert call("POST", url, {"username": "bot"})[::2] == (400, "invalid_payload")
    assert call("POST", url, {"text": ""})[::2] == (400, "invalid_payload")


def test_pagerduty_events_v2(rx):
    url = rx.url + "/v2/enqueue"
    trigger = {
        "routing_key": "R0UT1NGKEY",
        "event_action": "trigger",
        "payload": {"summary": "db down", "source": "db-0", "severity": "critical"},
    }
    status, _, body = call("POST", url, trigger)
    assert status == 202
    assert body["status"] == "success" and body["message"] == "Event processed"
    generated = body["dedup_key"]
    assert len(generated) == 32

    status, _, body = call("POST", url, {**trigger, "dedup_key": "inc-42"})
    assert (status, body["dedup_key"]) == (202, "inc-42")
    ack = {"routing_key": "R0UT1NGKEY", "event_action": "acknowledge", "dedup_key": "inc-42"}
    assert call("POST", url, ack)[0] == 202
    assert call("POST", url, {**ack, "event_action": "resolve"})[0] == 202
    alerts = call("GET", rx.url + "/_pagerduty/alerts")[2]
    assert alerts["inc-42"]["status"] == "resolved" and alerts["inc-42"]["events"] == 3
    assert alerts[generated]["status"] == "triggered"


@pytest.mark.parametrize(
    ("event", "error_word"),
    [
        (
            {"event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": "info"}},
            "routing_key",
        ),
        ({"routing_key": "k", "event_action": "explode"}, "event_action"),
        ({"routing_key": "k", "event_action": "trigger"}, "payload"),
        (
            {"routing_key": "k", "event_action": "trigger", "payload": {"source": "h", "severity": "info"}},
            "summary",
        ),
        (
            {"routing_key": "k", "event_action": "trigger", "payload": {"summary": "s", "severity": "info"}},
            "source",
        ),
        (
            {
                "routing_key": "k",
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "x"},
            },
            "severity",
        ),
        ({"routing_key": "k", "event_action": "resolve"}, "dedup_key"),
    ],
)
def test_pagerduty_rejects_invalid_events(rx, event, error_word):
    status, _, body = call("POST", rx.url + "/v2/enqueue", event)
    assert status == 400
    assert body["status"] == "invalid event" and body["message"] == "Event object is invalid"
    assert any(error_word in e for e in body["errors"]), body["errors"]


def test_pagerduty_rejects_malformed_json(rx):
    status, _, body = call(
        "POST", rx.url + "/v2/enqueue", raw=b"nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["status"] == "invalid event"


def test_statuspage_incident_lifecycle(rx):
    base = rx.url + "/v1/pages/pg1"
    auth = {"Authorization": "OAuth sp-api-key"}
    create = {
        "incident": {
            "name": "Orders API degraded",
            "status": "investigating",
            "body": "We are looking into it.",
            "components": {"cmp-orders": "partial_outage"},
        }
    }
    status, _, inc = call("POST", base + "/incidents", create, auth)
    assert status == 201
    for key in (
        "id",
        "name",
        "status",
        "shortlink",
        "created_at",
        "updated_at",
        "incident_updates",
        "components",
    ):
        assert key in inc
    assert inc["name"] == "Orders API degraded" and inc["status"] == "investigating"
    assert inc["impact"] == "major"
    assert [c["id"] for c in inc["components"]] == ["cmp-orders"]
    assert inc["components"][0]["status"] == "partial_outage"
    assert len(inc["incident_updates"]) == 1
    assert inc["incident_updates"][0]["body"] == "We are looking into it."
    assert inc["incident_updates"][0]["affected_components"][0]["new_status"] == "partial_outage"

    patch = {
        "incident": {"status": "resolved", "body": "Fixed.", "components": {"cmp-orders": "operational"}}
    }
    status, _, updated = call("PATCH", f"{base}/incidents/{inc['id']}", patch, auth)
    assert status == 200
    assert updated["status"] == "resolved" and updated["resolved_at"]
    assert [u["status"] for u in updated["incident_updates"]] == ["resolved", "investigating"]
    assert updated["incident_updates"][0]["body"] == "Fixed."
    assert updated["components"][0]["status"] == "operational"

    status, _, got = call("GET", f"{base}/incidents/{inc['id']}", headers=auth)
    assert status == 200 and got["status"] == "resolved" and len(got["incident_updates"]) == 2
    status, _, second = call("POST", base + "/incidents", {"incident": {"name": "Second"}}, auth)
    assert status == 201 and second["status"] == "investigating"
    status, _, listed = call("GET", base + "/incidents", headers=auth)
    assert status == 200 and [i["id"] for i in listed] == [second["id"], inc["id"]]
    assert [i["id"] for i in call("GET", base + "/incidents/unresolved", headers=auth)[2]] == [second["id"]]
    assert (
        call("GET", "{}/incidents/{}".format(rx.url + "/v1/pages/other", inc["id"]), headers=auth)[0] == 404
    )


def test_statuspage_components_errors_and_auth(rx):
    base = rx.url + "/v1/pages/pg1"
    auth = {"Authorization": "OAuth sp-api-key"}
    status, _, comp = call(
        "PATCH", base + "/components/cmp-db", {"component": {"status": "major_outage"}}, auth
    )
    assert status == 200 and comp["id"] == "cmp-db" and comp["status"] == "major_outage"
    assert call("GET", base + "/components", headers=auth)[2][0]["status"] == "major_outage"
    status, _, inc = call(
        "POST", base + "/incidents", {"incident": {"name": "DB", "component_ids": ["cmp-db"]}}, auth
    )
    assert status == 201 and inc["impact"] == "critical"
    assert [(c["id"], c["status"]) for c in inc["components"]] == [("cmp-db", "major_outage")]
    assert call("PATCH", base + "/components/cmp-db", {"component": {"status": "on_fire"}}, auth)[0] == 422
    assert call("GET", base + "/incidents/doesnotexist", headers=auth)[0] == 404
    assert (
        call("PATCH", base + "/incidents/doesnotexist", {"incident": {"status": "resolved"}}, auth)[0] == 404
    )
    assert call("POST", base + "/incidents", {"incident": {"name": "x", "status": "bogus"}}, auth)[0] == 422
    assert call("POST", base + "/incidents", {"incident": {"status": "investigating"}}, auth)[0] == 422

    for headers in ({}, {"Authorization": "Bearer sp-api-key"}, {"Authorization": "OAuth "}):
        status, _, body = call("POST", base + "/incidents", {"incident": {"name": "x"}}, headers)
        assert status == 401, headers
        assert body == {"error": "Could not authenticate"}
    assert call("GET", base + "/incidents")[0] == 401
    assert call("PATCH", base + "/components/cmp-db", {"component": {"status": "operational"}})[0] == 401


def test_generic_hook_and_unknown_paths(rx):
    assert call("POST", rx.url + "/hooks/anything/at/all", {"event": "x"})[::2] == (200, {"ok": True})
    assert call("POST", rx.url + "/hooks/plain", raw=b"not json")[::2] == (200, {"ok": True})
    assert call("GET", rx.url + "/nowhere")[0] == 404


def test_alertmanager_webhooks_are_accepted_and_recorded(rx):
    notification = {"version": "4", "status": "firing", "alerts": [{"labels": {"alertname": "X"}}]}
    assert call("POST", rx.url + "/alertmanager", notification)[::2] == (200, {"ok": True})
    assert rx.received("/alertmanager")[0]["body"]["alerts"][0]["labels"]["alertname"] == "X"


def test_received_lists_requests_in_order_with_credentials_masked(rx):
    call("POST", rx.url + "/slack/services/T/B/X", {"text": "one"}, {"X-Slack-Token": "xoxb-secret"})
    call(
        "POST",
        rx.url + "/v2/enqueue",
        {
            "routing_key": "R0UT1NGKEY",
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "info"},
        },
        {"X-Api-Key": "k1", "X-Request-Id": "req-7"},
    )
    call(
        "POST",
        rx.url + "/v1/pages/pg/incidents",
        {"incident": {"name": "n"}},
        {"Authorization": "OAuth sp-secret"},
    )
    call("POST", rx.url + "/hooks/x?source=test", raw=b"plain text")

    status, _, got = call("GET", rx.url + "/_received")
    assert status == 200
    assert [(r["method"], r["path"], r["status"]) for r in got] == [
        ("POST", "/slack/services/T/B/X", 200),
        ("POST", "/v2/enqueue", 202),
        ("POST", "/v1/pages/pg/incidents", 201),
        ("POST", "/hooks/x", 200),
    ]
    assert got[0]["headers"]["X-Slack-Token"] == "***"
    assert got[0]["body"] == {"text": "one"}
    assert got[1]["headers"]["X-Api-Key"] == "***"
    assert got[1]["headers"]["X-Request-Id"] == "req-7"
    assert got[1]["body"]["routing_key"] == "***"
    assert got[1]["body"]["payload"]["summary"] == "s"
    assert got[2]["headers"]["Authorization"] == "***"
    assert got[3]["body"] == "plain text" and got[3]["query"] == "source=test"
    dump = json.dumps(got)
    for secret in ("xoxb-secret", "R0UT1NGKEY", "sp-secret", "k1"):
        assert secret not in dump
    stamps = [r["received_at"] for r in got]
    assert stamps == sorted(stamps)
    assert all(len(s) == len("2026-01-01T00:00:00.000Z") and s.endswith("Z") for s in stamps)

    only_pd = call("GET", rx.url + "/_received?path_prefix=/v2/")[2]
    assert [r["path"] for r in only_pd] == ["/v2/enqueue"]
    assert rx.received("/hooks/") == [got[3]]

    assert call("DELETE", rx.url + "/_received")[::2] == (200, {"cleared": 4})
    assert call("GET", rx.url + "/_received")[2] == []


def test_failure_injection_answers_then_recovers(rx):
    event = {
        "routing_key": "k",
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "h", "severity": "info"},
    }
    rule = {"path_prefix": "/v2/enqueue", "status": 429, "count": 2, "retry_after": 1}
    assert call("POST", rx.url + "/_fail", rule)[0] == 200
    # Another prefix is unaffected.
    assert call("POST", rx.url + "/hooks/x", {"a": 1})[0] == 200
    for _ in range(2):
        status, headers, _ = call("POST", rx.url + "/v2/enqueue", event)
        assert status == 429
        assert headers["Retry-After"] == "1"
    assert call("POST", rx.url + "/v2/enqueue", event)[0] == 202
    assert [r["status"] for r in rx.received("/v2/")] == [429, 429, 202]

    assert call("POST", rx.url + "/_fail", {"path_prefix": "/slack/", "status": 503, "count": -1})[0] == 200
    for _ in range(3):
        status, headers, _ = call("POST", rx.url + "/slack/a", {"text": "x"})
        assert status == 503 and "Retry-After" not in headers
    assert call("DELETE", rx.url + "/_fail")[2] == {"cleared": 1}
    assert call("POST", rx.url + "/slack/a", {"text": "x"})[0] == 200
    assert call("POST", rx.url + "/_fail", {"path_prefix": "/x", "status": 200})[0] == 400


def test_command_line_port_file_and_sigterm(tmp_path):
    port_file = tmp_path / "receiver.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.receiver", "--port", "0", "--port-file", str(port_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stdout.readline().strip()
        port = int(port_file.read_text())
        assert line == f"listening on http://127.0.0.1:{port}"
        assert call("POST", f"http://127.0.0.1:{port}/hooks/cli", {"x": 1})[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not port_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_refuses_a_non_loopback_address():
    with pytest.raises(ValueError, match="loopback"):
        Receiver(host="0.0.0.0")
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.receiver", "--port", "0", "--host", "0.0.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2 and "loopback" in result.stderr


def test_concurrent_requests_are_all_recorded(rx):
    def send(n):
        call("POST", f"{rx.url}/hooks/c{n}", {"n": n})

    threads = [threading.Thread(target=send, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    got = rx.received("/hooks/")
    assert sorted(r["body"]["n"] for r in got) == list(range(40))
    assert all(r["status"] == 200 for r in got)
