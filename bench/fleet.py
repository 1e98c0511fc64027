"""Benchmark: the same procedures over a fleet of 5 services and of 50.

A fleet inventory has one host per namespace (10 namespaces of 5 services each in the sandbox's
Kubernetes API); Ansible runs the hosts in parallel (forks) and keeps the restart order within each.
`restart --all`, `shutdown --all` and `resume --all` are timed against one namespace (5 services)
and against all ten (50 services), alternating, several times; the medians are compared. A ratio
near 1 means the fleet costs what one namespace costs. Last line:
fleet_50_vs_5=<time(50) / time(5) for restart --all> (target <= 2).

    .venv/bin/python -m bench.fleet [--repetitions N]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import yaml

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube, wait_until
from bench.common import median, sandbox, timed

NAMESPACES = [f"fleet-{n:02d}" for n in range(10)]
SERVICES = ["ingest", "api", "worker", "scheduler", "notifier"]  # restart order within a namespace


def deployment(name: str, replicas: int = 1) -> dict:
    """A Deployment of the fleet (the bench's and the fleet test's)."""
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": f"ghcr.io/fleet/{name}:v1"}]},
            },
        },
    }


def populate(kubeconfig: str) -> None:
    kube = Kube(kubeconfig, None, "default")
    for namespace in NAMESPACES:
        kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        scoped = Kube(kubeconfig, None, namespace)
        for name in SERVICES:
            scoped.create("Deployment", deployment(name))
    for namespace in NAMESPACES:
        scoped = Kube(kubeconfig, None, namespace)
        for name in SERVICES:
            ready = wait_until(
                lambda s=scoped, n=name: (
                    s.get("Deployment", n).get("status", {}).get("readyReplicas", 0) >= 1
                ),
                120,
            )
            if not ready:
                sys.exit(f"{namespace}/{name} did not become ready")


def inventory(folder: Path, kubeconfig: str, namespaces: list[str]) -> Path:
    (folder / "group_vars" / "all").mkdir(parents=True)
    (folder / "host_vars").mkdir()
    hosts = {
        ns: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable} for ns in namespaces
    }
    (folder / "hosts.yml").write_text(yaml.safe_dump({"platform": {"hosts": hosts}}))
    (folder / "group_vars" / "all" / "platform.yml").write_text(
        yaml.safe_dump(
            {"platform_name": "fleet", "platform_kubeconfig": kubeconfig, "platform_context": "sandbox"}
        )
    )
    for ns in namespaces:
        services = [{"name": s, "kind": "Deployment", "replicas": 1, "max_replicas": 3} for s in SERVICES]
        (folder / "host_vars" / f"{ns}.yml").write_text(
            yaml.safe_dump(
                {"platform_namespace": ns, "platform_services": services, "platform_restart_order": SERVICES}
            )
        )
    return folder


def run(procedure: str, inv: Path, incidents: Path) -> float:
    extra = ["--yes"] if procedure == "shutdown" else []
    return timed(
        [
            sys.executable,
            "-m",
            "driver",
            procedure,
            "--all",
            *extra,
            "--json",
            "--inventory",
            str(inv),
            "--incident",
            f"BENCH-{uuid.uuid4().hex[:8]}",
            "--incidents-dir",
            str(incidents),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    with sandbox() as (box, status):
        populate(status["kubeconfig"])
        small = inventory(box.dir / "fleet-5", status["kubeconfig"], NAMESPACES[:1])
        large = inventory(box.dir / "fleet-50", status["kubeconfig"], NAMESPACES)
        incidents = box.dir / "bench-incidents"
        times: dict[tuple[str, int], list[float]] = {}
        print(f"sandbox ready delay {box.state['ready_delay']}s per pod; {args.repetitions} repetitions")
        for n in range(args.repetitions):
            for size, inv in ((5, small), (50, large)):
                for procedure in ("restart", "shutdown", "resume"):
                    elapsed = run(procedure, inv, incidents)
                    times.setdefault((procedure, size), []).append(elapsed)
                    print(f"run {n + 1}: {procedure} --all over {size} services {elapsed:.2f}s", flush=True)
        ratios = {}
        for procedure in ("restart", "shutdown", "resume"):
            five, fifty = median(times[(procedure, 5)]), median(times[(procedure, 50)])
            ratios[procedure] = fifty / five
            print(f"median {procedure}: 5 services {five:.2f}s, 50 services {fifty:.2f}s")
        print(f"shutdown_50_vs_5={ratios['shutdown']:.2f}")
        print(f"resume_50_vs_5={ratios['resume']:.2f}")
        print(f"fleet_50_vs_5={ratios['restart']:.2f}")


if __name__ == "__main__":
    main()
