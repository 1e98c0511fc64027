"""A fleet: one inventory, one host per namespace, services of the same names in each. Every host's
services, prior state and outcome are in the result, asserted against each namespace's state."""

from __future__ import annotations

import sys
import uuid

import pytest
import yaml

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube
from bench.fleet import deployment
from tests.conftest import wait_for

SERVICES = ["api", "worker"]  # the restart order in every namespace


def ready(kube: Kube, name: str, replicas: int) -> bool:
    obj = kube.get("Deployment", name)
    status = obj.get("status", {})
    return (
        obj["spec"]["replicas"] == replicas
        and status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
        and status.get("readyReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
    )


@pytest.fixture
def fleet(target, tmp_path):
    """Three namespaces; in each, api and worker with replicas that differ from namespace to namespace
    (so a prior state taken from the wrong host shows). Returns (inventory, {host: (Kube, replicas)})."""
    if target.status is None:
        pytest.skip("the fleet test creates namespaces in the sandbox's Kubernetes API")
    tag = uuid.uuid4().hex[:6]
    hosts = {}
    admin = Kube(target.kubeconfig, None, "default")
    for n in range(3):
        namespace = f"fleet-{tag}-{n}"
        admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        kube = Kube(target.kubeconfig, None, namespace)
        want = {"api": n + 1, "worker": 3 - n}
        for name in SERVICES:
            kube.create("Deployment", deployment(name, want[name]))
        hosts[namespace] = (kube, want)
    for kube, want in hosts.values():
        for name in SERVICES:
            wait_for(lambda k=kube, s=name, r=want[name]: ready(k, s, r), what=f"{name} ready")
    folder = tmp_path / "inventory"
    (folder / "group_vars" / "all").mkdir(parents=True)
    (folder / "host_vars").mkdir()
    (folder / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "platform": {
                    "hosts": {
                        ns: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
                        for ns in hosts
                    }
                }
            }
        )
    )
    (folder / "group_vars" / "all" / "platform.yml").write_text(
        yaml.safe_dump(
            {
                "platform_name": "fleet",
                "platform_kubeconfig": target.kubeconfig,
                "platform_context": "sandbox",
            }
        )
    )
    for ns, (_kube, want) in hosts.items():
        services = [
            {"name": s, "kind": "Deployment", "replicas": want[s], "max_replicas": 4} for s in SERVICES
        ]
        (folder / "host_vars" / f"{ns}.yml").write_text(
            yaml.safe_dump(
                {"platform_namespace": ns, "platform_services": services, "platform_restart_order": SERVICES}
            )
        )
    yield str(folder), hosts
    for ns in hosts:
        admin.request("DELETE", f"/api/v1/namespaces/{ns}")


def revision(kube: Kube, name: str) -> int:
    return int(kube.get("Deployment", name)["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def by_host(entries: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in entries:
        out.setdefault(entry["host"], []).append(entry["name"])
    return out


def test_restart_reports_every_host_and_namespace(driver, fleet):
    inventory, hosts = fleet
    before = {ns: {s: revision(k, s) for s in SERVICES} for ns, (k, _w) in hosts.items()}
    run = driver(
        "restart", "--all", "--inventory", inventory, "--incident", f"INC-FLEET-{uuid.uuid4().hex[:6]}"
    )
    assert run.rc == 0, run.stderr + run.stdout
    outputs, prior = run.result["outputs"], run.result["prior_state"]
    assert sorted(outputs["hosts"]) == sorted(hosts) and sorted(prior["hosts"]) == sorted(hosts)
    for ns, (kube, want) in hosts.items():
        mine = outputs["hosts"][ns]
        assert mine["namespace"] == ns
        assert [s["name"] for s in mine["restart"]["services"]] == SERVICES
        for service in mine["restart"]["services"]:
            assert service["restarted"] is True
            assert int(service["previous_revision"]) == before[ns][service["name"]]
            now = revision(kube, service["name"])
            assert int(service["new_revision"]) == now > before[ns][service["name"]]
        assert sorted(prior["hosts"][ns]["services"]) == SERVICES
        for name in SERVICES:
            assert prior["hosts"][ns]["services"][name]["replicas"] == want[name]
            assert ready(kube, name, want[name])
    # Every host's services also in one list, each entry naming its host and namespace.
    assert by_host(outputs["restart"]["services"]) == {ns: SERVICES for ns in hosts}
    assert all(e["namespace"] == e["host"] for e in outputs["restart"]["services"])


def test_shutdown_and_resume_report_every_host_with_its_own_replicas(driver, fleet):
    inventory, hosts = fleet
    incident = f"INC-FLEET-{uuid.uuid4().hex[:6]}"
    check = driver("shutdown", "--all", "--yes", "--check", "--inventory", inventory, "--incident", incident)
    assert check.rc == 0 and check.result["changed"] is True
    assert all(ready(k, s, w[s]) for k, w in hosts.values() for s in SERVICES)

    down = driver("shutdown", "--all", "--yes", "--inventory", inventory, "--incident", incident)
    assert down.rc == 0, down.stderr + down.stdout
    outputs, prior = down.result["outputs"], down.result["prior_state"]
    for ns, (kube, want) in hosts.items():
        assert prior["hosts"][ns]["replicas"] == want
        entries = outputs["hosts"][ns]["shutdown"]["services"]
        assert {e["name"]: (e["previous_replicas"], e["replicas"], e["changed"]) for e in entries} == {
            s: (want[s], 0, True) for s in SERVICES
        }
        for name in SERVICES:
            assert kube.get("Deployment", name)["spec"]["replicas"] == 0
            annotations = kube.get("Deployment", name)["metadata"]["annotations"]
            assert annotations["emergency.ops/replicas-before"] == str(want[name])
    assert by_host(outputs["shutdown"]["services"]) == {ns: SERVICES for ns in hosts}
    again = driver("shutdown", "--all", "--yes", "--inventory", inventory, "--incident", incident)
    assert again.rc == 0 and again.result["changed"] is False

    up = driver("resume", "--all", "--inventory", inventory, "--incident", incident)
    assert up.rc == 0, up.stderr + up.stdout
    outputs, prior = up.result["outputs"], up.result["prior_state"]
    for ns, (kube, want) in hosts.items():
        assert prior["hosts"][ns]["replicas"] == dict.fromkeys(SERVICES, 0)
        entries = outputs["hosts"][ns]["resume"]["services"]
        assert [e["name"] for e in entries] == SERVICES
        assert {e["name"]: (e["recorded_replicas"], e["replicas"], e["changed"]) for e in entries} == {
            s: (want[s], want[s], True) for s in SERVICES
        }
        for name in SERVICES:
            assert ready(kube, name, want[name])
    assert by_host(outputs["resume"]["services"]) == {ns: SERVICES for ns in hosts}
    twice = driver("resume", "--all", "--inventory", inventory, "--incident", incident)
    assert twice.rc == 0 and twice.result["changed"] is False
