"""`restart` end to end: the driver, the playbook and the platform, asserted on the platform's state."""

from __future__ import annotations

import base64
import itertools
import threading
import time

import pytest

from ansible_collections.emergency.ops.plugins.module_utils.kube import micro_time
from ansible_collections.emergency.ops.plugins.module_utils.rollout import rollout_state
from tests.conftest import image_of, incident_id, wait_for

ORDER = ["indexer", "api", "crank"]
INCIDENT_ANNOTATION = "emergency.ops/restart-incident"


def revision(kube, name: str) -> int:
    return int(kube.get("Deployment", name)["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def revisions(kube) -> dict[str, int]:
    return {name: revision(kube, name) for name in ORDER}


def complete(kube, name: str) -> bool:
    obj = kube.get("Deployment", name)
    return (
        rollout_state(obj)[0] == "complete"
        and obj["status"].get("readyReplicas", 0) == obj["spec"]["replicas"]
    )


def set_image(kube, name: str, tag: str) -> None:
    kube.patch(
        "Deployment",
        name,
        {"spec": {"template": {"spec": {"containers": [{"name": name, "image": image_of(name, tag)}]}}}},
    )


def heal(kube, name: str) -> None:
    """Puts a service back on its good image and waits until it is fully rolled out."""
    set_image(kube, name, "v1.4.2")
    wait_for(lambda: complete(kube, name), what=f"{name} rolled out")


@pytest.fixture
def kube(target):
    kube = target.kube()
    for name in ORDER:
        wait_for(lambda n=name: complete(kube, n), what=f"{name} healthy before the test")
    return kube


def test_restart_one_service_rolls_it_and_only_it(driver, kube):
    before = revisions(kube)
    incident = incident_id()
    run = driver("restart", "--service", "api", "--incident", incident)
    assert run.rc == 0, run.stderr
    assert run.result["status"] == "succeeded" and run.result["changed"] is True
    after = revisions(kube)
    assert after["api"] == before["api"] + 1
    assert {n: after[n] for n in ("indexer", "crank")} == {n: before[n] for n in ("indexer", "crank")}
    api = kube.get("Deployment", "api")
    assert api["metadata"]["annotations"][INCIDENT_ANNOTATION] == incident
    assert api["status"]["readyReplicas"] == api["status"]["updatedReplicas"] == api["spec"]["replicas"] == 2
    # The result says what changed: previous and new revision, and the prior state.
    [service] = run.result["outputs"]["restart"]["services"]
    assert (int(service["previous_revision"]), int(service["new_revision"])) == (before["api"], after["api"])
    assert run.result["prior_state"]["services"]["api"]["replicas"] == 2
    # The lock was released.
    assert kube.get_or_none("Lease", "driver-lock") is None


def test_second_run_for_the_same_incident_restarts_nothing(driver, kube):
    incident = incident_id()
    assert driver("restart", "--service", "crank", "--incident", incident).rc == 0
    before = revisions(kube)
    again = driver("restart", "--service", "crank", "--incident", incident)
    assert again.rc == 0, again.stderr
    assert again.result["changed"] is False
    assert revisions(kube) == before


def test_check_mode_reports_the_change_and_leaves_no_trace(driver, kube, incidents):
    before = revisions(kube)
    rs_before = len(kube.list("ReplicaSet"))
    incident = incident_id()
    run = driver("restart", "--all", "--check", "--incident", incident)
    assert run.rc == 0, run.stderr
    assert run.result["check_mode"] is True and run.result["changed"] is True
    assert [s["name"] for s in run.result["outputs"]["restart"]["services"]] == ORDER
    assert revisions(kube) == before
    assert len(kube.list("ReplicaSet")) == rs_before
    for name in ORDER:
        assert (
            kube.get("Deployment", name)["metadata"].get("annotations", {}).get(INCIDENT_ANNOTATION)
            != incident
        )
    assert kube.get_or_none("Lease", "driver-lock") is None


class RolloutRecorder:
    """Watches the namespace and notes when each Deployment gets a new ReplicaSet and when its
    rollout completes, so the order of a multi-service restart can be checked on the platform."""

    def __init__(self, kube):
        self.kube = kube
        self.known = {rs["metadata"]["name"] for rs in kube.list("ReplicaSet")}
        self.new_rs: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.wait(0.05):
            now = time.monotonic()
            for rs in self.kube.list("ReplicaSet"):
                if rs["metadata"]["name"] not in self.known:
                    self.known.add(rs["metadata"]["name"])
                    owner = rs["metadata"]["ownerReferences"][0]["name"]
                    self.new_rs.setdefault(owner, now)
            for name in self.new_rs:
                if name not in self.completed and complete(self.kube, name):
                    self.completed[name] = now

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.stop.set()
        self.thread.join()


def test_restart_all_goes_in_order_each_rollout_finished_before_the_next(driver, kube):
    before = revisions(kube)
    with RolloutRecorder(kube) as recorder:
        run = driver("restart", "--all", "--incident", incident_id())
    assert run.rc == 0, run.stderr
    after = revisions(kube)
    assert all(after[n] == before[n] + 1 for n in ORDER), (before, after)
    started = sorted(recorder.new_rs, key=recorder.new_rs.get)
    assert started == ORDER
    for first, second in itertools.pairwise(ORDER):
        assert recorder.completed[first] <= recorder.new_rs[second], (
            f"{second} started before {first} was ready"
        )


def test_a_lock_held_by_another_incident_refuses_the_run(driver, kube):
    before = revisions(kube)
    kube.create(
        "Lease",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "driver-lock"},
            "spec": {
                "holderIdentity": "INC-OTHER-OPERATOR",
                "leaseDurationSeconds": 300,
                "acquireTime": micro_time(),
                "renewTime": micro_time(),
            },
        },
    )
    try:
        run = driver("restart", "--service", "api", "--incident", incident_id())
        assert run.rc == 3
        assert run.result["status"] == "refused"
        assert "INC-OTHER-OPERATOR" in run.result["errors"][0]["message"]
        assert revisions(kube) == before
        assert kube.get("Lease", "driver-lock")["spec"]["holderIdentity"] == "INC-OTHER-OPERATOR"
    finally:
        lease = kube.get("Lease", "driver-lock")
        kube.delete("Lease", "driver-lock", resource_version=lease["metadata"]["resourceVersion"])


def test_an_expired_lock_is_taken_over(driver, kube):
    kube.create(
        "Lease",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "driver-lock"},
            "spec": {
                "holderIdentity": "INC-CRASHED",
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-01-01T00:00:00.000000Z",
                "renewTime": "2026-01-01T00:00:00.000000Z",
            },
        },
    )
    run = driver("restart", "--service", "indexer", "--incident", incident_id())
    assert run.rc == 0, run.stderr
    assert kube.get_or_none("Lease", "driver-lock") is None


def test_unhealthy_rollout_is_refused_and_a_forced_restart_of_a_broken_image_fails_naming_it(driver, kube):
    set_image(kube, "api", "broken")
    try:
        wait_for(
            lambda: kube.get("Deployment", "api")["status"].get("updatedReplicas", 0) >= 1,
            what="the broken rollout to start",
        )
        revision_broken = revision(kube, "api")
        refused = driver("restart", "--service", "api", "--incident", incident_id())
        assert refused.rc == 3, refused.stderr
        assert "--force" in refused.result["errors"][0]["message"]
        assert revision(kube, "api") == revision_broken

        forced = driver(
            "restart", "--service", "api", "--force", "--timeout", "5", "--incident", incident_id()
        )
        assert forced.rc == 1
        assert forced.result["status"] == "failed"
        message = forced.result["errors"][0]["message"]
        assert "api" in message and "ImagePullBackOff" in message
        failed = forced.result["outputs"]["restart"]["failed_service"]
        assert failed["name"] == "api" and failed["pods_not_ready"]
        assert revision(kube, "api") == revision_broken + 1
        # Nothing is left locked: the next operator can act at once.
        assert kube.get_or_none("Lease", "driver-lock") is None
    finally:
        heal(kube, "api")


def test_a_failure_midway_leaves_the_platform_recoverable_and_the_rerun_converges(driver, kube):
    incident = incident_id()
    set_image(kube, "crank", "broken")
    try:
        before = revisions(kube)
        run = driver("restart", "--all", "--force", "--timeout", "5", "--incident", incident)
        assert run.rc == 1
        done = [s["name"] for s in run.result["outputs"]["restart"]["services"]]
        assert done == ORDER
        after = revisions(kube)
        assert after["indexer"] == before["indexer"] + 1 and after["api"] == before["api"] + 1
        assert complete(kube, "indexer") and complete(kube, "api")
    finally:
        heal(kube, "crank")
    settled = revisions(kube)
    rerun = driver("restart", "--all", "--incident", incident)
    assert rerun.rc == 0, rerun.stderr
    assert rerun.result["changed"] is False
    assert revisions(kube) == settled


def test_results_and_records_hold_no_secret(driver, kube, incidents):
    run = driver("restart", "--service", "indexer", "--incident", incident_id(), "--verbose")
    assert run.rc == 0, run.stderr
    password = base64.b64decode(kube.get("Secret", "postgres-secret")["data"]["password"]).decode()
    assert password not in run.stdout + run.stderr
    files = [path for path in incidents.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert password not in path.read_text(errors="replace"), path
