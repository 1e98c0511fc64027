"""Watches the PodDisruptionBudgets of a namespace while a node is drained.

Polls every pod the budgets select and notes the fewest healthy (Running and Ready) pods each budget
had at any moment, until no pod of the namespace is left on the node and every selected pod is ready
again (or the timeout passes). Appends one JSON line to OUTPUT:
{"node", "samples", "settled", "budgets": {name: {"min_available", "min_healthy", "pods_on_node"}}}.

    python watch_budgets.py KUBECONFIG NAMESPACE NODE OUTPUT [TIMEOUT]
"""

from __future__ import annotations

import json
import sys
import time

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube
from ansible_collections.emergency.ops.plugins.module_utils.workloads import pod_serving

INTERVAL = 0.1  # well under the sandbox's readiness delay, so a gap in a budget is seen


def selects(selector: dict, pod: dict) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def main() -> None:
    kubeconfig, namespace, node, output = sys.argv[1:5]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
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


if __name__ == "__main__":
    main()
