"""The emulator's node side: pods of catalogued runnable images are real processes (tests/emulator/
podprog.py through a test catalogue), with their environment, probes, restarts, logs, graceful
deletion and Endpoints; uncatalogued images fail to pull; ServiceAccount admission."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import scale_all
from driver import ROOT
from sandbox.kubeapi import KubeAPIServer

from .conftest import NODES, TOKEN, wait_for
from .test_server import call

PODS = "/api/v1/namespaces/shop/pods"
PROG = ["{python}", "tests/emulator/podprog.py", "--listen", "{listen}"]
CATALOGUE = {
    "sandbox.local/prog": {"tags": ["v1"], "command": PROG},
    "sandbox.local/crasher": {"tags": ["v1"], "command": [*PROG, "--exit-after", "0.3"]},
    "sandbox.local/stubborn": {"tags": ["v1"], "command": [*PROG, "--ignore-term"]},
    "sandbox.local/httpserver": {
        "tags": ["3.11"],
        "command": ["{python}", "-m", "http.server", "--bind", "{host}", "{port}"],
    },
    "nginx": {"tags": ["1.25"]},  # records only
}


@pytest.fixture(scope="module")
def server(tls, tmp_path_factory):
    """Overrides the package's server: this one has an image catalogue and a short back-off."""
    ca, cert, key = tls
    srv = KubeAPIServer(
        port=0,
        ready_delay=0.2,
        tls=(str(cert), str(key)),
        token=TOKEN,
        images=CATALOGUE,
        pods_dir=str(tmp_path_factory.mktemp("pods")),
        restart_backoff=0.5,
    )
    srv.ca = str(ca)
    srv.start()
    srv.load([*NODES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}])
    yield srv
    srv.stop()


def pod_body(name, image="sandbox.local/prog:v1", env=None, labels=None, **spec):
    container = {
        "name": "main",
        "image": image,
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": env or [],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"containers": [container], **spec},
    }


def create(server, path, body):
    code, obj = call(server, "POST", path, body)
    assert code == 201, obj
    return obj


def get_pod(server, name):
    code, pod = call(server, "GET", f"{PODS}/{name}")
    return pod if code == 200 else None


def ready(pod):
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod or {}).get("status", {}).get("conditions", [])
    )


def container_status(server, name):
    pod = get_pod(server, name)
    return ((pod or {}).get("status") or {}).get("containerStatuses", [{}])[0]


def host_port(pod, container_port=8080):
    return json.loads(pod["metadata"]["annotations"]["sandbox.local/host-ports"])[str(container_port)]


def get(port, path):
    """A GET to a pod's process; a container without a readiness probe is ready once started, which
    can be a moment before its program listens, so a refused connection is tried again."""

    def once():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        except ConnectionRefusedError:
            return None
        finally:
            conn.close()

    return wait_for(once, timeout=10, interval=0.05, what=f"127.0.0.1:{port} to answer")


def events(server, name):
    _, out = call(server, "GET", f"/api/v1/namespaces/shop/events?fieldSelector=involvedObject.name={name}")
    return [(e["reason"], e["message"]) for e in out["items"]]


def gone(pid):
    """The process no longer exists (or is a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def running_pod(server, name, **kw):
    create(server, PODS, pod_body(name, **kw))
    return wait_for(lambda: (p := get_pod(server, name)) and ready(p) and p, what=f"{name} ready")


def test_environment_secret_snapshot_and_endpoints(server):
    create(
        server, "/api/v1/namespaces/shop/secrets", {"metadata": {"name": "s"}, "stringData": {"pw": "one"}}
    )
    create(
        server, "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": "cm"}, "data": {"mode": "fast"}}
    )
    env = [
        {"name": "PLAIN", "value": "x"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    env_from = [{"secretRef": {"name": "s"}, "prefix": "S_"}, {"configMapRef": {"name": "cm"}}]
    first = running_pod(server, "env-a", env=env, container={"envFrom": env_from})
    assert first["status"]["podIP"] == first["status"]["hostIP"] == "127.0.0.1"
    code, seen = get(host_port(first), "/env")
    assert code == 200
    assert {k: seen["env"][k] for k in ("PLAIN", "PASSWORD", "MODE", "S_pw", "mode")} == {
        "PLAIN": "x",
        "PASSWORD": "one",
        "MODE": "fast",
        "S_pw": "one",
        "mode": "fast",
    }
    assert (seen["env"]["POD_NAME"], seen["env"]["POD_NAMESPACE"], seen["env"]["POD_IP"]) == (
        "env-a",
        "shop",
        "127.0.0.1",
    )
    assert seen["env"]["HOSTNAME"] == "env-a" and str(ROOT) in seen["env"]["PYTHONPATH"].split(os.pathsep)
    leaked = set(seen["env"]) - {e["name"] for e in env} - {"S_pw", "mode", "PATH", "HOME", "HOSTNAME"}
    assert leaked <= {"PYTHONPATH", "LC_CTYPE"}, leaked  # nothing else of the host's environment

    code, _ = call(
        server,
        "PATCH",
        "/api/v1/namespaces/shop/secrets/s",
        {"stringData": {"pw": "two"}},
        "application/merge-patch+json",
    )
    assert code == 200
    second = running_pod(server, "env-b", env=env)
    assert get(host_port(first), "/env")[1]["env"]["PASSWORD"] == "one"  # a running process keeps its env
    assert get(host_port(second), "/env")[1]["env"]["PASSWORD"] == "two"

    service = {
        "metadata": {"name": "env"},
        "spec": {"selector": {"app": "env-a"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    }
    create(server, "/api/v1/namespaces/shop/services", service)
    subsets = wait_for(
        lambda: call(server, "GET", "/api/v1/namespaces/shop/endpoints/env")[1].get("subsets"),
        what="endpoints",
    )
    assert subsets == [
        {
            "addresses": [
                {
                    "ip": "127.0.0.1",
                    "nodeName": first["spec"]["nodeName"],
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": "shop",
                        "name": "env-a",
                        "uid": first["metadata"]["uid"],
                    },
                }
            ],
            "ports": [{"name": "web", "port": host_port(first), "protocol": "TCP"}],
        }
    ]


def test_readiness_from_the_probe(server, tmp_path):
    flag = tmp_path / "ready"
    probe = {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    body = pod_body(
        "probed", env=[{"name": "READY_FILE", "value": str(flag)}], container={"readinessProbe": probe}
    )
    create(server, PODS, body)
    create(
        server,
        "/api/v1/namespaces/shop/services",
        {
            "metadata": {"name": "probed"},
            "spec": {"selector": {"app": "probed"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    message = "Readiness probe failed: HTTP probe failed with statuscode: 503"
    wait_for(lambda: ("Unhealthy", message) in events(server, "probed"), what="Unhealthy event")
    pod = get_pod(server, "probed")
    assert not ready(pod) and pod["status"]["phase"] == "Running"
    assert container_status(server, "probed")["ready"] is False
    endpoints = call(server, "GET", "/api/v1/namespaces/shop/endpoints/probed")[1]
    assert endpoints["subsets"][0]["notReadyAddresses"][0]["ip"] == "127.0.0.1"
    flag.touch()
    wait_for(lambda: ready(get_pod(server, "probed")), what="ready after the file exists")
    assert container_status(server, "probed")["ready"] is True
    endpoints = call(server, "GET", "/api/v1/namespaces/shop/endpoints/probed")[1]
    assert endpoints["subsets"][0]["ports"] == [{"port": host_port(pod), "protocol": "TCP"}]


def test_liveness_failure_restarts_the_container(server, tmp_path):
    dead = tmp_path / "dead"
    probe = {"httpGet": {"path": "/health/live", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}
    pod = running_pod(
        server, "lively", env=[{"name": "DEAD_FILE", "value": str(dead)}], container={"livenessProbe": probe}
    )
    pid = get(host_port(pod), "/env")[1]["pid"]
    dead.touch()
    status = wait_for(
        lambda: (
            container_status(server, "lively").get("restartCount") == 1 and container_status(server, "lively")
        ),
        what="a restart",
    )
    dead.unlink()
    assert status["lastState"]["terminated"]["exitCode"] == 0  # it exits on SIGTERM
    assert gone(pid)
    seen = events(server, "lively")
    assert ("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 503") in seen
    assert ("Killing", "Container main failed liveness probe, will be restarted") in seen
    wait_for(lambda: ready(get_pod(server, "lively")), what="ready again")
    assert get(host_port(pod), "/env")[1]["pid"] != pid


def test_crash_loop_back_off(server):
    create(server, PODS, pod_body("crashy", image="sandbox.local/crasher:v1"))
    reasons = set()

    def looping():
        status = container_status(server, "crashy")
        reasons.add((status.get("state", {}).get("waiting") or {}).get("reason"))
        return status.get("restartCount", 0) >= 3 and status

    status = wait_for(looping, timeout=30, interval=0.05, what="three restarts")
    assert "CrashLoopBackOff" in reasons
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert not ready(get_pod(server, "crashy"))
    assert any(
        r == "BackOff" and m.startswith("Back-off restarting failed container main")
        for r, m in events(server, "crashy")
    )


def test_kubectl_logs(server, kubectl):
    running_pod(server, "talky", labels={"app": "talky", "tier": "logs"})
    create(server, PODS, pod_body("crashlog", image="sandbox.local/crasher:v1", labels={"tier": "logs"}))
    wait_for(
        lambda: container_status(server, "crashlog").get("restartCount", 0) >= 1, what="crashlog restarted"
    )
    out = kubectl("logs", "talky").stdout
    # stdout and stderr are two pipes: their lines interleave in the order they came
    start = next(line for line in out.splitlines() if line.startswith("start talky listening on 127.0.0.1:"))
    assert sorted(out.splitlines()) == ["a line on stderr", start]
    assert kubectl("logs", "talky", "--tail=1").stdout == out.splitlines(keepends=True)[-1]
    stamped = kubectl("logs", "talky", "-c", "main", "--timestamps").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == out.splitlines() and stamped[0][:4].isdigit()
    assert kubectl("logs", "talky", "--since=1h").stdout == out
    assert kubectl("logs", "talky", "--since-time=2099-01-01T00:00:00Z").stdout == ""
    previous = kubectl("logs", "crashlog", "--previous").stdout
    assert "start crashlog" in previous and "a line on stderr" in previous
    refused = kubectl("logs", "talky", "--previous", check=False)
    assert (
        refused.returncode != 0
        and 'previous terminated container "main" in pod "talky" not found' in refused.stderr
    )
    both = kubectl("logs", "-l", "tier=logs", "--prefix").stdout
    assert "pod/talky/main" in both and "pod/crashlog/main" in both
    followed = kubectl("logs", "-f", "crashlog", timeout=30).stdout
    assert "start crashlog" in followed
    records = running_pod(server, "plain", image="nginx:1.25")
    assert records["status"]["podIP"].startswith("10.244.")
    assert "started (image nginx:1.25)" in kubectl("logs", "plain").stdout


def test_graceful_and_forced_deletion(server, kubectl):
    pod = running_pod(server, "polite", terminationGracePeriodSeconds=5)
    create(
        server,
        "/api/v1/namespaces/shop/services",
        {
            "metadata": {"name": "polite"},
            "spec": {"selector": {"app": "polite"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    wait_for(
        lambda: call(server, "GET", "/api/v1/namespaces/shop/endpoints/polite")[1].get("subsets"),
        what="endpoints",
    )
    pid = get(host_port(pod), "/env")[1]["pid"]
    code, deleted = call(server, "DELETE", f"{PODS}/polite")
    assert code == 200 and deleted["metadata"]["deletionGracePeriodSeconds"] == 5
    assert deleted["metadata"]["deletionTimestamp"]
    assert call(server, "GET", "/api/v1/namespaces/shop/endpoints/polite")[1].get("subsets", []) == []
    wait_for(lambda: get_pod(server, "polite") is None, what="polite gone")
    assert gone(pid)
    log = next(p for p in server.kubelet.pods_dir.glob("shop_polite_*/main/0.log"))
    assert "SIGTERM received" in log.read_text() and "stopped" in log.read_text()

    stubborn = running_pod(
        server, "stubborn", image="sandbox.local/stubborn:v1", terminationGracePeriodSeconds=1
    )
    pid = get(host_port(stubborn), "/env")[1]["pid"]
    started = time.monotonic()
    kubectl("delete", "pod", "stubborn", "--wait=true", timeout=30)
    assert time.monotonic() - started >= 0.9 and gone(pid)

    forced = running_pod(
        server, "forced", image="sandbox.local/stubborn:v1", terminationGracePeriodSeconds=30
    )
    pid = get(host_port(forced), "/env")[1]["pid"]
    kubectl("delete", "pod", "forced", "--grace-period=0", "--force")
    assert get_pod(server, "forced") is None
    wait_for(lambda: gone(pid), timeout=5, what="forced pod's process killed")


def test_replicaset_replaces_a_terminating_pod_at_once(server):
    template = pod_body(
        "rs", image="sandbox.local/stubborn:v1", labels={"app": "rs"}, terminationGracePeriodSeconds=3
    )
    rs = {
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    create(server, "/apis/apps/v1/namespaces/shop/replicasets", rs)

    def pods():
        return call(server, "GET", f"{PODS}?labelSelector=app=rs")[1]["items"]

    pod = wait_for(lambda: [p for p in pods() if ready(p)], what="rs pod ready")[0]
    get(host_port(pod), "/env")  # its program answers: it ignores SIGTERM from now on
    first = pod["metadata"]["name"]
    call(server, "DELETE", f"{PODS}/{first}")
    both = wait_for(
        lambda: len(pods()) == 2 and pods(), timeout=2, what="a replacement while the old one terminates"
    )
    assert sum(1 for p in both if p["metadata"].get("deletionTimestamp")) == 1
    status = call(server, "GET", "/apis/apps/v1/namespaces/shop/replicasets/rs")[1]["status"]
    assert status["replicas"] == 1
    wait_for(lambda: len(pods()) == 1 and pods()[0]["metadata"]["name"] != first, what="the old pod gone")


def test_uncatalogued_image_fails_to_pull(server):
    create(server, PODS, pod_body("nopull", image="sandbox.local/prog:v9"))
    status = wait_for(
        lambda: (
            (s := container_status(server, "nopull")).get("state", {}).get("waiting", {}).get("reason")
            == "ImagePullBackOff"
            and s
        ),
        what="ImagePullBackOff",
    )
    assert status["state"]["waiting"]["message"] == 'Back-off pulling image "sandbox.local/prog:v9"'
    seen = events(server, "nopull")
    assert ("Pulling", 'Pulling image "sandbox.local/prog:v9"') in seen
    assert ("Failed", "Error: ErrImagePull") in seen
    assert not ready(get_pod(server, "nopull")) and get_pod(server, "nopull")["status"]["phase"] == "Pending"
    # The image fixed in place: the container pulls and runs.
    call(
        server,
        "PATCH",
        f"{PODS}/nopull",
        {"spec": {"containers": [{"name": "main", "image": "sandbox.local/prog:v1"}]}},
        "application/strategic-merge-patch+json",
    )
    wait_for(lambda: ready(get_pod(server, "nopull")), what="ready on the catalogued image")


def test_service_account_admission(server):
    code, refused = call(server, "POST", PODS, pod_body("nosa", serviceAccountName="robot"))
    assert code == 403 and refused["reason"] == "Forbidden"
    assert refused["message"] == (
        'pods "nosa" is forbidden: error looking up service account shop/robot: '
        'serviceaccount "robot" not found'
    )
    template = pod_body("x", image="nginx:1.25", labels={"app": "sa"}, serviceAccountName="robot")
    rs = {
        "metadata": {"name": "sa"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "sa"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    create(server, "/apis/apps/v1/namespaces/shop/replicasets", rs)

    def failure():
        status = call(server, "GET", "/apis/apps/v1/namespaces/shop/replicasets/sa")[1].get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "ReplicaFailure"), None)

    condition = wait_for(failure, what="ReplicaFailure")
    assert condition["status"] == "True" and condition["reason"] == "FailedCreate"
    assert 'pods "sa-' in condition["message"] and 'serviceaccount "robot" not found' in condition["message"]
    assert any(
        r == "FailedCreate" and m.startswith('Error creating: pods "sa-') for r, m in events(server, "sa")
    )
    create(server, "/api/v1/namespaces/shop/serviceaccounts", {"metadata": {"name": "robot"}})
    wait_for(lambda: failure() is None, what="the condition cleared")
    create(server, "/api/v1/namespaces", {"metadata": {"name": "fresh"}})
    assert call(server, "GET", "/api/v1/namespaces/fresh/serviceaccounts/default")[0] == 200


def test_no_process_outlives_the_server(tmp_path):
    pods = [
        pod_body("keep", image="sandbox.local/stubborn:v1")
        | {"metadata": {"name": "keep", "namespace": "default"}}
    ]
    with KubeAPIServer(port=0, ready_delay=0.1, images=CATALOGUE, pods_dir=str(tmp_path / "a")) as srv:
        srv.load(pods)
        pid = wait_for(
            lambda: next(
                iter(
                    p.pid for r in srv.kubelet.pods.values() for c in r.containers.values() if (p := c.proc)
                ),
                None,
            ),
            what="a process",
        )
    assert gone(pid)

    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    (tmp_path / "images.yaml").write_text(yaml.safe_dump({"repositories": CATALOGUE}))
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.kubeapi",
            "--images",
            str(tmp_path / "images.yaml"),
            "--pods-dir",
            str(tmp_path / "b"),
            "--seed",
            str(tmp_path / "pods.yaml"),
        ],
        cwd=ROOT,
    )
    try:
        log = wait_for(
            lambda: next(iter((tmp_path / "b").glob("default_keep_*/main/0.log")), None), what="the pod's log"
        )
        wait_for(lambda: "listening" in log.read_text(), what="the process up")
        pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_child(int(p), emulator.pid))
    finally:
        emulator.send_signal(signal.SIGKILL)
        emulator.wait()
    wait_for(lambda: gone(pid), timeout=5, what="the orphan killed with its emulator")


def _is_child(pid, parent):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1]) == parent
    except (FileNotFoundError, ValueError):
        return False


def test_quiesce_returns_once_the_pods_are_gone(server, kubeconfig):
    """A terminating pod is no longer counted by its ReplicaSet but may still be draining: a quiesce
    returns only once its process has exited."""
    template = pod_body(
        "drainer",
        image="sandbox.local/stubborn:v1",
        labels={"app": "drainer"},
        terminationGracePeriodSeconds=2,
    )
    deployment = {
        "metadata": {"name": "drainer"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "drainer"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    create(server, "/apis/apps/v1/namespaces/shop/deployments", deployment)
    pod = wait_for(
        lambda: [p for p in call(server, "GET", f"{PODS}?labelSelector=app=drainer")[1]["items"] if ready(p)],
        what="drainer ready",
    )[0]
    pid = get(host_port(pod), "/env")[1]["pid"]
    kube = Kube(kubeconfig, None, "shop")
    [entry] = scale_all(kube, [{"name": "drainer", "kind": "Deployment"}], "down", "INC-Q", timeout=30)
    assert entry["previous_replicas"] == 1 and entry["replicas"] == 0
    assert gone(pid), "the quiesce returned while the pod's process still ran"
    assert call(server, "GET", f"{PODS}?labelSelector=app=drainer")[1]["items"] == []
