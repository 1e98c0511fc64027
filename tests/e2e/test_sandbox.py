"""The sandbox itself: endpoints for scripts, an idempotent `up`, and `reset` to the seeded state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import psycopg
import pytest

from driver import ROOT
from sandbox.platform import Sandbox
from tests.conftest import wait_for


@pytest.fixture
def sandbox(target):
    if target.status is None:
        pytest.skip("runs only where the test session started the sandbox")
    return Sandbox()  # EMERGENCY_SANDBOX_DIR points at the session's sandbox


def sandbox_cli(target, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "driver", "sandbox", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **target.env},
        timeout=120,
    )
    return proc


def test_status_json_gives_every_endpoint(target, sandbox):
    proc = sandbox_cli(target, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    for key in ("kubeconfig", "namespace"):
        assert status[key]
    for section, keys in {
        "postgres": ("dsn",),
        "s3": ("endpoint", "bucket", "access_key", "secret_key", "region"),
        "redis": ("url",),
    }.items():
        for key in keys:
            assert status[section][key], (section, key)
    assert all(status["running"].values())
    with psycopg.connect(status["postgres"]["dsn"]) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 3
    for key in ("ingress", "prometheus", "alertmanager", "receiver"):
        assert status[key]["url"].startswith("http://127.0.0.1:"), key
    # Each service's pods with the addresses they answer on: the api's answer there, for real.
    api = status["pods"]["api"]
    assert len(api) == 2 and all(p["ready"] and p["phase"] == "Running" for p in api)
    for pod in api:
        (address,) = pod["addresses"]
        with urllib.request.urlopen(f"http://{address}/health/ready", timeout=5) as answer:
            assert json.load(answer)["pod"] == pod["name"]


def test_the_seeded_ingress_serves_the_api(target):
    """What a client sees: the api's answer through the ingress, from both of its pods."""
    ingress = target.status["ingress"]
    pods = set()
    for _ in range(20):
        request = urllib.request.Request(f"{ingress['url']}/health/ready", headers={"Host": ingress["host"]})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
            pods.add(json.load(answer)["pod"])
    assert len(pods) == 2


def test_up_is_idempotent(target, sandbox):
    before = dict(sandbox.state["pids"]), dict(sandbox.state["ports"])
    proc = sandbox_cli(target, "up")
    assert proc.returncode == 0, proc.stderr
    after = Sandbox()
    assert (after.state["pids"], after.state["ports"]) == before


def test_reset_restores_the_seeded_state(target, sandbox):
    kube = target.kube()
    dsn = sandbox.status()["postgres"]["dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM trades")
    kube.patch("Deployment", "crank", {"spec": {"replicas": 3}}, patch_type="merge")
    proc = sandbox_cli(target, "reset")
    assert proc.returncode == 0, proc.stderr
    kube = target.kube()
    assert kube.get("Deployment", "crank")["spec"]["replicas"] == 1
    assert (
        kube.get("Deployment", "crank")["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 200
    wait_for(
        lambda: all(
            kube.get("Deployment", n)["status"].get("readyReplicas") == r
            for n, r in (("indexer", 1), ("api", 2), ("crank", 1))
        ),
        what="seeded workloads ready",
    )


def test_the_receiver_records_what_it_gets_and_the_load_generator_counts(target, sandbox):
    """The receiver runs with the sandbox and lists the calls it got; `driver sandbox traffic` sends a
    bounded number of requests and reports them (here against the receiver: no ingress yet)."""
    import urllib.request

    url = target.status["receiver"]["url"]
    assert target.status["running"]["receiver"] is True
    urllib.request.urlopen(urllib.request.Request(f"{url}/_received", method="DELETE"), timeout=10)
    event = {
        "routing_key": "sandbox-routing-key",
        "event_action": "trigger",
        "dedup_key": "INC-SANDBOX-1",
        "payload": {"summary": "api 5xx", "source": "sandbox", "severity": "critical"},
    }
    request = urllib.request.Request(
        f"{url}/v2/enqueue", json.dumps(event).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202 and json.load(answer)["dedup_key"] == "INC-SANDBOX-1"
    with urllib.request.urlopen(f"{url}/_received", timeout=10) as answer:
        received = json.load(answer)
    assert [(r["method"], r["path"]) for r in received] == [("POST", "/v2/enqueue")]
    assert received[0]["body"]["routing_key"] == "***"

    load = ["--url", url, "--path", "/_health", "--rps", "20", "--seconds", "2", "--json"]
    run = subprocess.run(
        [sys.executable, "-m", "driver", "sandbox", "traffic", *load],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **target.env},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    total = json.loads(run.stdout)["total"]
    assert total["sent"] == 40 and total["ok"] == 40 and total["failed"] == 0
