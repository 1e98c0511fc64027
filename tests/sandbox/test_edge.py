"""The sandbox's edge, for real: nginx routed by the sandbox's ingress controller, Prometheus scraping
what the controller discovers, Alertmanager delivering to the receiver.

No real pods: as Kubernetes allows, a Service without a selector gets an Endpoints object made by
hand, pointing at an HTTP server this module starts on 127.0.0.1 (which also serves /metrics).
Pods are created as records only where a NetworkPolicy or Prometheus needs one, with the
``sandbox.local/host-ports`` annotation the kubelet would publish. Everything lives in a namespace
of its own, deleted at the end.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube, KubeError
from tests.conftest import wait_for

NS = "edge-test"


class Backend(ThreadingHTTPServer):
    """``/slow`` answers once ``release`` is set; ``/metrics`` a counter; anything else its name."""

    daemon_threads = True

    def __init__(self, name: str):
        self.name = name
        self.requests = 0
        self.slow_arrived = threading.Event()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), BackendHandler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class BackendHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests += 1
        if self.path == "/metrics":
            body = (
                f"# TYPE edge_test_requests_total counter\nedge_test_requests_total {self.server.requests}\n"
            )
        else:
            if self.path == "/slow":
                self.server.slow_arrived.set()
                self.server.release.wait(30)
            body = f"{self.server.name} {self.path}\n"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Edge:
    def __init__(self, status: dict):
        self.status = status
        self.kube = Kube(status["kubeconfig"], None, NS)
        self.ingress = urlsplit(status["ingress"]["url"])

    def post(self, path: str, body: dict) -> dict:
        return self.kube.request("POST", path, body=body)

    def delete(self, path: str) -> None:
        try:
            self.kube.request("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise

    def service(self, name: str, port_name: str = "http") -> None:
        """A Service without a selector: its Endpoints are whatever the test writes."""
        spec = {"ports": [{"name": port_name, "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        self.post(f"/api/v1/namespaces/{NS}/services", {"metadata": {"name": name}, "spec": spec})

    def endpoints(self, name: str, port: int | None, pod: str | None = None, port_name: str = "http") -> None:
        subsets = []
        if port is not None:
            address = {"ip": "127.0.0.1"}
            if pod:
                address["targetRef"] = {"kind": "Pod", "namespace": NS, "name": pod}
            subsets = [
                {"addresses": [address], "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
            ]
        body = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name}, "subsets": subsets}
        path = f"/api/v1/namespaces/{NS}/endpoints"
        try:
            self.kube.request("PUT", f"{path}/{name}", body=body)
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.post(path, body)

    def ingress_for(self, name: str, host: str, service: str, annotations=None, cls="nginx", **path) -> None:
        rule_path = {
            "path": path.get("path", "/"),
            "pathType": path.get("path_type", "Prefix"),
            "backend": {"service": {"name": service, "port": {"number": 80}}},
        }
        body = {
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"ingressClassName": cls, "rules": [{"host": host, "http": {"paths": [rule_path]}}]},
        }
        self.post(f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses", body)

    def get(self, host: str, path: str = "/", timeout: float = 10) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.ingress.hostname, self.ingress.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host})
            answer = conn.getresponse()
            return answer.status, answer.read().decode(errors="replace")
        finally:
            conn.close()

    def wait_status(self, host: str, expected: int, path: str = "/", what: str = "", body=None) -> str:
        """Waits until ``host`` answers ``expected`` (and ``body``, when given) on ``path``."""

        def check():
            status, text = self.get(host, path)
            return (text or True) if status == expected and body in (None, text) else None

        return wait_for(check, timeout=20, interval=0.1, what=what or f"{host}{path} answering {expected}")


def pod_at(name: str, port: int) -> dict:
    """A pod record whose container port 8080 answers on 127.0.0.1:port, as the kubelet publishes a
    running pod's ports; its image is in the catalogue as records only, so it is pulled and Running
    but never run (the test's own server stands in for its process)."""
    return {
        "metadata": {
            "name": f"{name}-0",
            "labels": {"app.kubernetes.io/name": name},
            "annotations": {"sandbox.local/host-ports": json.dumps({"8080": port})},
        },
        "spec": {
            "containers": [
                {"name": "app", "image": "nginx:1.25", "ports": [{"containerPort": 8080, "name": "http"}]}
            ]
        },
    }


def get_json(url: str, data: bytes | None = None, method: str | None = None):
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def edge(target):
    if target.status is None:
        pytest.skip("runs only where the test session started the sandbox")
    edge = Edge(target.status)
    edge.kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    try:
        yield edge
    finally:
        edge.delete(f"/api/v1/namespaces/{NS}")


@pytest.fixture(scope="module")
def web(edge):
    backend = Backend("web")
    edge.service("web")
    edge.endpoints("web", backend.port)
    yield backend
    backend.release.set()
    backend.shutdown()
    backend.server_close()


def test_status_and_endpoints_give_the_edge(target, edge):
    status = target.status
    assert (
        status["running"]["ingress"] and status["running"]["prometheus"] and status["running"]["alertmanager"]
    )
    assert status["ingress"]["url"].startswith("http://127.0.0.1:")
    assert status["ingress"]["host"] == "api.matchbook.example"
    endpoints = json.loads((Path(status["dir"]) / "endpoints.json").read_text())
    for part in ("ingress", "prometheus", "alertmanager"):
        assert endpoints[part]["url"] == status[part]["url"]
    # The seeded Ingress is routed: its Service answers (or is unavailable), never "no such host".
    assert edge.get("api.matchbook.example")[0] != 404


def test_host_and_path_rules_reach_a_service_through_its_endpoints(edge, web):
    edge.ingress_for("web", "web.edge.test", "web")
    edge.ingress_for("web-exact", "exact.edge.test", "web", path="/only", path_type="Exact")
    edge.ingress_for("web-prefix", "prefix.edge.test", "web", path="/api", path_type="Prefix")
    edge.ingress_for("other-class", "other.edge.test", "web", cls="traefik")
    # Each check waits: right after a reload, a worker of the previous configuration may still
    # take a connection or two (nginx's workers stop accepting one by one).
    assert edge.wait_status("web.edge.test", 200, "/x/y") == "web /x/y\n"
    edge.wait_status("prefix.edge.test", 200, "/api/orders")
    edge.wait_status("prefix.edge.test", 200, "/api")
    edge.wait_status("prefix.edge.test", 404, "/apix")  # Prefix matches whole path elements
    edge.wait_status("exact.edge.test", 200, "/only")
    edge.wait_status("exact.edge.test", 404, "/only/more")
    edge.wait_status("other.edge.test", 404)  # another class's Ingress is not ours
    edge.wait_status("unknown.edge.test", 404)


def test_no_endpoints_is_503_and_the_default_backend_annotation_takes_over(edge):
    fallback = Backend("fallback")
    try:
        edge.service("empty")
        edge.endpoints("empty", None)
        edge.service("fallback")
        edge.endpoints("fallback", fallback.port)
        edge.ingress_for("empty", "empty.edge.test", "empty")
        annotation = {"nginx.ingress.kubernetes.io/default-backend": "fallback"}
        edge.ingress_for("rescued", "rescued.edge.test", "empty", annotations=annotation)
        edge.wait_status("empty.edge.test", 503)
        assert edge.wait_status("rescued.edge.test", 200, "/a") == "fallback /a\n"
        # Once the Service has endpoints again, it gets the traffic back.
        main = Backend("main")
        try:
            edge.endpoints("empty", main.port)
            edge.wait_status("rescued.edge.test", 200, "/b", what="main again", body="main /b\n")
        finally:
            main.shutdown()
            main.server_close()
    finally:
        fallback.shutdown()
        fallback.server_close()


def test_a_network_policy_closing_the_pod_to_the_ingress_controller_gives_503(edge):
    backend = Backend("guarded")
    pod = pod_at("guarded", backend.port)
    policies = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    deny = {
        "metadata": {"name": "deny-all"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    from_ingress = {
        "metadata": {"name": "from-ingress-nginx"},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "guarded"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                            },
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        },
    }
    other_port = {
        "metadata": {"name": "only-9090"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 9090}]}]},
    }
    try:
        edge.post(f"/api/v1/namespaces/{NS}/pods", pod)
        edge.service("guarded")
        edge.endpoints("guarded", backend.port, pod="guarded-0")
        edge.ingress_for("guarded", "guarded.edge.test", "guarded")
        edge.wait_status("guarded.edge.test", 200)
        edge.post(policies, deny)
        edge.wait_status("guarded.edge.test", 503, what="the deny-all policy enforced")
        edge.post(policies, other_port)  # admits everyone, but on another port only
        edge.post(policies, from_ingress)  # policies add up: this one admits the controller
        edge.wait_status("guarded.edge.test", 200, what="the ingress-nginx rule admitting")
        edge.delete(f"{policies}/from-ingress-nginx")
        edge.wait_status("guarded.edge.test", 503, what="closed again")
        edge.delete(f"{policies}/deny-all")
        edge.delete(f"{policies}/only-9090")
        edge.wait_status("guarded.edge.test", 200, what="open once the policies are gone")
    finally:
        for name in ("deny-all", "from-ingress-nginx", "only-9090"):
            edge.delete(f"{policies}/{name}")
        backend.shutdown()
        backend.server_close()


def test_a_reload_lets_a_request_in_flight_finish(edge, web):
    edge.ingress_for("slow", "slow.edge.test", "web")
    edge.wait_status("slow.edge.test", 200)
    web.release.clear()
    result: dict = {}

    def slow_request():
        try:
            result["answer"] = edge.get("slow.edge.test", "/slow", timeout=30)
        except OSError as exc:
            result["error"] = exc

    # Right after a reload (the earlier tests' changes) a worker of the previous configuration may
    # still take a connection and answer it from that configuration: send again until one is
    # in flight at the backend.
    for _attempt in range(20):
        web.slow_arrived.clear()
        result.clear()
        thread = threading.Thread(target=slow_request)
        thread.start()
        wait_for(lambda t=thread: web.slow_arrived.is_set() or not t.is_alive(), timeout=10, interval=0.02)
        if web.slow_arrived.is_set():
            break
        thread.join()
    else:
        log = Path(edge.status["dir"]) / "logs" / "ingress-access.log"
        raise AssertionError(f"no slow request reached the backend: {result}; {log.read_text()[-2000:]}")
    try:
        edge.ingress_for("after-reload", "after-reload.edge.test", "web")
        edge.wait_status("after-reload.edge.test", 200, what="nginx reloaded with the new Ingress")
    finally:
        web.release.set()
        thread.join(30)
    assert result.get("answer") == (200, "web /slow\n"), result


def test_prometheus_scrapes_the_running_pods_it_discovers(edge, web):
    pod = pod_at("scraped", web.port)
    edge.post(f"/api/v1/namespaces/{NS}/pods", pod)
    prometheus = edge.status["prometheus"]["url"]
    targets_file = Path(edge.status["dir"]) / "prometheus" / "targets" / "pods.json"

    def discovered():
        return [t for t in json.loads(targets_file.read_text()) if t["labels"]["pod"] == "scraped-0"]

    (entry,) = wait_for(discovered, timeout=20, interval=0.1, what="the pod in the file_sd file")
    assert entry == {
        "targets": [f"127.0.0.1:{web.port}"],
        "labels": {"namespace": NS, "pod": "scraped-0", "service": "scraped", "container": "app"},
    }

    def scraped():
        targets = get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        return [t for t in targets if t["labels"].get("pod") == "scraped-0" and t["health"] == "up"]

    wait_for(scraped, timeout=30, interval=0.2, what="Prometheus scraping the pod")
    query = quote('edge_test_requests_total{pod="scraped-0",namespace="edge-test",job="pods"}')

    def sample():
        return get_json(f"{prometheus}/api/v1/query?query={query}")["data"]["result"]

    (series,) = wait_for(sample, timeout=20, interval=0.2, what="the backend's metric in Prometheus")
    assert float(series["value"][1]) >= 1 and series["metric"]["service"] == "scraped"


def test_alertmanager_delivers_alerts_to_the_receiver(edge):
    receiver = edge.status["receiver"]["url"]
    alertmanager = edge.status["alertmanager"]["url"]
    prometheus = edge.status["prometheus"]["url"]

    def delivered(name):
        def check():
            for call in get_json(f"{receiver}/_received?path_prefix=/alertmanager"):
                for alert in (call["body"] or {}).get("alerts", []):
                    if alert["labels"].get("alertname") == name:
                        return call
            return None

        return check

    posted = [{"labels": {"alertname": "EdgeTestPosted", "severity": "info"}}]
    get_json(f"{alertmanager}/api/v2/alerts", json.dumps(posted).encode(), "POST")
    call = wait_for(delivered("EdgeTestPosted"), timeout=20, interval=0.2, what="the posted alert delivered")
    assert call["method"] == "POST" and call["path"] == "/alertmanager" and call["status"] == 200
    amtool = subprocess.run(
        ["amtool", f"--alertmanager.url={alertmanager}", "alert", "query", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert amtool.returncode == 0, amtool.stderr
    assert "EdgeTestPosted" in amtool.stdout

    rules = Path(edge.status["prometheus"]["rules_dir"]) / "edge-test.yml"
    rules.write_text(
        "groups:\n"
        "  - name: edge-test\n"
        "    rules:\n"
        "      - alert: EdgeTestRule\n"
        "        expr: vector(1) > 0\n"
        "        for: 0s\n"
        "        labels: {severity: info}\n"
    )
    try:
        get_json(f"{prometheus}/-/reload", b"", "POST")
        wait_for(delivered("EdgeTestRule"), timeout=30, interval=0.2, what="the rule's alert delivered")
    finally:
        rules.unlink()
        get_json(f"{prometheus}/-/reload", b"", "POST")


def _policy(spec, namespace=NS):
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


POD = {"metadata": {"name": "p-0", "namespace": NS, "labels": {"app": "x"}}}


@pytest.mark.parametrize(
    ("rule", "port", "admitted"),
    [
        ({"from": [{"ipBlock": {"cidr": "127.0.0.0/8"}}]}, 8080, True),
        ({"from": [{"ipBlock": {"cidr": "127.0.0.0/8", "except": ["127.0.0.1/32"]}}]}, 8080, False),
        ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}, 8080, False),
        ({"from": [{"namespaceSelector": {}}]}, 8080, True),  # every namespace
        ({"from": [{"podSelector": {}}]}, 8080, False),  # pods of the policy's namespace only
        (
            {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}]},
            8080,
            False,
        ),
        ({"ports": [{"port": 8000, "endPort": 8100}]}, 8080, True),
        ({"ports": [{"port": 8000, "endPort": 8050}]}, 8080, False),
        ({"ports": [{"port": "http"}]}, 8080, True),
        ({"ports": [{"port": "http", "protocol": "UDP"}]}, 8080, False),
    ],
)
def test_network_policy_rules_as_kubernetes_reads_them(rule, port, admitted):
    from sandbox.edge import netpol

    policy = _policy({"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [rule]})
    assert netpol.admits_controller([policy], POD, port, "http") is admitted


def test_network_policies_that_do_not_select_the_pod_or_its_ingress_leave_it_open():
    from sandbox.edge import netpol

    closed = {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert not netpol.admits_controller([_policy(closed)], POD, 8080)
    assert netpol.admits_controller([_policy(closed, namespace="elsewhere")], POD, 8080)
    assert netpol.admits_controller([_policy({"podSelector": {}, "policyTypes": ["Egress"]})], POD, 8080)
    other = {"podSelector": {"matchLabels": {"app": "y"}}, "policyTypes": ["Ingress"]}
    assert netpol.admits_controller([_policy(other)], POD, 8080)


def test_scrape_targets_use_the_http_port_and_skip_pods_not_running():
    from sandbox.edge import routes

    def pod(name, phase, ports, mapping):
        return {
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {"app.kubernetes.io/name": "api"},
                "annotations": {"sandbox.local/host-ports": json.dumps(mapping)},
            },
            "spec": {"containers": [{"name": "api", "ports": ports}]},
            "status": {"phase": phase},
        }

    two = [{"containerPort": 9000, "name": "admin"}, {"containerPort": 8080, "name": "http"}]
    pods = [
        pod("a", "Running", two, {"9000": 40001, "8080": 40002}),
        pod("b", "Pending", two, {"9000": 40003, "8080": 40004}),
        pod("c", "Running", [{"containerPort": 7000}], {"7000": 40005}),
    ]
    assert [t["targets"] for t in routes.scrape_targets(pods)] == [["127.0.0.1:40002"], ["127.0.0.1:40005"]]
