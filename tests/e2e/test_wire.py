"""The running platform as a client sees it: the application's pods answer through the ingress, a
NetworkPolicy shuts them off, a changed Secret reaches only the pods started after it, Prometheus
scrapes the pods' metrics and their logs are there to read."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from tests.conftest import call, incident_id, secret_value, wait_for


def set_secret_value(kube, name: str, key: str, value: str) -> None:
    kube.patch("Secret", name, {"data": {key: base64.b64encode(value.encode()).decode()}}, patch_type="merge")


def test_a_network_policy_shuts_the_api_off_through_the_ingress(target):
    kube = target.kube()
    assert call(target, "/health/ready") == 200
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "wire-deny-api", "namespace": target.namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
            "policyTypes": ["Ingress"],
        },
    }
    kube.create("NetworkPolicy", policy)
    try:
        wait_for(lambda: call(target, "/health/ready") == 503, timeout=30, what="503 with the api isolated")
    finally:
        kube.delete("NetworkPolicy", "wire-deny-api")
    # Served steadily, not once: just after nginx reloads, workers of its previous configuration (with
    # the policy) finish their connections and may still answer 503 for a moment.
    wait_for(lambda: steadily(target, "/health/ready", 200), timeout=60, what="200 once the policy is gone")


def steadily(target, path: str, status: int, times: int = 5) -> bool:
    for _ in range(times):
        if call(target, path) != status:
            return False
        time.sleep(0.2)
    return True


def test_a_changed_api_key_reaches_only_pods_started_after_it(target, driver):
    """As on a cluster: the running pods keep the key they started with; a restart gives the new one."""
    kube = target.kube()
    old = secret_value(kube, "api-keys", "admin-key")
    new = "wire-" + incident_id("KEY").lower()
    assert call(target, "/api/markets", old) == 200
    assert call(target, "/api/markets", "not-the-key") == 401
    set_secret_value(kube, "api-keys", "admin-key", new)
    try:
        assert call(target, "/api/markets", old) == 200 and call(target, "/api/markets", new) == 401
        assert driver("restart", "--service", "api", "--incident", incident_id()).rc == 0
        wait_for(lambda: call(target, "/api/markets", new) == 200, timeout=30, what="the new key accepted")
        assert call(target, "/api/markets", old) == 401
    finally:
        set_secret_value(kube, "api-keys", "admin-key", old)
        assert driver("restart", "--service", "api", "--incident", incident_id()).rc == 0
    wait_for(lambda: call(target, "/api/markets", old) == 200, timeout=30, what="the old key back")


def test_prometheus_scrapes_the_application_pods(target):
    prometheus = target.status["prometheus"]["url"]
    for _ in range(20):
        assert call(target, "/") == 200

    def query(expr: str) -> list:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)["data"]["result"]

    def serving_pods() -> set[str]:
        """The api's pods now, those being deleted left out (their targets go as they do)."""
        pods = target.kube().list("Pod", label_selector="app.kubernetes.io/name=api")
        return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}

    wait_for(
        lambda: {r["metric"].get("pod") for r in query('up{service="api"} == 1')} >= serving_pods(),
        timeout=60,
        what="Prometheus scraping every api pod",
    )
    wait_for(
        lambda: sum(float(r["value"][1]) for r in query('http_requests_total{service="api"}')) >= 20,
        timeout=60,
        what="the api's request counter in Prometheus",
    )


def test_kubectl_logs_show_the_requests(target, tmp_path):
    for _ in range(3):
        call(target, "/api/markets", "not-the-key")

    def logs() -> str | None:
        proc = subprocess.run(
            ["kubectl", "logs", "-l", "app.kubernetes.io/name=api", "-n", target.namespace, "--tail", "200"],
            # A HOME of its own: kubectl keeps its discovery cache there, not in the project.
            env={"KUBECONFIG": target.kubeconfig, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout if "/api/markets" in proc.stdout and "401" in proc.stdout else None

    # The kubelet copies a container's output to its log as it comes: wait for the lines to land.
    out = wait_for(logs, timeout=20, what="the refused requests in the api's logs")
    assert "not-the-key" not in out  # a refused key is logged by name, never its value
