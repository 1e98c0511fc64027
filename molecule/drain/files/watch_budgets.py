"""Watches the PodDisruptionBudgets of a namespace while a node is drained.

Polls every pod the budgets select and notes the fewest healthy (Running and Ready) pods each budget
had at any moment, until no pod of the namespace is left on the node and every selected pod is ready
again (or the timeout passes). Appends one JSON line to OUTPUT:
{"node", "samples", "settled", "budgets": {name: {"min_available", "min_healthy", "pods_on_node"}}}.

    python watch_budgets.py [--detach] KUBECONFIG NAMESPACE NODE OUTPUT [TIMEOUT]

``--detach`` returns at once and watches in a background process, which creates OUTPUT.done when it
has written its line. The drill starts it that way rather than with Ansible's ``async``, whose
wrapper runs the interpreter's path unquoted and so fails from a clone whose path has a space.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube
from ansible_collections.emergency.ops.plugins.module_utils.workloads import pod_serving

INTERVAL = 0.1  # well under the sandbox's readiness delay, so a gap in a budget is seen


def selects(selector: dict, pod: dict) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def detach(done: str) -> bool:
    """Forks a session of its own for the watch; True in the watcher, False in the caller."""
    if os.path.exists(done):
        os.unlink(done)  # a marker from an earlier run must not end this one's wait
    if os.fork():
        return False
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    return True


def main() -> None:
    args = sys.argv[1:]
    detached = args[:1] == ["--detach"]
    if detached:
        args = args[1:]
    kubeconfig, namespace, node, output = args[:4]
    timeout = float(args[4]) if len(args) > 4 else 120.0
    if detached and not detach(output + ".done"):
        return
    kube = Kube(kubeconfig, None, namespace)
    budgets = kube.request("GET", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")["items"]
    seen = {
        b["metadata"]["name"]: {
            "min_available": b["spec"].get("minAvailable"),
            "min_healthy": None,
            "pods_on_node": 0,
        }
        for b in budgets
    }
    deadline, samples, settled = time.monotonic() + timeout, 0, False
    while time.monotonic() < deadline:
        pods = kube.list("Pod")
        samples += 1
        for budget in budgets:
            entry = seen[budget["metadata"]["name"]]
            selected = [p for p in pods if selects(budget["spec"].get("selector") or {}, p)]
            healthy = sum(1 for p in selected if pod_serving(p))
            on_node = sum(1 for p in selected if p["spec"].get("nodeName") == node)
            entry["min_healthy"] = (
                healthy if entry["min_healthy"] is None else min(entry["min_healthy"], healthy)
            )
            entry["pods_on_node"] = max(entry["pods_on_node"], on_node)
        if not any(p["spec"].get("nodeName") == node for p in pods) and all(pod_serving(p) for p in pods):
            settled = True
            break
        time.sleep(INTERVAL)
    record = {"node": node, "samples": samples, "settled": settled, "budgets": seen}
    with open(output, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    if detached:
        with open(output + ".done", "w", encoding="utf-8"):
            pass


if __name__ == "__main__":
    main()
