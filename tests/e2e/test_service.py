"""Service recovery end to end (rollback, recover-deployment, shutdown/resume, scale, restart-unhealthy,
set-env/unset-env, drain/uncordon, db-pod-recover), asserted on the platform's state."""

from __future__ import annotations

import base64
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from ansible_collections.emergency.ops.plugins.module_utils.rollout import rollout_state
from tests.conftest import image_of, incident_id, wait_for

ORDER = ["indexer", "api", "crank"]
NORMAL = {"indexer": 1, "api": 2, "crank": 1}
GOOD = "v1.4.2"


def revision(kube, name: str) -> int:
    return int(kube.get("Deployment", name)["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def image(kube, name: str) -> str:
    return kube.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["image"]


def complete(kube, name: str, kind: str = "Deployment") -> bool:
    obj = kube.get(kind, name)
    return (
        rollout_state(obj)[0] == "complete"
        and obj["status"].get("readyReplicas", 0) == obj["spec"]["replicas"]
    )


def set_image(kube, name: str, tag: str) -> None:
    container = {"name": name, "image": image_of(name, tag)}
    kube.patch("Deployment", name, {"spec": {"template": {"spec": {"containers": [container]}}}})


def env_of(kube, name: str) -> dict:
    containers = kube.get("Deployment", name)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in containers[0].get("env", [])}


def state(kube) -> dict:
    """What a procedure may change: per service replicas, revision, image, env, resources; nodes."""
    out = {}
    for name in ORDER:
        obj = kube.get("Deployment", name)
        container = obj["spec"]["template"]["spec"]["containers"][0]
        out[name] = (
            obj["spec"]["replicas"],
            revision(kube, name),
            container["image"],
            str(container.get("env")),
            str(container.get("resources")),
        )
    out["nodes"] = [
        bool(n.get("spec", {}).get("unschedulable")) for n in kube.request("GET", "/api/v1/nodes")["items"]
    ]
    # Pods still terminating (from an earlier rollout) are on their way out, not part of the state.
    out["pods"] = sorted(
        p["metadata"]["name"] for p in kube.list("Pod") if not p["metadata"].get("deletionTimestamp")
    )
    return out


def heal(kube) -> None:
    """Every service back on its good image, normal replicas, every node schedulable, all ready.

    Only what differs is patched, so healing a platform that is already healthy costs a few reads."""
    for node in kube.request("GET", "/api/v1/nodes")["items"]:
        if node.get("spec", {}).get("unschedulable"):
            kube.request(
                "PATCH",
                f"/api/v1/nodes/{node['metadata']['name']}",
                body={"spec": {"unschedulable": None}},
                content_type="application/merge-patch+json",
            )
    for name in ORDER:
        obj = kube.get("Deployment", name)
        if not obj["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{GOOD}"):
            set_image(kube, name, GOOD)
        recorded = "emergency.ops/replicas-before" in (obj["metadata"].get("annotations") or {})
        if obj["spec"]["replicas"] != NORMAL[name] or recorded:
            kube.patch(
                "Deployment",
                name,
                {
                    "spec": {"replicas": NORMAL[name]},
                    "metadata": {"annotations": {"emergency.ops/replicas-before": None}},
                },
                patch_type="merge",
            )
    for name in ORDER:
        wait_for(lambda n=name: complete(kube, n), what=f"{name} healed")
    wait_for(lambda: complete(kube, "postgres", "StatefulSet"), what="postgres ready")


@pytest.fixture
def kube(target):
    kube = target.kube()
    heal(kube)
    yield kube
    heal(kube)


def no_lock(kube) -> bool:
    return kube.get_or_none("Lease", "driver-lock") is None


# -- rollback -------------------------------------------------------------------------------------
def test_rollback_of_a_broken_revision_does_not_wait_for_it_and_serves_the_previous_one(driver, kube):
    set_image(kube, "api", "broken")
    wait_for(
        lambda: kube.get("Deployment", "api")["status"].get("updatedReplicas", 0) >= 1, what="broken rollout"
    )
    broken_revision = revision(kube, "api")
    incident = incident_id()
    run = driver("rollback", "--service", "api", "--incident", incident)
    assert run.rc == 0, run.stderr
    assert run.result["changed"] is True
    assert image(kube, "api").endswith(f":{GOOD}") and complete(kube, "api")
    assert revision(kube, "api") == broken_revision + 1
    [entry] = run.result["outputs"]["rollback"]["services"]
    assert entry["previous_images"]["api"].endswith(":broken")
    assert run.result["prior_state"]["services"]["api"]["revision"] == broken_revision
    assert no_lock(kube)
    before = state(kube)
    again = driver("rollback", "--service", "api", "--incident", incident)
    assert again.rc == 0, again.stderr
    assert again.result["changed"] is False and state(kube) == before


def test_rollback_to_a_revision_and_to_an_image_tag_and_check_mode(driver, kube):
    set_image(kube, "crank", "v1.5.0")
    wait_for(lambda: complete(kube, "crank"), what="crank v1.5.0")
    before = state(kube)
    check = driver("rollback", "--service", "crank", "--image", GOOD, "--check", "--incident", incident_id())
    assert check.rc == 0, check.stderr
    assert check.result["changed"] is True and state(kube) == before
    history = [r["revision"] for r in check.result["outputs"]["rollback"]["services"][0]["revisions"]]
    oldest = min(history)
    run = driver("rollback", "--service", "crank", "--to-revision", str(oldest), "--incident", incident_id())
    assert run.rc == 0, run.stderr
    assert image(kube, "crank").endswith(f":{GOOD}") and complete(kube, "crank")
    tag = driver("rollback", "--service", "crank", "--image", "v1.5.0", "--incident", incident_id())
    assert tag.rc == 0, tag.stderr
    assert image(kube, "crank") == image_of("crank", "v1.5.0") and complete(kube, "crank")


def test_rollback_refuses_a_revision_that_does_not_exist_listing_those_that_do(driver, kube):
    before = state(kube)
    run = driver("rollback", "--service", "api", "--to-revision", "999", "--incident", incident_id())
    assert run.rc == 2
    message = run.result["errors"][0]["message"]
    assert "999" in message and str(revision(kube, "api")) in message
    assert state(kube) == before and no_lock(kube)


BAD_INPUT = [
    ("rollback", "--service", "postgres"),
    ("rollback", "--service", "api", "--image", "bad;tag"),
    ("rollback", "--service", "api", "--service", "crank", "--to-revision", "1"),
    ("rollback", "--service", "nope"),
    ("recover-deployment", "--all", "--not-ready-seconds", "0"),
    ("shutdown", "--service", "Api", "--yes"),
    ("resume", "--service", "api", "--all"),
    ("scale", "--service", "api", "--replicas", "7"),
    ("scale", "--service", "api", "--replicas", "0"),
    ("scale", "--service", "api", "--resources", "gpu=1"),
    ("restart-unhealthy", "--service", "api;rm"),
    ("set-env", "--service", "api", "1BAD=x"),
    ("unset-env", "--service", "api"),
    ("drain", "--node", "Node_A", "--yes"),
    ("uncordon", "--node", ""),
]


def test_bad_input_exits_2_and_changes_nothing(driver, kube, incidents):
    # Input is checked before anything runs, so the cases cannot disturb each other: run them at once.
    before = state(kube)
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda args: driver(*args, json_output=False), BAD_INPUT)
        runs = dict(zip(BAD_INPUT, done, strict=True))
    wrong = {" ".join(args): (run.rc, run.stdout, run.stderr) for args, run in runs.items() if run.rc != 2}
    assert not wrong
    assert not list(incidents.glob("*/runs/*"))  # no playbook was started
    assert state(kube) == before


def test_a_failed_rollback_leaves_the_platform_recoverable(driver, kube):
    run = driver(
        "rollback", "--service", "crank", "--image", "broken", "--timeout", "1", "--incident", incident_id()
    )
    assert run.rc == 1
    assert run.result["outputs"]["rollback"]["failed_service"]["name"] == "crank"
    assert no_lock(kube)
    back = driver("rollback", "--service", "crank", "--incident", incident_id())
    assert back.rc == 0, back.stderr
    assert image(kube, "crank").endswith(f":{GOOD}") and complete(kube, "crank")


# -- recover-deployment -----------------------------------------------------------------------------
def test_broken_image_drill_recover_deployment_brings_the_previous_revision_back(driver, kube):
    nothing = driver("recover-deployment", "--all", "--incident", incident_id())
    assert nothing.rc == 0, nothing.stderr
    assert nothing.result["changed"] is False
    set_image(kube, "api", "broken")
    wait_for(
        lambda: kube.get("Deployment", "api")["status"].get("updatedReplicas", 0) >= 1, what="broken rollout"
    )
    before = state(kube)
    check = driver(
        "recover-deployment", "--all", "--not-ready-seconds", "1", "--check", "--incident", incident_id()
    )
    assert check.rc == 0, check.stderr
    assert check.result["changed"] is True and state(kube)["api"] == before["api"]
    incident = incident_id()
    run = driver("recover-deployment", "--all", "--not-ready-seconds", "1", "--incident", incident)
    assert run.rc == 0, run.stderr
    by_name = {s["name"]: s for s in run.result["outputs"]["recover_deployment"]["services"]}
    assert by_name["api"]["failing"] and by_name["api"]["rolled_back"]
    assert not by_name["indexer"]["failing"] and not by_name["crank"]["rolled_back"]
    assert image(kube, "api").endswith(f":{GOOD}") and complete(kube, "api")
    settled = state(kube)
    again = driver("recover-deployment", "--all", "--not-ready-seconds", "1", "--incident", incident)
    assert again.rc == 0 and again.result["changed"] is False and state(kube) == settled


# -- shutdown / resume ----------------------------------------------------------------------------------
def replicas(kube) -> dict:
    return {n: kube.get("Deployment", n)["spec"]["replicas"] for n in ORDER}


def test_shutdown_needs_confirmation_records_replicas_and_resume_restores_them(driver, kube):
    refused = driver("shutdown", "--all", "--incident", incident_id())
    assert refused.rc == 3 and replicas(kube) == NORMAL
    check = driver("shutdown", "--all", "--yes", "--check", "--incident", incident_id())
    assert check.rc == 0 and check.result["changed"] is True and replicas(kube) == NORMAL
    incident = incident_id()
    run = driver("shutdown", "--all", "--yes", "--incident", incident)
    assert run.rc == 0, run.stderr
    assert replicas(kube) == dict.fromkeys(ORDER, 0)
    assert run.result["prior_state"]["replicas"] == NORMAL
    # Every pod of the services shut down is gone (the maintenance page and the database stay).
    wait_for(lambda: not [p for p in kube.list("Pod") if p["metadata"]["name"].rsplit("-", 2)[0] in ORDER])
    for name in ORDER:
        annotations = kube.get("Deployment", name)["metadata"]["annotations"]
        assert annotations["emergency.ops/replicas-before"] == str(NORMAL[name])
    again = driver("shutdown", "--all", "--yes", "--incident", incident)
    assert again.rc == 0 and again.result["changed"] is False
    other = driver("shutdown", "--service", "api", "--yes", "--incident", incident_id())
    assert other.rc == 0
    assert kube.get("Deployment", "api")["metadata"]["annotations"]["emergency.ops/replicas-before"] == "2"
    resume_check = driver("resume", "--all", "--check", "--incident", incident)
    assert resume_check.rc == 0 and replicas(kube) == dict.fromkeys(ORDER, 0)
    # A resume that fails midway (crank cannot become ready) restores those before it in order and is
    # finished by a re-run.
    set_image(kube, "crank", "broken")
    failed = driver("resume", "--all", "--timeout", "3", "--incident", incident)
    assert failed.rc == 1
    assert [s["name"] for s in failed.result["outputs"]["resume"]["services"]] == ORDER
    assert all(s["changed"] for s in failed.result["outputs"]["resume"]["services"])
    assert complete(kube, "indexer") and complete(kube, "api") and no_lock(kube)
    set_image(kube, "crank", GOOD)
    resumed = driver("resume", "--all", "--incident", incident)
    assert resumed.rc == 0, resumed.stderr
    assert [s["name"] for s in resumed.result["outputs"]["resume"]["services"]] == ORDER
    assert replicas(kube) == NORMAL and all(complete(kube, n) for n in ORDER)
    assert "emergency.ops/replicas-before" not in kube.get("Deployment", "api")["metadata"]["annotations"]
    twice = driver("resume", "--all", "--incident", incident)
    assert twice.rc == 0 and twice.result["changed"] is False


def kubectl_scale(target, name: str, count: int) -> None:
    """Scales a service by hand, as runbook 000's restore section has an operator do."""
    argv = ["kubectl", "scale", f"deployment/{name}", f"--replicas={count}", "-n", target.namespace]
    if target.kubeconfig:
        argv += ["--kubeconfig", target.kubeconfig]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def test_a_service_scaled_back_by_hand_is_shut_down_and_resumed_at_its_current_replicas(driver, kube, target):
    incident = incident_id()
    first = driver("shutdown", "--service", "api", "--yes", "--incident", incident)
    assert first.rc == 0, first.stderr
    assert kube.get("Deployment", "api")["metadata"]["annotations"]["emergency.ops/replicas-before"] == "2"
    # Brought back by hand with more capacity than before: the record of the first shutdown is stale.
    kubectl_scale(target, "api", 3)
    wait_for(lambda: complete(kube, "api"), what="api at 3 replicas")
    later = incident_id()
    check = driver("shutdown", "--all", "--yes", "--check", "--incident", later)
    assert check.rc == 0 and check.result["changed"] is True
    assert replicas(kube) == {**NORMAL, "api": 3}
    down = driver("shutdown", "--all", "--yes", "--incident", later)
    assert down.rc == 0, down.stderr
    assert down.result["prior_state"]["replicas"] == {**NORMAL, "api": 3}
    assert replicas(kube) == dict.fromkeys(ORDER, 0)
    assert kube.get("Deployment", "api")["metadata"]["annotations"]["emergency.ops/replicas-before"] == "3"
    again = driver("shutdown", "--all", "--yes", "--incident", later)
    assert again.rc == 0 and again.result["changed"] is False
    assert kube.get("Deployment", "api")["metadata"]["annotations"]["emergency.ops/replicas-before"] == "3"
    up = driver("resume", "--all", "--incident", later)
    assert up.rc == 0, up.stderr
    assert replicas(kube) == {**NORMAL, "api": 3} and all(complete(kube, n) for n in ORDER)
    assert "emergency.ops/replicas-before" not in kube.get("Deployment", "api")["metadata"]["annotations"]


def test_resume_of_a_service_running_again_keeps_its_replicas_and_drops_its_record(driver, kube, target):
    incident = incident_id()
    assert driver("shutdown", "--service", "api", "--yes", "--incident", incident).rc == 0
    kubectl_scale(target, "api", 3)
    wait_for(lambda: complete(kube, "api"), what="api at 3 replicas")
    check = driver("resume", "--service", "api", "--check", "--incident", incident)
    assert check.rc == 0 and check.result["changed"] is True
    assert kube.get("Deployment", "api")["metadata"]["annotations"]["emergency.ops/replicas-before"] == "2"
    run = driver("resume", "--service", "api", "--incident", incident)
    assert run.rc == 0, run.stderr
    assert run.result["changed"] is True
    assert replicas(kube)["api"] == 3 and complete(kube, "api")
    assert "emergency.ops/replicas-before" not in kube.get("Deployment", "api")["metadata"]["annotations"]
    twice = driver("resume", "--service", "api", "--incident", incident)
    assert twice.rc == 0 and twice.result["changed"] is False and replicas(kube)["api"] == 3


# -- scale ------------------------------------------------------------------------------------------------
def test_scale_within_the_ceiling_and_raise_resources(driver, kube):
    before = state(kube)
    check = driver("scale", "--service", "api", "--replicas", "4", "--check", "--incident", incident_id())
    assert check.rc == 0 and check.result["changed"] is True and state(kube) == before
    incident = incident_id()
    run = driver(
        "scale",
        "--service",
        "api",
        "--replicas",
        "4",
        "--resources",
        "cpu=1,memory=1Gi",
        "--incident",
        incident,
    )
    assert run.rc == 0, run.stderr
    api = kube.get("Deployment", "api")
    assert api["spec"]["replicas"] == 4 and api["status"]["readyReplicas"] == 4
    resources = api["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert run.result["prior_state"]["replicas"] == {"api": 2}
    assert run.result["prior_state"]["resources"]["api"]["limits"]["memory"] == "512Mi"
    again = driver(
        "scale",
        "--service",
        "api",
        "--replicas",
        "4",
        "--resources",
        "cpu=1,memory=1Gi",
        "--incident",
        incident,
    )
    assert again.rc == 0 and again.result["changed"] is False
    lower = driver(
        "scale", "--service", "api", "--resources", "cpu=500m,memory=512Mi", "--incident", incident_id()
    )
    assert lower.rc == 3
    back = driver(
        "scale",
        "--service",
        "api",
        "--replicas",
        "2",
        "--resources",
        "cpu=500m,memory=512Mi",
        "--force",
        "--incident",
        incident_id(),
    )
    assert back.rc == 0, back.stderr
    assert kube.get("Deployment", "api")["spec"]["replicas"] == 2


# -- restart-unhealthy ---------------------------------------------------------------------------------
def test_restart_unhealthy_deletes_only_pods_not_serving(driver, kube):
    def serving() -> list[str] | None:
        """The api's two pods, once any left terminating by the test before are gone."""
        pods = kube.list("Pod", label_selector="app.kubernetes.io/name=api")
        names = sorted(p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp"))
        return names if len(names) == 2 else None

    sick, healthy = wait_for(serving, what="the api's two pods")
    broken = {"spec": {"containers": [{"name": "api", "image": image_of("api", "broken")}]}}
    kube.patch("Pod", sick, broken)
    wait_for(lambda: not complete(kube, "api"), what="api pod unhealthy")
    before = state(kube)
    check = driver(
        "restart-unhealthy", "--service", "api", "--min-age", "0", "--check", "--incident", incident_id()
    )
    assert check.rc == 0 and check.result["changed"] is True and state(kube) == before
    incident = incident_id()
    run = driver("restart-unhealthy", "--service", "api", "--min-age", "0", "--incident", incident)
    assert run.rc == 0, run.stderr
    now = {p["metadata"]["name"] for p in kube.list("Pod", label_selector="app.kubernetes.io/name=api")}
    assert healthy in now and sick not in now and complete(kube, "api")
    assert run.result["outputs"]["restart_unhealthy"]["services"][0]["deleted"] == [sick]
    again = driver("restart-unhealthy", "--service", "api", "--min-age", "0", "--incident", incident)
    assert again.rc == 0 and again.result["changed"] is False


def test_restart_unhealthy_and_db_pod_recover_fail_naming_a_writer_that_does_not_come_back(driver, kube):
    set_image(kube, "crank", "broken")
    wait_for(lambda: kube.get("Deployment", "crank")["status"].get("updatedReplicas", 0) >= 1, what="broken")
    run = driver(
        "restart-unhealthy",
        "--service",
        "crank",
        "--min-age",
        "0",
        "--timeout",
        "1",
        "--incident",
        incident_id(),
    )
    assert run.rc == 1 and "crank" in run.result["errors"][0]["message"] and no_lock(kube)
    db = driver("db-pod-recover", "--yes", "--timeout", "3", "--incident", incident_id())
    assert db.rc == 1 and db.result["outputs"]["db_pod_recover"]["failed_service"]["name"] == "crank"
    assert complete(kube, "postgres", "StatefulSet") and no_lock(kube)


# -- set-env / unset-env ------------------------------------------------------------------------------------
def test_set_env_records_previous_values_and_unset_env_is_its_inverse(driver, kube):
    before = state(kube)
    check = driver("set-env", "--service", "api", "RUST_LOG=debug", "--check", "--incident", incident_id())
    assert check.rc == 0 and check.result["changed"] is True and state(kube) == before
    incident = incident_id()
    run = driver(
        "set-env",
        "--service",
        "api",
        "RUST_LOG=debug",
        "DB_RETRY_ATTEMPTS=10",
        "--incident",
        incident,
    )
    assert run.rc == 0, run.stderr
    assert env_of(kube, "api")["RUST_LOG"] == "debug" and env_of(kube, "api")["DB_RETRY_ATTEMPTS"] == "10"
    assert run.result["prior_state"]["env"]["api"] == {"RUST_LOG": "info", "DB_RETRY_ATTEMPTS": None}
    assert complete(kube, "api")
    again = driver(
        "set-env",
        "--service",
        "api",
        "RUST_LOG=debug",
        "DB_RETRY_ATTEMPTS=10",
        "--incident",
        incident,
    )
    assert again.rc == 0 and again.result["changed"] is False
    unset = driver("unset-env", "--service", "api", "DB_RETRY_ATTEMPTS", "--incident", incident)
    assert unset.rc == 0, unset.stderr
    assert "DB_RETRY_ATTEMPTS" not in env_of(kube, "api")
    assert unset.result["prior_state"]["env"]["api"] == {"DB_RETRY_ATTEMPTS": "10"}
    restore = driver("set-env", "--service", "api", "RUST_LOG=info", "--incident", incident)
    assert restore.rc == 0 and env_of(kube, "api")["RUST_LOG"] == "info"
    # DATABASE_URL comes from the Secret: shown by reference, its value never appears.
    secret = driver("unset-env", "--service", "crank", "DATABASE_URL", "--check", "--incident", incident)
    password = base64.b64decode(kube.get("Secret", "postgres-secret")["data"]["password"]).decode()
    assert secret.rc == 0 and password not in secret.stdout
    assert secret.result["outputs"]["unset_env"]["services"][0]["previous_env"]["DATABASE_URL"]["valueFrom"]


def test_a_scale_or_set_env_whose_rollout_fails_is_reverted_by_rollback(driver, kube):
    set_image(kube, "indexer", "broken")
    scale = driver(
        "scale", "--service", "indexer", "--replicas", "2", "--timeout", "1", "--incident", incident_id()
    )
    assert scale.rc == 1 and no_lock(kube)
    assert scale.result["prior_state"]["replicas"] == {"indexer": 1}
    run = driver(
        "set-env",
        "--service",
        "indexer",
        "RUST_LOG=debug",
        "--timeout",
        "1",
        "--incident",
        incident_id(),
    )
    assert run.rc == 1 and run.result["outputs"]["set_env"]["failed_service"]["name"] == "indexer"
    assert no_lock(kube)
    back = driver("rollback", "--service", "indexer", "--image", GOOD, "--incident", incident_id())
    assert back.rc == 0, back.stderr
    assert complete(kube, "indexer") and image(kube, "indexer").endswith(f":{GOOD}")


# -- drain / uncordon ---------------------------------------------------------------------------------------
def node_of_api(kube) -> str:
    return kube.list("Pod", label_selector="app.kubernetes.io/name=api")[0]["spec"]["nodeName"]


def test_drain_evicts_respecting_the_budget_and_uncordon_is_its_inverse(driver, kube):
    node = node_of_api(kube)
    before = state(kube)
    refused = driver("drain", "--node", node, "--incident", incident_id())
    assert refused.rc == 3 and state(kube) == before
    check = driver("drain", "--node", node, "--yes", "--check", "--incident", incident_id())
    assert check.rc == 0 and check.result["changed"] is True and state(kube) == before
    incident = incident_id()
    run = driver("drain", "--node", node, "--yes", "--incident", incident)
    assert run.rc == 0, run.stderr
    assert kube.request("GET", f"/api/v1/nodes/{node}")["spec"]["unschedulable"] is True
    on_node = [
        p["metadata"]["name"]
        for p in kube.request("GET", "/api/v1/pods")["items"]
        if p["spec"].get("nodeName") == node
    ]
    assert on_node == []
    assert all(complete(kube, n) for n in ORDER) and complete(kube, "postgres", "StatefulSet")
    assert run.result["prior_state"]["node"] == {"name": node, "unschedulable": False}
    again = driver("drain", "--node", node, "--yes", "--incident", incident)
    assert again.rc == 0 and again.result["changed"] is False
    back = driver("uncordon", "--node", node, "--incident", incident)
    assert back.rc == 0 and back.result["changed"] is True
    assert not kube.request("GET", f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
    twice = driver("uncordon", "--node", node, "--incident", incident)
    assert twice.rc == 0 and twice.result["changed"] is False


def test_a_drain_blocked_by_a_budget_fails_and_uncordon_recovers(driver, kube):
    node = node_of_api(kube)
    kube.request(
        "POST",
        f"/apis/policy/v1/namespaces/{kube.namespace}/poddisruptionbudgets",
        body={
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "api-strict"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}}},
        },
    )
    try:
        run = driver("drain", "--node", node, "--yes", "--timeout", "1", "--incident", incident_id())
        assert run.rc == 1 and "disruption" in run.result["errors"][0]["message"].lower()
        assert complete(kube, "api") and no_lock(kube)
        back = driver("uncordon", "--node", node, "--incident", incident_id())
        assert back.rc == 0
        assert not kube.request("GET", f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
    finally:
        kube.request("DELETE", f"/apis/policy/v1/namespaces/{kube.namespace}/poddisruptionbudgets/api-strict")


def test_drain_of_an_unknown_node_is_refused_as_invalid(driver, kube):
    run = driver("drain", "--node", "node-z", "--yes", "--incident", incident_id())
    assert run.rc == 2 and "node-a" in run.result["errors"][0]["message"]


# -- db-pod-recover ---------------------------------------------------------------------------------
def test_db_pod_recover_replaces_the_pod_and_checks_the_writers(driver, kube, target):
    uid = kube.get("Pod", "postgres-0")["metadata"]["uid"]
    refused = driver("db-pod-recover", "--incident", incident_id())
    assert refused.rc == 3 and kube.get("Pod", "postgres-0")["metadata"]["uid"] == uid
    check = driver("db-pod-recover", "--yes", "--check", "--incident", incident_id())
    assert check.rc == 0 and check.result["changed"] is True
    assert kube.get("Pod", "postgres-0")["metadata"]["uid"] == uid
    incident = incident_id()
    run = driver("db-pod-recover", "--yes", "--incident", incident, "--verbose")
    assert run.rc == 0, run.stderr
    assert kube.get("Pod", "postgres-0")["metadata"]["uid"] != uid
    assert complete(kube, "postgres", "StatefulSet")
    out = run.result["outputs"]["db_pod_recover"]
    assert {w["name"] for w in out["writers"]} == set(ORDER)
    assert out["connection"]["server_version"]
    password = base64.b64decode(kube.get("Secret", "postgres-secret")["data"]["password"]).decode()
    assert password not in run.stdout + run.stderr
    uid = kube.get("Pod", "postgres-0")["metadata"]["uid"]
    again = driver("db-pod-recover", "--yes", "--incident", incident)
    assert again.rc == 0 and again.result["changed"] is False
    assert kube.get("Pod", "postgres-0")["metadata"]["uid"] == uid
