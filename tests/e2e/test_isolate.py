"""isolate and release end to end, judged on the wire (what a client gets through the Ingress) and on
the objects: evidence first, the record, each mode and its exact inverse, check mode, a re-run, bad
input, another incident's isolation refused, and a run that fails half-way released like a finished one."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from driver import ROOT
from tests.conftest import call, incident_id, wait_for

RECORD = "emergency.ops/isolation"


def answer(target, path: str = "/health/ready") -> tuple[int, dict]:
    ingress = target.status["ingress"]
    request = urllib.request.Request(ingress["url"] + path, headers={"Host": ingress["host"]})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def snapshot(kube) -> dict:
    """What isolate may touch and release must put back."""
    api = kube.get("Deployment", "api")
    ingress = kube.get("Ingress", "matchbook")
    return {
        "replicas": api["spec"]["replicas"],
        "record": (api["metadata"].get("annotations") or {}).get(RECORD),
        "selector": kube.get("Service", "api")["spec"]["selector"],
        "ingress_annotations": ingress["metadata"].get("annotations") or {},
        "policies": sorted(p["metadata"]["name"] for p in kube.list("NetworkPolicy")),
    }


def api_pods(kube) -> list[dict]:
    pods = kube.list("Pod", label_selector="app.kubernetes.io/name=api")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


@pytest.fixture
def healthy(target):
    """The api serving through the Ingress before and after each test, as it found it."""
    kube = target.kube()
    wait_for(lambda: call(target, "/health/ready") == 200, what="the api serving")
    before = snapshot(kube)
    yield kube, before
    wait_for(lambda: snapshot(kube) == before, timeout=60, what="the api's objects as before")
    wait_for(lambda: call(target, "/health/ready") == 200, what="the api serving again")


@pytest.mark.parametrize("mode", ["network", "traffic", "stop"])
def test_isolate_refuses_clients_and_release_puts_back_exactly_what_was_there(
    driver, target, incidents, healthy, mode
):
    kube, before = healthy
    incident = incident_id()

    check = driver("isolate", "--service", "api", "--mode", mode, "--check", "--incident", incident)
    assert check.rc == 0, check.stdout + check.stderr
    assert snapshot(kube) == before and call(target, "/health/ready") == 200
    assert not (incidents / incident / "evidence").exists()

    run = driver("isolate", "--service", "api", "--mode", mode, "--yes", "--incident", incident)
    assert run.rc == 0 and run.result["changed"], run.stdout + run.stderr
    status, headers = answer(target)
    assert status == 503, status
    isolate = run.result["outputs"]["isolate"]
    assert isolate["wire"] == 503 and not isolate["evidence_skipped"]
    bundle = incidents / incident / "evidence" / "001"
    assert isolate["evidence"] == str(bundle.resolve())
    pods = {p["metadata"]["name"] for p in json.loads((bundle / "kubernetes/pods.json").read_text())}
    assert pods == {p["metadata"]["name"] for p in api_pods(kube)} or mode == "stop"

    record = json.loads(kube.get("Deployment", "api")["metadata"]["annotations"][RECORD])
    assert (
        record["incident"] == incident
        and record["mode"] == mode
        and record["evidence"] == isolate["evidence"]
    )
    after = snapshot(kube)
    if mode == "network":
        policy = kube.get("NetworkPolicy", "emergency-isolate-api")
        assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "api"}}
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["spec"]["ingress"] == [] and policy["spec"]["egress"] == []
        assert len(api_pods(kube)) == before["replicas"]  # running, unreachable
    elif mode == "traffic":
        assert after["selector"] == {"emergency.ops/isolated": "api"}
        assert after["ingress_annotations"]["nginx.ingress.kubernetes.io/default-backend"] == "maintenance"
        assert headers.get("Retry-After") == "120"  # the maintenance page, not nginx's own 503
        assert record["service_selectors"] == {"api": before["selector"]}
    else:
        assert after["replicas"] == 0 and api_pods(kube) == []
        assert record["replicas"] == before["replicas"]

    again = driver("isolate", "--service", "api", "--mode", mode, "--yes", "--incident", incident)
    assert again.rc == 0 and not again.result["changed"], again.stdout
    assert sorted(p.name for p in (incidents / incident / "evidence").iterdir()) == ["001"]

    if mode == "network":  # the record is read the same way whatever the mode: checked once
        other = driver("isolate", "--service", "api", "--mode", mode, "--yes", "--incident", incident_id())
        assert other.rc == 3 and "already isolated" in other.stdout, other.stdout

    released = driver("release", "--service", "api", "--yes", "--incident", incident)
    assert released.rc == 0 and released.result["changed"], released.stdout + released.stderr
    assert released.result["outputs"]["release"]["wire"] == 200
    assert call(target, "/health/ready") == 200
    assert snapshot(kube) == before
    if mode == "network":  # a release without a record, whatever the mode was: checked once
        twice = driver("release", "--service", "api", "--yes", "--incident", incident)
        assert twice.rc == 0 and not twice.result["changed"]


def test_quarantine_keeps_the_compromised_pods_running_unreachable_while_fresh_ones_serve(
    driver, target, healthy
):
    kube, before = healthy
    incident = incident_id()
    old = {p["metadata"]["name"] for p in api_pods(kube)}
    run = driver("isolate", "--service", "api", "--mode", "quarantine", "--yes", "--incident", incident)
    assert run.rc == 0, run.stdout + run.stderr
    assert set(run.result["outputs"]["isolate"]["isolation"]["quarantined"]) == old
    assert call(target, "/health/ready") == 200  # the service goes on, on fresh pods
    fresh = api_pods(kube)
    assert len(fresh) == before["replicas"] and not old & {p["metadata"]["name"] for p in fresh}
    assert all(ready(p) for p in fresh)
    quarantined = kube.list("Pod", label_selector="emergency.ops/quarantined-from=api")
    assert {p["metadata"]["name"] for p in quarantined} == old
    assert all(
        p["status"]["phase"] == "Running" and not p["metadata"].get("ownerReferences") for p in quarantined
    )
    endpoints = kube.get("Endpoints", "api")
    served = {
        a["targetRef"]["name"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []
    }
    assert not served & old
    policy = kube.get("NetworkPolicy", "emergency-quarantine-api")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"emergency.ops/quarantined-from": "api"}}

    kept = driver("release", "--service", "api", "--yes", "--incident", incident)
    assert kept.rc == 0 and set(kept.result["outputs"]["release"]["isolation"]["quarantined_kept"]) == old
    assert {
        p["metadata"]["name"] for p in kube.list("Pod", label_selector="emergency.ops/quarantined-from=api")
    } == old
    assert kube.get_or_none("NetworkPolicy", "emergency-quarantine-api") is not None

    deleted = driver("release", "--service", "api", "--delete-quarantined", "--yes", "--incident", incident)
    assert deleted.rc == 0, deleted.stdout + deleted.stderr
    wait_for(
        lambda: not kube.list("Pod", label_selector="emergency.ops/quarantined-from=api"),
        what="the quarantined pods deleted",
    )
    assert kube.get_or_none("NetworkPolicy", "emergency-quarantine-api") is None


@pytest.mark.parametrize(
    "args, message",
    [
        (("--service", "ghost"), "ghost"),
        (("--service", "api", "--mode", "snippet"), "--mode"),
        (("--service", "api", "--since", "forever"), "--since"),
        ((), "--service is required"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(driver, target, healthy, args, message):
    kube, before = healthy
    run = driver("isolate", *args, "--yes", "--incident", incident_id(), json_output=False)
    assert run.rc == 2 and message in run.stderr, run.stderr
    assert snapshot(kube) == before


def test_a_run_that_fails_half_way_is_released_like_a_finished_one(driver, target, healthy, tmp_path):
    """The pods are quarantined but the check on the wire fails (the probe cannot reach the Ingress):
    the record was written first, so release puts everything back."""
    kube, _before = healthy
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory)
    (inventory / "group_vars" / "all" / "zz-ingress.yml").write_text(
        "---\nplatform_ingress:\n  url: http://127.0.0.1:9\n  host: api.matchbook.example\n"
    )
    incident = incident_id()
    run = driver(
        "isolate", "--service", "api", "--mode", "quarantine", "--yes", "--timeout", "5",
        "--incident", incident, "--inventory", str(inventory),
    )  # fmt: skip
    assert run.rc == 1, run.stdout + run.stderr
    assert (
        json.loads(kube.get("Deployment", "api")["metadata"]["annotations"][RECORD])["mode"] == "quarantine"
    )
    released = driver("release", "--service", "api", "--delete-quarantined", "--yes", "--incident", incident)
    assert released.rc == 0, released.stdout + released.stderr
    wait_for(
        lambda: not kube.list("Pod", label_selector="emergency.ops/quarantined-from=api"),
        what="no quarantine",
    )
