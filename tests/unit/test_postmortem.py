"""The post-mortem draft: Markdown and one self-contained HTML page from an incident's record, the page
checked as Chromium renders it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from driver import ROOT
from driver.postmortem import write_report

INCIDENT = "INC-20261204-031500"
TITLE = "Checkout 502s <script>alert(1)</script> & retries"
SHA = "9f2c4e1b7a0d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7"
CHROMIUM = "/usr/bin/chromium"


def entry(at: str, kind: str, by: str = "alice", **fields) -> dict:
    return {
        "schema": "emergency-ops/incident-entry/v1",
        "incident": INCIDENT,
        "at": f"2026-12-04T{at}Z",
        "kind": kind,
        "by": by,
        "host": "ops-laptop-1",
        "key": f"incidents/{INCIDENT}/entries/20261204T{at.replace(':', '')}-0000.json",
        **fields,
    }


def notified(at: str, channel: str, kind: str, step: str, status: str = "sent", **fields) -> dict:
    # As the desk writes a delivery today: the delivery's own kind (the channel's) is the entry's kind.
    template = "status_page" if kind == "statuspage" else step.split(":")[0]
    fields.setdefault("attempts", 1)
    return entry(at, kind, channel=channel, step=step, template=template, status=status, **fields)


MATCHERS = [{"name": "service", "value": "api", "isRegex": False, "isEqual": True}]


def record() -> list[dict]:
    rollback = {
        "procedure": "rollback",
        "run": "003-rollback",
        "check_mode": False,
        "reason": "bad deploy 1.4.2",
    }
    return [
        entry(
            "03:15:00.123",
            "opened",
            title=TITLE,
            severity="P1",
            services=["api"],
            message="Checkout returns 502 for 30% of requests",
        ),
        notified("03:15:02.000", "slack-incidents", "slack", "opened", http_status=200),
        notified("03:15:03.000", "pagerduty", "pagerduty", "opened", http_status=202),
        notified(
            "03:15:04.000",
            "statuspage",
            "statuspage",
            "opened",
            status="failed",
            attempts=3,
            http_status=503,
            error="Service Unavailable",
        ),
        entry("03:19:30.123", "status", by="bob", status="identified", message="api 1.4.2 leaks connections"),
        entry("03:24:00.000", "procedure", by="bob", event="started", inputs={"service": "api"}, **rollback),
        entry(
            "03:26:00.000",
            "evidence",
            by="bob",
            bundle="INC-20261204-031500-api-0326",
            manifest_sha256=SHA,
            path="incidents/INC-20261204-031500/evidence/api-0326",
        ),
        entry(
            "03:27:10.123",
            "procedure",
            by="bob",
            event="finished",
            inputs={"service": "api"},
            status="succeeded",
            changed=True,
            exit_code=0,
            errors=[],
            services=["api"],
            prior_state={"api": {"replicas": 2, "image": "matchbook/api:1.4.2"}},
            outputs={
                "rollback": {"api": {"from_revision": 5, "to_revision": 4, "image": "matchbook/api:1.4.1"}}
            },
            duration_seconds=190.1,
            **rollback,
        ),
        entry(
            "03:27:30.000",
            "silence",
            by="bob",
            action="created",
            silence_id="sil-42",
            matchers=MATCHERS,
            ends_at="2026-12-04T05:27:30Z",
            comment="rollback in progress",
        ),
        notified("03:28:00.000", "slack-incidents", "slack", "update:ab12"),
        entry("03:35:00.000", "status", by="bob", status="monitoring", message="error rate back under 0.1%"),
        entry(
            "03:45:00.000",
            "escalated",
            by="awx",
            rule="engineering-manager",
            who="Dana",
            channels=["pagerduty"],
        ),
        entry(
            "04:02:10.123",
            "resolved",
            message="Rolled back to 1.4.1; error rate normal for 25 min",
            root_cause="connection pool leak in api 1.4.2",
        ),
        notified("04:02:12.000", "statuspage", "statuspage", "resolved"),
        notified("04:02:12.500", "slack-incidents", "slack", "resolved"),
        notified("04:02:13.000", "pagerduty", "pagerduty", "resolved"),
        entry("04:03:00.000", "silence", action="expired", silence_id="sil-42", matchers=MATCHERS),
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("pm") / "incidents" / INCIDENT
    paths = write_report(record(), out, platform="matchbook", response_minutes=15)
    return out, paths


def test_both_files_are_written_private(report):
    out, paths = report
    assert paths == {"markdown": out / "postmortem.md", "html": out / "postmortem.html"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["postmortem.html", "postmortem.md"]  # no temporary left


def test_markdown_has_summary_times_timeline_changes_and_evidence(report):
    text = report[1]["markdown"].read_text()
    assert "| Incident | INC-20261204-031500 |" in text
    assert "| Severity | P1 |" in text
    assert "| Root cause | connection pool leak in api 1.4.2 |" in text
    # Opened 03:15:00.123; acknowledged 03:19:30.123, mitigated 03:27:10.123, resolved 04:02:10.123.
    assert "| Time to acknowledge (TTA) | 4 min 30 s |" in text
    assert "| Time to mitigate (TTM) | 12 min 10 s |" in text
    assert "| Time to resolve (TTR) | 47 min 10 s |" in text
    assert "- **Duration:** 47 min 10 s" in text
    assert "Response target: met: acknowledged in 4 min 30 s, within the 15 min target." in text
    for line in (
        "| 03:15:00 | +00:00 | alice | opened P1 “Checkout 502s \\<script>alert(1)\\</script> & retries” "
        "on api: Checkout returns 502 for 30% of requests |",
        "| 03:15:04 | +00:04 | alice | notified statuspage of opened: failed (3 attempts, HTTP 503, "
        "Service Unavailable) |",
        "| 03:19:30 | +04:30 | bob | status identified: api 1.4.2 leaks connections |",
        "| 03:24:00 | +09:00 | bob | started rollback (run 003-rollback): bad deploy 1.4.2 "
        "[inputs: service=api] |",
        "| 03:27:10 | +12:10 | bob | rollback succeeded, changed the platform (run 003-rollback, exit 0, "
        "3 min 10 s) |",
        "| 03:27:30 | +12:30 | bob | silence sil-42 created: service=api until 2026-12-04 05:27:30 UTC "
        "— rollback in progress |",
        "| 03:28:00 | +13:00 | alice | notified slack-incidents (slack) of update:ab12: sent |",
        "| 03:45:00 | +30:00 | awx | escalated (engineering-manager) to Dana via pagerduty |",
        "| 04:02:10 | +47:10 | alice | resolved: Rolled back to 1.4.1; error rate normal for 25 min "
        "(root cause: connection pool leak in api 1.4.2) |",
        "| 04:03:00 | +48:00 | alice | silence sil-42 expired: service=api |",
    ):
        assert line in text, line
    assert text.count("| alice |") + text.count("| bob |") + text.count("| awx |") == len(record())
    assert "- api.image: matchbook/api:1.4.2 -> matchbook/api:1.4.1" in text
    prior = text.split("Prior state:")[1].split("New state (outputs):")[0]
    assert "    api:\n      replicas: 2\n      image: matchbook/api:1.4.2" in prior
    after = text.split("New state (outputs):")[1].split("## Evidence")[0]
    assert "    rollback:\n      api:\n        from_revision: 5\n        to_revision: 4" in after
    assert f"| INC-20261204-031500-api-0326 | `{SHA}` | bob at 03:26:00 |" in text


def test_markdown_checklists_mark_what_the_record_shows(report):
    text = report[1]["markdown"].read_text()
    done = [
        "All services restored and healthy",
        "Status page updated to resolved",
        "Stakeholders notified",
        "Incident documented",
        "Evidence preserved for analysis",
        "Incident timeline documented",
        "Root cause identified",
        "User communication sent",
        "Verify all systems operational",
        "Update incident status to resolved",
        "Notify stakeholders of resolution",
        "Document timeline and actions taken",
    ]
    to_check = [
        "Metrics showing normal operation",
        "No alerts firing",
        "Post-mortem scheduled",
        "Fix verified in production",
        "Monitoring alerts updated",
        "Runbook updated with lessons learned",
        "Post-mortem scheduled (within 48 hours)",
        "Compensation plan executed (if applicable)",
        "Prevention measures implemented",
        "Team debrief completed",
        "Schedule post-incident review",
    ]
    for label in done:
        assert f"- [x] {label}: done (" in text, label
    for label in to_check:
        assert f"- [?] {label}: to check (not in the record)" in text, label
    assert "- [x] Status page updated to resolved: done (sent to statuspage (alice at 04:02:12))" in text
    assert "- [x] Root cause identified: done (root cause recorded (alice at 04:02:10)" in text
    for runbook in (
        "000: Post-Emergency Checklist",
        "001: Post-Incident Checklist",
        "003: Immediate Post-Recovery",
    ):
        assert f"### Runbook {runbook}" in text


def test_an_unfinished_incident_shows_what_is_not_done(tmp_path):
    entries = [e for e in record() if e["at"] < "2026-12-04T03:27"]  # up to the rollback, no statuspage sent
    text = write_report(entries, tmp_path)["markdown"].read_text()
    assert "| Time to mitigate (TTM) | not yet |" in text
    assert "| Time to resolve (TTR) | not yet |" in text
    assert "- [ ] Status page updated to resolved: not done (no status page notification" in text
    assert "- [ ] Root cause identified: not done (no root cause on the record)" in text
    assert "- [ ] Update incident status to resolved: not done (status is identified)" in text
    assert "- [ ] User communication sent: not done (nothing was sent to a status page)" in text
    assert (
        "- [x] Evidence preserved for analysis: done (INC-20261204-031500-api-0326 (bob at 03:26:00))" in text
    )
    assert "No procedure changed the platform" in text
    assert "svg" in (tmp_path / "postmortem.html").read_text()


def test_notified_entries_of_kind_notified_count_the_same(tmp_path):
    # The same deliveries with the entry kind "notified" and the channel's kind in a field of its own.
    entries = [dict(e, kind="notified", channel_kind=e["kind"]) if "channel" in e else e for e in record()]
    text = write_report(entries, tmp_path)["markdown"].read_text()
    assert "- [x] Status page updated to resolved: done (sent to statuspage (alice at 04:02:12))" in text
    assert "notified slack-incidents (slack) of update:ab12: sent" in text


def test_importing_the_module_does_not_load_matplotlib():
    code = "import sys, driver.postmortem; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, check=False).returncode == 0


def test_html_is_self_contained_and_escaped(report):
    page = report[1]["html"].read_text()
    assert "<svg" in page and "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<script|<link|<iframe|<img|@import|url\((?!#)", page, re.I)
    assert "Checkout 502s &lt;script&gt;alert(1)&lt;/script&gt; &amp; retries" in page
    for text in ("P1", "47 min 10 s", "4 min 30 s", "12 min 10 s", SHA, "matchbook/api:1.4.2", "sil-42"):
        assert text in page, text


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs it (Debian's chromium package)")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=90, check=False)


def test_chromium_renders_the_page(report, tmp_path):
    url = report[1]["html"].as_uri()
    shot = tmp_path / "page.png"
    done = _chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", url)
    assert shot.exists(), done.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    if os.environ.get("EMERGENCY_KEEP_SCREENSHOT"):
        Path("/tmp/notes").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, "/tmp/notes/postmortem.png")
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Checkout 502s &lt;script&gt;alert(1)&lt;/script&gt; &amp; retries" in dom.stdout
    assert "<svg" in dom.stdout
    assert "<script" not in dom.stdout
