"""HTTP-level behaviour of the emulated API server: discovery, CRUD semantics, watches,
subresources, controllers, garbage collection and the CLI."""

import http.client
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys

from driver import ROOT
from sandbox.kubeapi import KubeAPIServer, write_kubeconfig
from sandbox.kubeapi.store import APIError

from .conftest import TOKEN, wait_for

DEPLOY = "/apis/apps/v1/namespaces/shop/deployments"
PODS = "/api/v1/namespaces/shop/pods"


def client_tls(server):
    return ssl.create_default_context(cafile=server.ca)


def call(server, method, path, body=None, ctype="application/json", headers=None, token=TOKEN):
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=client_tls(server))
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, data, {"Content-Type": ctype, **auth, **(headers or {})})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    is_json = resp.getheader("Content-Type", "").startswith("application/json")
    return resp.status, json.loads(raw) if is_json else raw.decode()


def workload(kind, name, replicas=1, image="app:1", **spec):
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
            **spec,
        },
    }


def ready_pods(server, app):
    """The pods labelled app=<app> in shop whose container is ready."""
    return [
        p
        for p in call(server, "GET", f"{PODS}?labelSelector=app%3D{app}")[1]["items"]
        if p["status"].get("containerStatuses", [{}])[0].get("ready")
    ]


def watch_lines(server, path, limit, timeout=10):
    """First `limit` events of a watch stream (the socket is closed afterwards)."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock = client_tls(server).wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    buf, events = b"", []
    while len(events) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        events = [json.loads(line) for line in buf.split(b"\r\n") if line.startswith(b"{")]
    sock.close()
    assert b"Content-Type: application/json" in buf and b"Transfer-Encoding: chunked" in buf
    return events


def test_health_version_discovery(server):
    assert call(server, "GET", "/healthz") == (200, "ok")
    assert call(server, "GET", "/version")[1]["major"] == "1"
    assert call(server, "GET", "/api")[1]["versions"] == ["v1"]
    groups = {g["name"]: g for g in call(server, "GET", "/apis")[1]["groups"]}
    assert {"apps", "batch", "policy", "coordination.k8s.io", "rbac.authorization.k8s.io"} <= set(groups)
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    core = {r["name"]: r for r in call(server, "GET", "/api/v1")[1]["resources"]}
    assert core["pods/eviction"]["group"] == "policy" and core["pods/eviction"]["kind"] == "Eviction"
    assert core["pods"]["shortNames"] == ["po"] and core["nodes"]["namespaced"] is False
    apps = {r["name"]: r for r in call(server, "GET", "/apis/apps/v1")[1]["resources"]}
    assert (
        apps["deployments/scale"]["kind"] == "Scale" and apps["deployments/scale"]["group"] == "autoscaling"
    )
    assert "deployments/status" in apps and "statefulsets/scale" in apps
    index = call(server, "GET", "/openapi/v3")[1]["paths"]
    doc = call(server, "GET", index["apis/apps/v1"]["serverRelativeURL"])[1]
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert call(server, "GET", "/apis/nope/v1")[0] == 404


def test_create_semantics(server):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cfg-"}, "data": {"a": "1"}}
    code, obj = call(server, "POST", "/api/v1/namespaces/shop/configmaps", cm)
    assert code == 201 and obj["metadata"]["name"].startswith("cfg-") and len(obj["metadata"]["name"]) == 9
    assert (
        obj["metadata"]["uid"] and obj["metadata"]["creationTimestamp"] and obj["metadata"]["resourceVersion"]
    )
    named = dict(cm, metadata={"name": "dry"})
    code, obj = call(server, "POST", "/api/v1/namespaces/shop/configmaps?dryRun=All", named)
    assert code == 201 and call(server, "GET", "/api/v1/namespaces/shop/configmaps/dry")[0] == 404
    call(server, "POST", "/api/v1/namespaces/shop/configmaps", named)
    code, status = call(server, "POST", "/api/v1/namespaces/shop/configmaps", named)
    assert (code, status["kind"], status["reason"]) == (409, "Status", "AlreadyExists")
    code, status = call(server, "POST", "/api/v1/namespaces/missing/configmaps", named)
    assert code == 404 and status["reason"] == "NotFound"
    bad = workload("Deployment", "bad")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    code, status = call(server, "POST", DEPLOY, bad)
    assert code == 422 and status["reason"] == "Invalid"
    code, status = call(server, "POST", DEPLOY, dict(workload("Deployment", "x"), kind="StatefulSet"))
    assert code == 400 and status["reason"] == "BadRequest"
    code, status = call(server, "POST", DEPLOY, b"\x0a\x04k8s", ctype="application/vnd.kubernetes.protobuf")
    assert code == 415
    listing = call(server, "GET", "/api/v1/configmaps?labelSelector=missing")[1]
    assert (
        listing["kind"] == "ConfigMapList"
        and listing["items"] == []
        and listing["metadata"]["resourceVersion"]
    )


def test_generation_status_subresource_and_conflicts(server):
    code, dep = call(
        server, "POST", DEPLOY, dict(workload("Deployment", "gen", replicas=0), status={"replicas": 9})
    )
    assert code == 201 and dep["metadata"]["generation"] == 1 and "replicas" not in dep.get("status", {})
    code, dep = call(
        server, "PATCH", f"{DEPLOY}/gen", {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json"
    )
    assert dep["metadata"]["generation"] == 1
    code, dep = call(
        server,
        "PATCH",
        f"{DEPLOY}/gen",
        {"spec": {"paused": True}, "status": {"replicas": 5}},
        "application/merge-patch+json",
    )
    assert dep["metadata"]["generation"] == 2 and dep.get("status", {}).get("replicas") != 5
    code, dep = call(
        server,
        "PATCH",
        f"{DEPLOY}/gen/status",
        {"status": {"collisionCount": 7}, "spec": {"replicas": 4}},
        "application/merge-patch+json",
    )
    assert dep["status"]["collisionCount"] == 7 and dep["spec"]["replicas"] == 0
    stale = dict(dep, metadata=dict(dep["metadata"], resourceVersion="1"))
    code, status = call(server, "PUT", f"{DEPLOY}/gen", stale)
    assert code == 409 and status["reason"] == "Conflict"
    ops = [{"op": "test", "path": "/spec/replicas", "value": 3}]
    assert call(server, "PATCH", f"{DEPLOY}/gen", ops, "application/json-patch+json")[0] == 422
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 1}]
    code, dep = call(server, "PATCH", f"{DEPLOY}/gen?dryRun=All", ops, "application/json-patch+json")
    assert dep["spec"]["replicas"] == 1 and call(server, "GET", f"{DEPLOY}/gen")[1]["spec"]["replicas"] == 0
    code, dep = call(
        server, "PATCH", f"{DEPLOY}/gen", b"spec:\n  replicas: 1\n", "application/apply-patch+yaml"
    )
    assert code == 200 and dep["spec"]["replicas"] == 1
    code, scale = call(server, "GET", f"{DEPLOY}/gen/scale")
    assert (scale["kind"], scale["apiVersion"], scale["spec"]["replicas"]) == ("Scale", "autoscaling/v1", 1)
    assert scale["status"]["selector"] == "app=gen"
    code, scale = call(
        server, "PUT", f"{DEPLOY}/gen/scale", dict(scale, metadata={"name": "gen"}, spec={"replicas": 2})
    )
    assert code == 200 and call(server, "GET", f"{DEPLOY}/gen")[1]["spec"]["replicas"] == 2
    assert call(server, "DELETE", f"{DEPLOY}/gen")[0] == 200


def test_watch_initial_replay_and_gone(server):
    path = "/api/v1/namespaces/shop/configmaps"
    _code, first = call(server, "POST", path, {"metadata": {"name": "w1", "labels": {"w": "1"}}})
    rv = first["metadata"]["resourceVersion"]
    call(server, "PATCH", f"{path}/w1", {"data": {"a": "b"}}, "application/merge-patch+json")
    call(server, "POST", path, {"metadata": {"name": "w2", "labels": {"w": "2"}}})
    call(server, "DELETE", f"{path}/w1")
    events = watch_lines(server, f"{path}?watch=1&resourceVersion={rv}&labelSelector=w%3D1", 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "w1"),
        ("DELETED", "w1"),
    ]
    events = watch_lines(server, "/api/v1/watch/namespaces/shop/configmaps?labelSelector=w", 1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["kind"] == "ConfigMap"
    events = watch_lines(server, f"{path}?watch=true&timeoutSeconds=1&fieldSelector=metadata.name%3Dw2", 5)
    assert [e["object"]["metadata"]["name"] for e in events] == ["w2"]  # stream ended after the timeout
    server.store.compacted = int(rv)
    try:
        events = watch_lines(server, f"{path}?watch=1&resourceVersion=1", 1)
    finally:
        server.store.compacted = 0
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
    wait_for(lambda: not server.store.watchers, what="watchers to be released")


def test_statefulset_daemonset_and_garbage_collection(server):
    sts = workload("StatefulSet", "db", replicas=3, serviceName="db")
    assert call(server, "POST", "/apis/apps/v1/namespaces/shop/statefulsets", sts)[0] == 201
    wait_for(
        lambda: (
            call(server, "GET", "/apis/apps/v1/namespaces/shop/statefulsets/db")[1]
            .get("status", {})
            .get("readyReplicas")
            == 3
        ),
        what="statefulset ready",
    )
    pods = call(server, "GET", f"{PODS}?labelSelector=app%3Ddb")[1]["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1", "db-2"]
    assert pods[0]["metadata"]["creationTimestamp"] <= pods[2]["metadata"]["creationTimestamp"]
    status = call(server, "GET", "/apis/apps/v1/namespaces/shop/statefulsets/db")[1]["status"]
    assert (
        status["currentRevision"]
        == status["updateRevision"]
        == pods[0]["metadata"]["labels"]["controller-revision-hash"]
    )
    ds = workload("DaemonSet", "agent")
    ds["spec"].pop("replicas")
    call(server, "POST", "/apis/apps/v1/namespaces/shop/daemonsets", ds)
    wait_for(
        lambda: (
            sorted(
                p["spec"]["nodeName"]
                for p in call(server, "GET", f"{PODS}?labelSelector=app%3Dagent")[1]["items"]
            )
            == ["node-1", "node-2"]
        ),
        what="one daemon pod per node",
    )
    call(server, "POST", DEPLOY, workload("Deployment", "orphaned", replicas=1))
    wait_for(lambda: call(server, "GET", f"{PODS}?labelSelector=app%3Dorphaned")[1]["items"], what="pod")
    call(server, "DELETE", f"{DEPLOY}/orphaned", {"propagationPolicy": "Orphan"})
    rs = call(server, "GET", "/apis/apps/v1/namespaces/shop/replicasets?labelSelector=app%3Dorphaned")[1][
        "items"
    ]
    assert len(rs) == 1 and not rs[0]["metadata"].get("ownerReferences")
    call(server, "DELETE", "/apis/apps/v1/namespaces/shop/statefulsets/db")
    call(server, "DELETE", "/apis/apps/v1/namespaces/shop/daemonsets/agent")
    wait_for(
        lambda: not call(server, "GET", f"{PODS}?labelSelector=app+in+(db,agent)")[1]["items"], what="GC"
    )
    assert call(server, "GET", f"{PODS}?labelSelector=app%3Dorphaned")[1]["items"]


def test_eviction_and_pod_lifecycle(server):
    server.load(
        [
            workload("Deployment", "guarded", replicas=2)
            | {"metadata": {"name": "guarded", "namespace": "shop"}},
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "g", "namespace": "shop"},
                "spec": {"minAvailable": "100%", "selector": {"matchLabels": {"app": "guarded"}}},
            },
        ]
    )
    pods = wait_for(lambda: ready_pods(server, "guarded"), what="ready pods")
    pod = pods[0]
    assert pod["spec"]["nodeName"] in ("node-1", "node-2") and pod["status"]["phase"] == "Running"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod["metadata"]["name"]}}
    code, status = call(server, "POST", f"{PODS}/{pod['metadata']['name']}/eviction", eviction)
    assert (code, status["reason"]) == (429, "TooManyRequests") and "disruption budget" in status["message"]
    assert "started" in call(server, "GET", f"{PODS}/{pod['metadata']['name']}/log")[1]
    call(
        server,
        "PATCH",
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/g",
        {"spec": {"minAvailable": 1}},
        "application/merge-patch+json",
    )
    code, status = call(server, "POST", f"{PODS}/{pod['metadata']['name']}/eviction", eviction)
    assert code == 201 and call(server, "GET", f"{PODS}/{pod['metadata']['name']}")[0] == 404
    events = call(
        server, "GET", "/api/v1/namespaces/shop/events?fieldSelector=involvedObject.name%3Dguarded"
    )[1]
    assert any(e["reason"] == "ScalingReplicaSet" for e in events["items"])
    code, _ = call(server, "DELETE", f"{PODS}?labelSelector=app%3Dguarded")
    assert code == 200


def test_kubeconfig_and_cli(tmp_path, tls):
    ca, cert, key = tls
    path = write_kubeconfig(str(tmp_path / "config"), "https://127.0.0.1:1", "shop", token=TOKEN, ca_file=ca)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    seed, ready = tmp_path / "seed.yaml", tmp_path / "ready"
    seed.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: seeded}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: other}\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.kubeapi",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--ready-file",
            str(ready),
            "--ready-delay",
            "0.1",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--token-file",
            str(token_file),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: ready.exists(), timeout=20, what="ready file")
        port = int(ready.read_text())
        fake = KubeAPIServer(port=port)
        fake.ca = str(ca)
        assert call(fake, "GET", "/api/v1/namespaces/seeded")[0] == 200
        assert call(fake, "GET", "/api/v1/namespaces/other/configmaps/c")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_recreate_strategy_and_scale_to_zero(server):
    dep = workload("Deployment", "rec", replicas=2, strategy={"type": "Recreate"})
    call(server, "POST", DEPLOY, dep)

    def status():
        return call(server, "GET", f"{DEPLOY}/rec")[1].get("status", {})

    wait_for(lambda: status().get("availableReplicas") == 2, what="rec available")
    seen = []
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:2"}]}}}}
    call(server, "PATCH", f"{DEPLOY}/rec", patch, "application/strategic-merge-patch+json")

    def images():
        pods = call(server, "GET", f"{PODS}?labelSelector=app%3Drec")[1]["items"]
        seen.append({p["spec"]["containers"][0]["image"] for p in pods})
        return seen[-1] == {"app:2"} and len(pods) == 2 and status().get("availableReplicas") == 2

    wait_for(images, what="recreated pods")
    assert {"app:1", "app:2"} not in seen  # old and new pods never ran together
    call(server, "PATCH", f"{DEPLOY}/rec/scale", {"spec": {"replicas": 0}}, "application/merge-patch+json")
    wait_for(
        lambda: not call(server, "GET", f"{PODS}?labelSelector=app%3Drec")[1]["items"], what="scaled to 0"
    )
    assert status().get("replicas") is None and status()["observedGeneration"] == 3
    call(server, "PATCH", f"{DEPLOY}/rec/scale", {"spec": {"replicas": 1}}, "application/merge-patch+json")
    wait_for(lambda: status().get("availableReplicas") == 1, what="scaled back to 1")


def test_malformed_object_does_not_stop_controllers(server):
    bad = workload("Deployment", "weird", replicas=1)
    bad["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "lots"}}
    assert call(server, "POST", DEPLOY, bad)[0] == 201
    call(server, "POST", DEPLOY, workload("Deployment", "fine", replicas=1))
    wait_for(
        lambda: call(server, "GET", f"{DEPLOY}/fine")[1].get("status", {}).get("availableReplicas") == 1,
        what="the healthy deployment to keep reconciling",
    )


def test_budget_counts_the_pods_the_controller_wants(server):
    """Back-to-back evictions, before the controller has replaced the first pod, must not both pass:
    kubectl drain evicts a node's pods in parallel."""
    server.load(
        [
            workload("Deployment", "budgeted", replicas=3)
            | {"metadata": {"name": "budgeted", "namespace": "shop"}},
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "b", "namespace": "shop"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "budgeted"}}},
            },
        ]
    )
    wait_for(lambda: len(ready_pods(server, "budgeted")) == 3, what="three ready pods")
    pods = [p["metadata"]["name"] for p in ready_pods(server, "budgeted")]
    refused = []
    with server.api.store.lock:  # the controllers wait: no replacement pod exists between the two
        server.api.evict("shop", pods[0])
        try:
            server.api.evict("shop", pods[1])
        except APIError as exc:
            refused.append(exc.code)
    assert refused == [429]
    assert call(server, "GET", f"{PODS}/{pods[1]}")[0] == 200
    call(server, "DELETE", "/apis/apps/v1/namespaces/shop/deployments/budgeted")


def test_the_door_needs_the_ca_and_the_token(server, kubectl, kube_env, tmp_path):
    """As on a cluster: TLS with the sandbox's CA, and 401 for a missing or wrong bearer token."""
    assert call(server, "GET", "/healthz", token=None) == (200, "ok")  # anonymous, as on a cluster
    assert call(server, "GET", "/version", token=None)[0] == 200
    code, body = call(server, "GET", "/api/v1/namespaces", token=None)
    assert code == 401 and body["reason"] == "Unauthorized"
    assert call(server, "GET", "/api/v1/namespaces", token="not-the-token")[0] == 401
    assert call(server, "GET", "/api/v1/namespaces")[0] == 200
    # A client that does not trust the CA fails the handshake.
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, timeout=10, context=ssl.create_default_context()
    )
    try:
        conn.request("GET", "/healthz")
        raise AssertionError("a client without the sandbox's CA was served")
    except ssl.SSLCertVerificationError:
        pass
    finally:
        conn.close()
    # Plain HTTP gets nothing.
    plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        plain.request("GET", "/api/v1/namespaces")
        plain.getresponse()
        raise AssertionError("plain HTTP was served")
    except (http.client.HTTPException, ConnectionError, OSError):
        pass
    finally:
        plain.close()
    # kubectl with a wrong token is refused; with the kubeconfig's it works.
    wrong = kubectl("get", "namespaces", "--token", "not-the-token", check=False)
    assert wrong.returncode != 0 and "You must be logged in to the server" in wrong.stderr
    assert kubectl("get", "namespaces", "-o", "name").returncode == 0
