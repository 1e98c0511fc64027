"""watch against the sandbox's real Prometheus, with real traffic through the Ingress: a faulty
release of api is rolled back on its own after exactly the configured number of breaches in a row."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from driver import ROOT
from tests.conftest import incident_id, wait_for
from tests.e2e.test_service import GOOD, complete, heal, revision, set_image

# 004's error-rate trigger, with a short window so that a test sees it: 3 breaching measurements 2 s
# apart over a 10 s window.
TRIGGERS = """
- name: error-rate
  query: >-
    (sum(rate(http_requests_total{namespace="{namespace}",service="{service}",code=~"5..",route!~"/health.*|/metrics"}[{period}])) or vector(0))
    / sum(rate(http_requests_total{namespace="{namespace}",service="{service}",route!~"/health.*|/metrics"}[{period}]))
  period: 10s
  consecutive: 3
  above: 0.05
  min_traffic_query: >-
    sum(rate(http_requests_total{namespace="{namespace}",service="{service}",route!~"/health.*|/metrics"}[{period}])) or vector(0)
  min_traffic: 0.5
"""  # noqa: E501 - PromQL as an inventory holds it


@pytest.fixture
def kube(target):
    if target.status is None:
        pytest.skip("needs the sandbox's Prometheus and traffic")
    kube = target.kube()
    heal(kube)
    yield kube
    heal(kube)


def load(target, seconds: int) -> subprocess.Popen:
    ingress = target.status["ingress"]
    argv = [
        sys.executable,
        "-m",
        "driver",
        "sandbox",
        "traffic",
        "--url",
        ingress["url"],
        "--host",
        ingress["host"],
        "--path",
        "/",
        "--rps",
        "20",
        "--seconds",
        str(seconds),
        "--json",
    ]
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ)
    )


def watch(target, tmp_path, *args: str) -> subprocess.Popen:
    triggers = tmp_path / "triggers.yml"
    triggers.write_text(TRIGGERS)
    argv = [
        sys.executable,
        "-m",
        "driver",
        "watch",
        "--service",
        "api",
        "--triggers",
        str(triggers),
        "--interval",
        "2",
        "--inventory",
        target.inventory,
        "--incidents-dir",
        str(tmp_path / "incidents"),
        *args,
    ]
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
    )


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(lines[-40:]))


def test_a_faulty_release_is_rolled_back_after_exactly_three_breaches_in_a_row(
    driver, target, kube, tmp_path
):
    inc = incident_id("INC-WATCH")
    assert (
        driver("incident", "open", "--title", "api release under watch", "--severity", "P2", "--id", inc).rc
        == 0
    )
    traffic = load(target, 150)
    proc = watch(target, tmp_path, "--incident", inc)
    try:
        before = read_until(proc, r"error-rate: .* ok 0/3", 60)  # healthy under load: ok
        good_revision = revision(kube, "api")
        set_image(kube, "api", "faulty")
        wait_for(lambda: complete(kube, "api"), timeout=90, what="the faulty release ready")
        lines = read_until(proc, r"automatic rollback of revision \d+: confirmed", 150)
        # Keep watching: the rolled-back revision is not rolled back again.
        lines += read_until(proc, r"error-rate: .* ok 0/3", 30)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops it cleanly
        rest, _ = proc.communicate(timeout=30)
        traffic.send_signal(signal.SIGTERM)
        traffic.communicate(timeout=30)
    assert proc.returncode == 0, rest
    verdicts = [line for line in lines if " error-rate: " in line]
    executed = next(i for i, line in enumerate(lines) if line.startswith("execute: rolling api back"))
    counted = [re.search(r" (\d)/3", line).group(1) for line in lines[:executed] if " error-rate: " in line]
    assert counted[-3:] == ["1", "2", "3"], "\n".join(verdicts)
    assert "3" not in counted[:-1], "it acted on the first third breach"
    assert sum(line.startswith("execute:") for line in lines + rest.splitlines()) == 1
    assert before and "breach" not in "".join(before)
    # The platform: back on the good image, a new revision made from the old one.
    api = kube.get("Deployment", "api")
    assert api["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{GOOD}")
    assert revision(kube, "api") > good_revision
    # The record: the rollback procedure's run and the watch's own account of it.
    entries = driver("incident", "show", inc).result["entries"]
    runs = [(e["procedure"], e["event"], e.get("status")) for e in entries if e["kind"] == "procedure"]
    assert ("rollback", "finished", "succeeded") in runs
    updates = [e["message"] for e in entries if e["kind"] == "status"]
    assert any("automatic rollback of api" in u and "confirmed" in u for u in updates)


def prometheus(target, path: str, method: str = "GET"):
    request = urllib.request.Request(target.status["prometheus"]["url"] + path, method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read()
    return json.loads(body) if body.strip().startswith(b"{") else None


def client_rate(target) -> float:
    query = 'sum(rate(http_requests_total{service="api",route!~"/health.*|/metrics"}[10s])) or vector(0)'
    result = prometheus(target, "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    return float(result["data"]["result"][0]["value"][1])


def firing(target, alert: str) -> bool:
    alerts = prometheus(target, "/api/v1/alerts")["data"]["alerts"]
    return any(a["labels"].get("alertname") == alert and a["state"] == "firing" for a in alerts)


def test_an_idle_service_and_a_dry_run_do_nothing_and_the_generated_rule_fires(
    driver, target, kube, tmp_path
):
    # The same trigger as Prometheus alerting rules (for: 10s x 3), loaded into the sandbox's Prometheus.
    rules_dir = Path(target.status["prometheus"]["rules_dir"])
    rules = rules_dir / "emergency-watch-api.yml"
    made = watch(target, tmp_path, "--rules", str(tmp_path / "rules.yml"))
    assert made.wait(timeout=60) == 0, made.stdout.read()
    shutil.copy(tmp_path / "rules.yml", rules)
    prometheus(target, "/-/reload", "POST")
    # No client traffic at all: every measurement is idle, never a breach.
    set_image(kube, "api", "faulty")
    wait_for(lambda: complete(kube, "api"), timeout=90, what="the faulty release ready")
    faulty_revision = revision(kube, "api")
    # An earlier test's traffic may still be inside the 10 s window: wait until it has left it.
    wait_for(lambda: client_rate(target) < 0.5, timeout=60, what="no client traffic to api")
    idle = watch(target, tmp_path, "--once")
    out, _ = idle.communicate(timeout=60)
    assert idle.returncode == 0, out
    assert " idle 0/3 " in out
    # Under load, --dry-run says what it would do and does not do it.
    traffic = load(target, 120)
    proc = watch(target, tmp_path, "--dry-run")
    try:
        lines = read_until(proc, r"dry run: would roll api back from revision", 90)
        try:
            wait_for(
                lambda: firing(target, "EmergencyWatchApiErrorRate"), timeout=90, what="the alert firing"
            )
        finally:
            rules.unlink()
            prometheus(target, "/-/reload", "POST")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        traffic.send_signal(signal.SIGTERM)
        traffic.communicate(timeout=30)
    assert any(" breach 3/3" in line for line in lines)
    assert revision(kube, "api") == faulty_revision
    assert kube.get("Deployment", "api")["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        ":faulty"
    )


def test_bad_input_is_refused_before_anything_runs(driver, target, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(json.dumps([{"name": "t", "query": "up", "period": "1m", "consecutive": 3}]))
    for args in (
        ["--service", "postgres"],  # not a Deployment
        ["--service", "nope"],
        ["--service", "api", "--triggers", str(bad)],  # neither above, below nor below_baseline
        ["--service", "api", "--triggers", str(tmp_path / "missing.yml")],
        ["--service", "api", "--interval", "0"],
        ["--service", "api", "--incident", "../x"],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "driver", "watch", *args, "--once", "--inventory", target.inventory],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert run.stderr.startswith("error: "), run.stderr
