"""A kubectl session against the emulated server (plain `kubectl apply`, rollouts, drain...)."""

import json
import subprocess
import threading
import time

import pytest

from .conftest import wait_for

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: nginx:1.25
        env: [{name: A, value: "1"}, {name: LOG_LEVEL, value: info}]
        ports: [{containerPort: 80}]
      - name: side
        image: busybox:1.36
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret}
stringData: {password: hunter2}
"""


@pytest.fixture(scope="module")
def app(kubectl, tmp_path_factory):
    path = tmp_path_factory.mktemp("manifests") / "app.yaml"
    path.write_text(APP)
    out = kubectl("apply", "-f", str(path)).stdout
    assert "deployment.apps/web created" in out and "secret/web-secret created" in out
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    return path


def get_json(kubectl, *args):
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def revisions(kubectl):
    rs = get_json(kubectl, "rs", "-l", "app=web")["items"]
    return {
        r["metadata"]["name"]: (
            int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
            r["spec"]["replicas"],
        )
        for r in rs
    }


def test_apply_and_get(kubectl, app):
    assert "unchanged" in kubectl("apply", "-f", str(app)).stdout.splitlines()[0]
    out = kubectl("get", "deploy,pods", "-l", "app=web").stdout
    assert "deployment.apps/web" in out and out.count("Running") == 2
    secret = get_json(kubectl, "secret", "web-secret")
    assert secret["data"] == {"password": "aHVudGVyMg=="}
    service = get_json(kubectl, "svc", "web")
    assert service["spec"]["clusterIP"].startswith("10.96.")
    endpoints = get_json(kubectl, "endpoints", "web")
    assert len(endpoints["subsets"][0]["addresses"]) == 2


def test_rollout_restart_history_undo(kubectl, app):
    first = revisions(kubectl)
    assert list(first.values()) == [(1, 2)]
    kubectl("rollout", "restart", "deployment/web")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    second = revisions(kubectl)
    assert sorted(second.values()) == [(1, 0), (2, 2)]
    history = kubectl("rollout", "history", "deployment/web").stdout
    assert "1 " in history and "2 " in history
    kubectl("rollout", "undo", "deployment/web")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    third = revisions(kubectl)
    (rs1,) = [name for name, (rev, _) in first.items()]
    assert third[rs1] == (3, 2), third
    assert sorted(third.values()) == [(2, 0), (3, 2)]
    deploy = get_json(kubectl, "deploy", "web")
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert (
        get_json(kubectl, "rs", rs1)["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"]
        == "1"
    )


def test_scale_patch_set_image(kubectl, app):
    kubectl("scale", "deployment/web", "--replicas=3")
    wait_for(
        lambda: (
            sum(
                1
                for p in get_json(kubectl, "pods", "-l", "app=web")["items"]
                if all(c["ready"] for c in p["status"].get("containerStatuses", []))
            )
            == 3
            and get_json(kubectl, "deploy", "web")["status"].get("readyReplicas") == 3
        ),
        what="3 ready pods",
    )
    patch = (
        '{"spec":{"template":{"spec":{"containers":[{"name":"c",'
        '"env":[{"name":"LOG_LEVEL","value":"debug"}]}]}}}}'
    )
    kubectl("patch", "deployment", "web", "--type", "strategic", "-p", patch)
    containers = get_json(kubectl, "deploy", "web")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["c", "side"]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "LOG_LEVEL", "value": "debug"}]
    kubectl("set", "image", "deployment/web", "c=nginx:1.26")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    images = {
        p["spec"]["containers"][0]["image"] for p in get_json(kubectl, "pods", "-l", "app=web")["items"]
    }
    assert images == {"nginx:1.26"}


def test_broken_image_exceeds_progress_deadline(kubectl, app):
    kubectl("patch", "deployment", "web", "-p", '{"spec":{"progressDeadlineSeconds":3}}')
    kubectl("set", "image", "deployment/web", "c=ghcr.io/x/api:broken")
    proc = kubectl("rollout", "status", "deployment/web", "--timeout=60s", check=False)
    assert proc.returncode != 0 and "exceeded its progress deadline" in proc.stderr
    pods = get_json(kubectl, "pods", "-l", "app=web")["items"]
    waiting = [
        c["state"]["waiting"]
        for p in pods
        for c in p["status"]["containerStatuses"]
        if "waiting" in c["state"]
    ]
    assert waiting and waiting[0]["reason"] == "ImagePullBackOff"
    assert waiting[0]["message"] == 'Back-off pulling image "ghcr.io/x/api:broken"'
    ready = get_json(kubectl, "deploy", "web")["status"]["readyReplicas"]
    assert ready == 3  # the old pods keep serving
    warnings = get_json(kubectl, "events", "--field-selector", "type=Warning")["items"]
    assert {"Failed", "BackOff"} <= {e["reason"] for e in warnings}
    kubectl("rollout", "undo", "deployment/web")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")


def test_drain_respects_pdb_and_uncordon(kubectl, app, tmp_path):
    pdb = tmp_path / "pdb.yaml"
    pdb.write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n"
        "spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n"
    )
    kubectl("apply", "-f", str(pdb))
    wait_for(
        lambda: get_json(kubectl, "pdb", "web").get("status", {}).get("disruptionsAllowed") == 1, what="pdb"
    )

    def on_node1():
        return [
            p["metadata"]["name"]
            for p in get_json(kubectl, "pods", "-l", "app=web")["items"]
            if p["spec"].get("nodeName") == "node-1"
        ]

    try:
        assert on_node1()
        kubectl(
            "drain", "node-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s", timeout=90
        )
        assert get_json(kubectl, "node", "node-1")["spec"]["unschedulable"] is True
        assert not on_node1()
        wait_for(
            lambda: get_json(kubectl, "deploy", "web")["status"].get("availableReplicas") == 3,
            what="recovery",
        )
        # every pod now sits on node-2; evicting two at once would violate the budget
        pods = [p["metadata"]["name"] for p in get_json(kubectl, "pods", "-l", "app=web")["items"]]
        proc = kubectl(
            "drain",
            "node-2",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=3s",
            check=False,
            timeout=30,
        )
        assert proc.returncode != 0 and "disruption budget" in (proc.stdout + proc.stderr)
        assert len(pods) == 3
    finally:
        # a failure here must not leave the nodes cordoned for the tests that follow
        kubectl("uncordon", "node-1")
        kubectl("uncordon", "node-2")
    assert not get_json(kubectl, "node", "node-1")["spec"].get("unschedulable")


def test_stale_resource_version_conflicts(kubectl, app, tmp_path):
    stale = get_json(kubectl, "deploy", "web")
    kubectl("annotate", "deploy", "web", "touched=yes")
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(stale))
    proc = kubectl("replace", "-f", str(path), check=False)
    assert proc.returncode != 0 and "Conflict" in proc.stderr and "has been modified" in proc.stderr


def test_logs_and_watch(kubectl, kube_env, app):
    assert "started" in kubectl("logs", "deploy/web", "-c", "c").stdout
    victim = get_json(kubectl, "pods", "-l", "app=web")["items"][0]["metadata"]["name"]
    watcher = subprocess.Popen(
        ["kubectl", "get", "pods", "-l", "app=web", "--watch-only", "--no-headers"],
        env=kube_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let the watch start before the change it should report
        kubectl("delete", "pod", victim, "--wait=false")
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(watcher.stdout.readline, "")), daemon=True)
        reader.start()
        wait_for(lambda: any(victim in line for line in lines), what="watch output for the deleted pod")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_statefulset_rollout(kubectl, tmp_path):
    path = tmp_path / "sts.yaml"
    path.write_text("""
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "postgres:16"}]}
""")
    kubectl("apply", "-f", str(path))
    kubectl("rollout", "status", "statefulset/db", "--timeout=60s")
    before = get_json(kubectl, "sts", "db")["status"]["updateRevision"]
    kubectl("rollout", "restart", "statefulset/db")
    kubectl("rollout", "status", "statefulset/db", "--timeout=60s")
    status = get_json(kubectl, "sts", "db")["status"]
    assert status["updateRevision"] != before and status["currentRevision"] == status["updateRevision"]
    hashes = {
        p["metadata"]["labels"]["controller-revision-hash"]
        for p in get_json(kubectl, "pods", "-l", "app=db")["items"]
    }
    assert hashes == {status["updateRevision"].rsplit("-", 1)[1]} or hashes == {status["updateRevision"]}
    assert "2 " in kubectl("rollout", "history", "statefulset/db").stdout
