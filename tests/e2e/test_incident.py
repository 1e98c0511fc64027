"""The incident itself, against the sandbox: its receiver (answering as Slack, PagerDuty and
Statuspage), its real Alertmanager and the shared record in its bucket.

Every assertion is on what arrived: the requests the receiver recorded, the silences Alertmanager
(and amtool) has, and the entries in the bucket, read back by a second "clone" (another operator with
its own local folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from driver import ROOT
from tests.conftest import DriverRun, incident_id
from tests.leaks import leaks


@pytest.fixture(scope="module")
def receiver(target):
    if target.status is None:
        pytest.skip("the receiver runs in the sandbox only")
    return Receiver(target.status["receiver"]["url"])


class Receiver:
    def __init__(self, url: str):
        self.url = url

    def _call(self, method: str, path: str, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"null")

    def received(self, incident: str) -> list[dict]:
        """What arrived for one incident: PagerDuty by dedup_key, the others by the incident's id in
        their text (Statuspage's PATCHes by the Statuspage incident the create returned)."""
        items = self._call("GET", "/_received")
        ours, statuspage_ids = [], set()
        for item in items:
            body = item.get("body")
            text = json.dumps(body)
            if item["path"] == "/v2/enqueue" and isinstance(body, dict):
                if body.get("dedup_key") == incident:
                    ours.append(item)
            elif item["path"].startswith("/v1/pages/") and item["method"] == "POST":
                if incident in text:
                    ours.append(item)
            elif item["path"].startswith("/v1/pages/") and item["method"] == "PATCH":
                if item["path"].rsplit("/", 1)[-1] in statuspage_ids:
                    ours.append(item)
            elif incident in text:
                ours.append(item)
            if item["path"].startswith("/v1/pages/") and item["method"] == "POST" and incident in text:
                statuspage_ids.update(self.statuspage_ids(incident))
        return ours

    def texts(self, path_prefix: str) -> list[str]:
        items = self._call("GET", f"/_received?path_prefix={path_prefix}")
        return [i["body"].get("text") for i in items if isinstance(i.get("body"), dict)]

    def statuspage_ids(self, incident: str) -> set[str]:
        incidents = self._call(
            "GET", "/v1/pages/matchbook/incidents", headers={"Authorization": "OAuth test"}
        )
        return {
            i["id"]
            for i in incidents
            if i.get("metadata", {}).get("emergency_ops", {}).get("incident") == incident
        }

    def statuspage_incident(self, incident: str) -> dict:
        (sp_id,) = self.statuspage_ids(incident)
        return self._call(
            "GET", f"/v1/pages/matchbook/incidents/{sp_id}", headers={"Authorization": "OAuth test"}
        )

    def fail(self, path_prefix: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
        self._call(
            "POST",
            "/_fail",
            {"path_prefix": path_prefix, "status": status, "count": count, "retry_after": retry_after},
        )

    def clear_failures(self) -> None:
        self._call("DELETE", "/_fail")


def by_channel(items: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"slack": [], "pagerduty": [], "statuspage": [], "webhook": []}
    for item in items:
        path = item["path"]
        key = (
            "slack"
            if path.startswith("/slack/")
            else "pagerduty"
            if path.startswith("/v2/")
            else "statuspage"
            if path.startswith("/v1/pages/")
            else "webhook"
            if path.startswith("/hooks/")
            else None
        )
        if key:
            out[key].append(item)
    return out


def incident_cmd(driver, *args, operator="alice", incidents=None):
    """As ``driver`` does, but as another operator and, with ``incidents``, from another clone's folder."""
    if incidents is None:
        return driver(*args, "--operator", operator)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "driver",
            *args,
            "--operator",
            operator,
            "--incidents-dir",
            str(incidents),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )
    result = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return DriverRun(proc.returncode, result, proc.stdout, proc.stderr)


def test_open_update_resolve_tells_every_channel_exactly_once(driver, receiver, tmp_path):
    inc = incident_id("INC-NOTIFY")
    steps = [
        (
            "incident",
            "open",
            "--title",
            "api 5xx after deploy",
            "--severity",
            "Severity 2",
            "--service",
            "api",
            "--id",
            inc,
            "--message",
            "half of the order requests fail",
        ),
        (
            "incident",
            "update",
            "--incident",
            inc,
            "--status",
            "identified",
            "--message",
            "release 1.5.0 breaks orders",
        ),
        (
            "incident",
            "update",
            "--incident",
            inc,
            "--status",
            "monitoring",
            "--message",
            "rolled back to 1.4.3",
        ),
        (
            "incident",
            "resolve",
            "--incident",
            inc,
            "--message",
            "error rate back to normal",
            "--root-cause",
            "an unindexed query in 1.5.0",
        ),
    ]
    for step in steps:
        run = incident_cmd(driver, *step)
        assert run.rc == 0, run.stderr
        assert not run.result["warnings"], run.result["warnings"]
    first = by_channel(receiver.received(inc))

    # PagerDuty: one trigger, one acknowledge, one resolve, all with the incident's id as dedup_key.
    actions = [i["body"]["event_action"] for i in first["pagerduty"]]
    assert actions == ["trigger", "acknowledge", "resolve"]
    trigger = first["pagerduty"][0]["body"]
    assert trigger["routing_key"] == "***"  # sent (the receiver masks it)
    assert trigger["dedup_key"] == inc
    assert trigger["payload"]["severity"] == "error"  # P1 (Severity 2)
    assert trigger["payload"]["source"] == "matchbook"
    assert "api 5xx after deploy" in trigger["payload"]["summary"]
    assert all(i["status"] == 202 for i in first["pagerduty"])

    # Statuspage: one incident created, then updated; its component follows the severity, then is back.
    assert [i["method"] for i in first["statuspage"]] == ["POST", "PATCH", "PATCH", "PATCH"]
    created = first["statuspage"][0]["body"]["incident"]
    assert created["name"] == "api 5xx after deploy"
    assert created["status"] == "investigating"
    assert created["components"] == {"api": "partial_outage"}
    page = receiver.statuspage_incident(inc)
    assert page["status"] == "resolved"
    assert [u["status"] for u in reversed(page["incident_updates"])] == [
        "investigating",
        "identified",
        "monitoring",
        "resolved",
    ]
    assert {c["id"]: c["status"] for c in page["components"]} == {"api": "operational"}

    # Slack and the webhook: one message per step, from the runbooks' templates.
    assert len(first["slack"]) == 4 and len(first["webhook"]) == 4
    assert "CRITICAL INCIDENT ALERT" in first["slack"][0]["body"]["text"]
    assert "INCIDENT RESOLVED" in first["slack"][3]["body"]["text"]
    assert "Root cause: an unindexed query in 1.5.0" in first["slack"][3]["body"]["text"]
    assert [i["body"]["step"] for i in first["webhook"]] == ["opened", "update", "update", "resolved"]

    # Re-running every step, from a second clone, sends nothing new and writes nothing new.
    other = tmp_path / "second-clone"
    before = incident_cmd(driver, "incident", "show", inc, operator="bob", incidents=other).result["entries"]
    for step in steps:
        run = incident_cmd(driver, *step, operator="bob", incidents=other)
        assert run.rc == 0, run.stderr
        assert {d["status"] for d in run.result["deliveries"]} <= {"already-sent", "not-applicable"}
    assert by_channel(receiver.received(inc)) == first
    shown = incident_cmd(driver, "incident", "show", inc, operator="bob", incidents=other).result
    assert len(shown["entries"]) == len(before)
    state = shown["state"]
    assert state["status"] == "resolved" and state["severity"] == "P1"
    assert state["root_cause"] == "an unindexed query in 1.5.0"
    assert state["operators"] == ["alice"]
    assert (other / inc / "record.json").stat().st_mode & 0o777 == 0o600
    listed = driver("incident", "list").result["incidents"]
    assert any(r["id"] == inc and r["status"] == "resolved" for r in listed)


def test_a_slow_channel_is_retried_and_a_dead_one_does_not_fail_the_step(driver, receiver):
    inc = incident_id("INC-RETRY")
    receiver.fail("/slack/", 429, count=1, retry_after=1)
    receiver.fail("/hooks/", 503, count=-1)
    try:
        run = driver("incident", "open", "--title", "indexer lags", "--severity", "P2", "--id", inc)
    finally:
        receiver.clear_failures()
    assert run.rc == 0, run.stderr
    outcomes = {d["channel"]: d for d in run.result["deliveries"]}
    assert outcomes["slack"]["status"] == "sent" and outcomes["slack"]["attempts"] == 2
    assert outcomes["webhook"]["status"] == "failed" and outcomes["webhook"]["http_status"] == 503
    assert run.result["warnings"] == [f"webhook was not told: {outcomes['webhook']['error']}"]
    arrived = by_channel(receiver.received(inc))
    slack_times = [i["received_at"] for i in arrived["slack"]]
    assert [i["status"] for i in arrived["slack"]] == [429, 200]
    # Retry-After: 1 was honoured.
    assert _seconds(slack_times[1]) - _seconds(slack_times[0]) >= 0.9
    assert len(arrived["webhook"]) > 1 and {i["status"] for i in arrived["webhook"]} == {503}
    timeline = driver("incident", "show", inc).result["entries"]
    failed = [e for e in timeline if e["kind"] == "notified" and e["status"] == "failed"]
    assert [e["channel"] for e in failed] == ["webhook"]
    assert "hooks" not in json.dumps(failed)  # the URL is not recorded

    # The channel is back: a re-run tells only the one that was not told.
    again = driver("incident", "open", "--title", "indexer lags", "--severity", "P2", "--id", inc)
    assert {d["channel"]: d["status"] for d in again.result["deliveries"]} == {
        "slack": "already-sent",
        "webhook": "sent",
    }
    assert len(by_channel(receiver.received(inc))["slack"]) == 2


def _seconds(stamp: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_two_operators_appending_at_once_lose_nothing(driver, receiver, target, tmp_path):
    inc = incident_id("INC-RACE")
    assert driver("incident", "open", "--title", "race", "--severity", "P2", "--id", inc).rc == 0
    script = (
        "import sys\n"
        "from driver.desk import import_wire_formats, Desk, load_policy\n"
        "import_wire_formats()\n"
        "from driver.inventory import load\n"
        "from pathlib import Path\n"
        "desk = Desk(load_policy(load(sys.argv[1])), sys.argv[2], Path(sys.argv[3]))\n"
        "for n in range(20):\n"
        "    desk.append(sys.argv[4], 'note', text=f'{sys.argv[2]} {n}')\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, target.inventory, who, str(tmp_path / who), inc],
            cwd=ROOT,
            env={**os.environ, **target.env},
        )
        for who in ("alice", "bob")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    # Both at once send the same update: exactly one of them tells Slack.
    step = ("incident", "update", "--incident", inc, "--status", "identified", "--message", "found it")
    results = []
    threads = [
        threading.Thread(target=lambda who=who: results.append(incident_cmd(driver, *step, operator=who)))
        for who in ("carol", "dave")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.rc for r in results] == [0, 0]
    entries = driver("incident", "show", inc).result["entries"]
    notes = sorted(e["text"] for e in entries if e["kind"] == "note")
    assert notes == sorted(f"{who} {n}" for who in ("alice", "bob") for n in range(20))
    slack = [i for i in by_channel(receiver.received(inc))["slack"] if "found it" in i["body"]["text"]]
    assert len(slack) == 1


def test_silences_are_created_once_extended_seen_by_amtool_and_expired_on_resolve(driver, target):
    alertmanager = target.status["alertmanager"]["url"] if target.status else None
    if alertmanager is None:
        pytest.skip("needs the sandbox's Alertmanager")
    inc = incident_id("INC-SILENCE")
    assert driver("incident", "open", "--title", "alert storm", "--severity", "P3", "--id", inc).rc == 0
    silence = ("silence", "--incident", inc, "--matcher", "severity=warning", "--matcher", "team=~api|db")
    first = driver(*silence, "--duration", "1h", "--comment", "storm during the rollback")
    assert first.rc == 0, first.stderr
    assert first.result["action"] == "created"
    again = driver(*silence, "--duration", "1h", "--comment", "storm during the rollback")
    assert again.result["action"] == "unchanged"
    longer = driver(*silence, "--duration", "3h", "--comment", "storm during the rollback")
    assert longer.result["action"] == "extended"
    other = driver(
        "silence",
        "--incident",
        inc,
        "--matcher",
        "alertname=Watchdog",
        "--duration",
        "30m",
        "--comment",
        "noise",
    )
    assert other.result["action"] == "created"

    def amtool(*args):
        out = subprocess.run(
            [
                shutil.which("amtool") or "/usr/bin/amtool",
                f"--alertmanager.url={alertmanager}",
                "silence",
                "query",
                "-o",
                "json",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [s for s in json.loads(out or "[]") if s["comment"].startswith(f"[{inc}]")]

    active = amtool()
    assert len(active) == 2
    storm = next(s for s in active if s["comment"].endswith("storm during the rollback"))
    assert storm["id"] == longer.result["silence"]["id"]
    assert {(m["name"], m["value"], m["isRegex"]) for m in storm["matchers"]} == {
        ("severity", "warning", False),
        ("team", "api|db", True),
    }
    assert storm["createdBy"] == "emergency-ops/alice" or storm["createdBy"].startswith("emergency-ops/")
    resolved = driver("incident", "resolve", "--incident", inc, "--message", "quiet again")
    assert resolved.rc == 0
    assert sorted(resolved.result["silences_expired"]) == sorted(s["id"] for s in active)
    assert amtool() == []
    assert driver("silence", *silence[1:], "--duration", "1h", "--comment", "x").rc == 3  # resolved
    kinds = [
        (e["kind"], e.get("action"))
        for e in driver("incident", "show", inc).result["entries"]
        if e["kind"] == "silence"
    ]
    assert kinds.count(("silence", "created")) == 2 and kinds.count(("silence", "expired")) == 2


def test_escalation_is_due_after_its_minutes_and_told_once(driver, receiver, target, tmp_path):
    inc = incident_id("INC-ESC")
    # Opened 70 minutes ago (written as the record would hold it).
    script = (
        "import sys, datetime\n"
        "from driver.desk import import_wire_formats, Desk, load_policy\n"
        "import_wire_formats()\n"
        "from driver.inventory import load\n"
        "from pathlib import Path\n"
        "desk = Desk(load_policy(load(sys.argv[1])), 'alice', Path(sys.argv[2]))\n"
        "at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=70)\n"
        "fields = {'title': 'orders fail', 'severity': 'P1', 'services': ['api']}\n"
        "desk.record.append(sys.argv[3], 'opened', fields, by='alice', at=at)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, target.inventory, str(tmp_path), inc],
        cwd=ROOT,
        check=True,
        env={**os.environ, **target.env},
    )
    shown = driver("incident", "show", inc).result
    assert [r["name"] for r in shown["escalations_due"]] == ["engineering-manager"]
    first = driver("incident", "escalate", inc)
    assert first.rc == 0
    assert [r["name"] for r in first.result["due"]] == ["engineering-manager"]
    assert {d["channel"]: d["status"] for d in first.result["deliveries"]} == {
        "slack": "sent",
        "webhook": "sent",
    }
    second = driver("incident", "escalate", inc)
    assert {d["status"] for d in second.result["deliveries"]} == {"already-sent"}
    slack = by_channel(receiver.received(inc))["slack"]
    assert len(slack) == 1 and "ESCALATION to @eng-manager" in slack[0]["body"]["text"]
    assert driver("incident", "show", inc).result["escalations_due"] == []


def test_a_procedure_run_for_the_incident_is_on_the_record_and_told(driver, receiver, target, tmp_path):
    inc = incident_id("INC-PROC")
    assert (
        driver(
            "incident",
            "open",
            "--title",
            "crank stuck",
            "--severity",
            "P3",
            "--service",
            "crank",
            "--id",
            inc,
        ).rc
        == 0
    )
    down = driver("shutdown", "--service", "crank", "--incident", inc, "--yes")
    assert down.rc == 0, down.stderr
    assert not down.result["warnings"], down.result["warnings"]
    up = driver("resume", "--service", "crank", "--incident", inc)
    assert up.rc == 0, up.stderr
    # Read by a second clone: the runs of the first are on the shared record.
    entries = incident_cmd(
        driver, "incident", "show", inc, operator="bob", incidents=tmp_path / "other"
    ).result["entries"]
    runs = [(e["procedure"], e["event"]) for e in entries if e["kind"] == "procedure"]
    assert runs == [
        ("shutdown", "started"),
        ("shutdown", "finished"),
        ("resume", "started"),
        ("resume", "finished"),
    ]
    finished = [e for e in entries if e["kind"] == "procedure" and e["event"] == "finished"]
    assert finished[0]["status"] == "succeeded" and finished[0]["changed"] is True
    assert finished[0]["services"] == ["crank"]
    assert finished[0]["prior_state"], "the replicas recorded before the change"
    # The destructive one's start and end were told to the procedures' channel (Slack); resume is not.
    texts = [i["body"]["text"] for i in by_channel(receiver.received(inc))["slack"]]
    assert any("shutdown started" in t for t in texts)
    assert any("Emergency shutdown executed successfully" in t for t in texts)
    assert not any("resume" in t for t in texts)
    # The same playbook run by AWX (not the driver) puts itself on the record too.
    awx = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            target.inventory,
            "playbooks/resume.yml",
            "-e",
            f"incident_id={inc}",
            "-e",
            '{"resume_services": ["crank"]}',
            "-e",
            "awx_job_id=4242",
            "-e",
            "awx_user_name=carol",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert awx.returncode == 0, awx.stdout[-3000:]
    entries = driver("incident", "show", inc).result["entries"]
    by_awx = [e for e in entries if e.get("via") == "awx"]
    assert [(e["procedure"], e["run"], e["by"], e["status"]) for e in by_awx] == [
        ("resume", "awx-job-4242", "carol", "succeeded")
    ]
    report = driver("incident", "report", inc)
    assert report.rc == 0, report.stderr
    html = Path(report.result["paths"]["html"]).read_text()
    assert "<svg" in html and "shutdown" in html


def test_check_mode_and_bad_input(driver, receiver):
    inc = incident_id("INC-CHECK")
    check = driver("incident", "open", "--title", "dry run", "--severity", "P1", "--id", inc, "--check")
    assert check.rc == 0
    assert {d["status"] for d in check.result["deliveries"]} == {"would-send"}
    assert receiver.received(inc) == []
    assert driver("incident", "show", inc).rc == 2  # nothing was written
    bad = [
        ("incident", "open", "--title", "x", "--severity", "P7"),
        ("incident", "open", "--title", "x", "--severity", "P1", "--service", "nope"),
        ("incident", "open", "--title", " ", "--severity", "P1"),
        ("incident", "open", "--title", "x", "--severity", "P1", "--id", "../etc"),
        ("incident", "open", "--title", "x" * 3000, "--severity", "P1"),
        ("incident", "update", "--incident", "INC-NEVER-OPENED", "--status", "identified", "--message", "m"),
        ("notify", "--incident", inc, "--channel", "pager", "--template", "opened"),
        ("silence", "--incident", inc, "--matcher", "severity", "--duration", "1h", "--comment", "c"),
        ("silence", "--incident", inc, "--matcher", "a=b", "--duration", "soon", "--comment", "c"),
    ]
    for args in bad:
        run = driver(*args)
        assert run.rc == 2, (args, run.stdout, run.stderr)
        assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr
    assert receiver.received(inc) == []


def test_notify_by_hand_once_and_no_credential_anywhere(driver, receiver, target, incidents, tmp_path):
    inc = incident_id("INC-HAND")
    opened = driver("incident", "open", "--title", "maintenance", "--severity", "P3", "--id", inc)
    maintenance = (
        "System maintenance in progress. Service will be restored within 15 minutes. Your data is secure.\n"
    )
    before = receiver.texts("/slack/").count(maintenance)
    sent = driver(
        "notify",
        "--incident",
        inc,
        "--channel",
        "slack",
        "--channel",
        "webhook",
        "--template",
        "user_maintenance",
    )
    assert sent.rc == 0, sent.stderr
    assert {d["status"] for d in sent.result["deliveries"]} == {"sent"}
    again = driver(
        "notify",
        "--incident",
        inc,
        "--channel",
        "slack",
        "--channel",
        "webhook",
        "--template",
        "user_maintenance",
    )
    assert {d["status"] for d in again.result["deliveries"]} == {"already-sent"}
    assert driver("notify", "--incident", inc, "--channel", "slack", "--template", "no_such_template").rc == 2
    assert receiver.texts("/slack/").count(maintenance) == before + 1
    # Which values must never appear: the channels' credentials, from the sandbox's files.
    secrets_dir = Path(target.status["receiver"]["slack_webhook_url_file"]).parent
    values = {
        name: (secrets_dir / name).read_text().strip()
        for name in (
            "slack-webhook-token",
            "slack-webhook-url",
            "pagerduty-routing-key",
            "statuspage-api-key",
            "webhook-token",
        )
    }
    # Everything written for incidents by these tests' runs, and the shared record in the bucket.
    record_dir = tmp_path / "record"
    _download_record(target, record_dir)
    files = [p for base in (incidents, record_dir, tmp_path) for p in base.rglob("*")]
    printed = [opened.stdout, opened.stderr, sent.stdout, sent.stderr, again.stdout, again.stderr]
    assert leaks(values, files, printed) == []
    assert any(record_dir.rglob("*.json")), "the record was downloaded"


def _download_record(target, into: Path) -> None:
    import boto3

    s3 = target.status["s3"]
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
    )
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=s3["bucket"], Prefix="incidents/"):
        for item in page.get("Contents") or []:
            path = into / item["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=s3["bucket"], Key=item["Key"])["Body"].read())
