"""Benchmark: requests that fail, under constant load through the Ingress, while the services roll.

In one sandbox, with the load generator sending a steady rate of requests to the api through the
sandbox's ingress (nginx), two phases one after the other:

1. ``python -m driver restart --all``: the ordered rolling restart (Deployments' maxSurge and
   maxUnavailable honoured, readiness before termination). Target: 0 failed requests.
2. What runbook 000 has an operator type around a restore: ``kubectl scale deployment --all
   --replicas=0``, then each Deployment scaled back to its replicas. Every request in between fails.

Each phase's load starts once the api answers through the ingress and goes on for a few seconds
after the change has settled. Last line exactly:
``restart_failed_requests=<n> runbook_scale_failed_requests=<m>``.

    .venv/bin/python -m bench.traffic [--rps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

from bench.common import sandbox
from driver import ROOT
from sandbox import traffic

SETTLE = 3.0  # seconds of load after each change has settled
BOUND = 900.0  # the load generator's run is bounded; each phase stops it well before


def load(status: dict, rps: float) -> traffic.Run:
    ingress = status["ingress"]
    return traffic.start(ingress["url"], rps, BOUND, paths=["/"], timeout=5.0, host=ingress["host"])


def serving(status: dict) -> bool:
    report = traffic.run(status["ingress"]["url"], 10, 1, paths=["/"], host=status["ingress"]["host"])
    return report.total["ok"] == report.total["sent"]


def phase(name: str, status: dict, rps: float, change) -> dict:
    deadline = time.monotonic() + 120
    while not serving(status):
        if time.monotonic() > deadline:
            sys.exit(f"{name}: the api does not answer through the ingress")
    run = load(status, rps)
    time.sleep(SETTLE)
    started = time.monotonic()
    change()
    took = time.monotonic() - started
    time.sleep(SETTLE)
    run.stop()
    total = run.wait(30).total
    print(
        f"{name}: change took {took:.1f}s; sent {total['sent']} ok {total['ok']} failed {total['failed']} "
        f"statuses {json.dumps(total['statuses'])} failures {json.dumps(total['failures'])}",
        flush=True,
    )
    return total


def kubectl(env: dict, *args: str) -> str:
    proc = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=50.0)
    args = parser.parse_args()
    with sandbox() as (box, status):
        env = {**os.environ, "KUBECONFIG": status["kubeconfig"]}
        ns = status["namespace"]
        incidents = box.dir / "bench-incidents"

        def restart() -> None:
            argv = [sys.executable, "-m", "driver", "restart", "--all", "--json"]
            argv += ["--incident", f"BENCH-{uuid.uuid4().hex[:8]}", "--incidents-dir", str(incidents)]
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"restart --all failed ({proc.returncode}): {proc.stderr[-2000:]}")

        def runbook_scale() -> None:
            deployments = json.loads(kubectl(env, "get", "deployments", "-n", ns, "-o", "json"))["items"]
            replicas = {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d in deployments}
            kubectl(env, "scale", "deployment", "--all", "--replicas=0", "-n", ns)
            for name in replicas:
                kubectl(env, "rollout", "status", f"deployment/{name}", "-n", ns, "--timeout=300s")
            for name, count in replicas.items():
                kubectl(env, "scale", f"deployment/{name}", f"--replicas={count}", "-n", ns)
            for name in replicas:
                kubectl(env, "rollout", "status", f"deployment/{name}", "-n", ns, "--timeout=300s")

        print(
            f"load: {args.rps:g} requests/s to {status['ingress']['url']} (Host {status['ingress']['host']})"
        )
        restarted = phase("restart --all", status, args.rps, restart)
        scaled = phase("runbook 000 scale to 0 and back", status, args.rps, runbook_scale)
        print(
            f"restart_failed_requests={restarted['failed']} runbook_scale_failed_requests={scaled['failed']}"
        )


if __name__ == "__main__":
    main()
