#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_drain
short_description: Drain a node respecting PodDisruptionBudgets, check its pods run elsewhere; or uncordon
description:
  - V(drained) cordons the node, evicts its pods through the Eviction API (so PodDisruptionBudgets are
    respected; a refused eviction is retried until O(timeout)), skipping DaemonSet and mirror pods
    (C(kubectl drain --ignore-daemonsets)), then checks itself that every evicted pod is gone and
    that the workloads that owned them are ready again on other nodes.
  - V(uncordoned) makes the node schedulable again.
  - Records whether the node was already cordoned and the incident on the node (annotations
    C(emergency.ops/drain-incident), C(emergency.ops/unschedulable-before)); a drained node with no pod
    left is not changed again.
  - In check mode the cordon and evictions are server-side dry runs.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  namespace:
    description:
      - The API client's default namespace. Nodes are cluster-scoped and the pods of every namespace on
        the node are evicted, so none is needed.
    type: str
  node:
    description: Node name.
    type: str
    required: true
  state:
    description: V(drained) or V(uncordoned).
    type: str
    choices: [drained, uncordoned]
    default: drained
  incident:
    description: Incident id recorded on the node.
    type: str
    required: true
  timeout:
    description: Seconds the evictions and the rescheduling may take.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.kube.cluster
"""

EXAMPLES = r"""
- name: Drain | Drain node-a
  emergency.ops.node_drain:
    node: node-a
    incident: INC-20261122-0931
"""

RETURN = r"""
node:
  description: Node name, whether it was unschedulable before, and whether it is now.
  returned: always
  type: dict
evicted:
  description: Pods evicted, as namespace/name.
  returned: always
  type: list
rescheduled:
  description: Per workload that owned an evicted pod, its ready replicas afterwards and their nodes.
  returned: success
  type: list
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_CLUSTER_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
    selector_string,
)
from ansible_collections.emergency.ops.plugins.module_utils.workloads import pod_serving

INCIDENT = "emergency.ops/drain-incident"
BEFORE = "emergency.ops/unschedulable-before"
MIRROR = "kubernetes.io/config.mirror"


def node_path(name):
    return "/api/v1/nodes/%s" % name


def patch_node(kube, name, patch, dry):
    """Merge-patches the Node (cluster-scoped, so outside Kube.patch's namespaced paths)."""
    kube.request("PATCH", node_path(name), body=patch, content_type="application/merge-patch+json", query=dry)


def owner(pod):
    refs = pod["metadata"].get("ownerReferences") or []
    return refs[0] if refs else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            namespace=dict(type="str"),  # nodes are cluster-scoped: no namespace needed (nor documented)
            node=dict(type="str", required=True),
            state=dict(type="str", default="drained", choices=["drained", "uncordoned"]),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    dry = {"dryRun": "All"} if module.check_mode else None
    changed, evicted = False, []
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        try:
            node = kube.request("GET", node_path(p["node"]))
        except KubeError as exc:
            if exc.status == 404:
                names = [n["metadata"]["name"] for n in kube.request("GET", "/api/v1/nodes").get("items", [])]
                module.fail_json(
                    msg="no node %s; nodes: %s" % (p["node"], ", ".join(names)), outcome="invalid"
                )
            raise
        annotations = node["metadata"].get("annotations") or {}
        was = bool(node.get("spec", {}).get("unschedulable"))
        info = {"name": p["node"], "unschedulable_before": was}

        if p["state"] == "uncordoned":
            if was or BEFORE in annotations:
                patch = {
                    "spec": {"unschedulable": None},
                    "metadata": {"annotations": {BEFORE: None, INCIDENT: None}},
                }
                patch_node(kube, p["node"], patch, dry)
                changed = was
            info["unschedulable"] = False
            module.exit_json(changed=changed, node=info, evicted=[])

        if not was:
            patch = {
                "spec": {"unschedulable": True},
                "metadata": {"annotations": {BEFORE: "false", INCIDENT: p["incident"]}},
            }
            patch_node(kube, p["node"], patch, dry)
            changed = True
        info["unschedulable"] = True
        pods = kube.request(
            "GET", "/api/v1/pods", query={"fieldSelector": "spec.nodeName=%s" % p["node"]}
        ).get("items", [])
        movable = [
            pod
            for pod in pods
            if (owner(pod) or {}).get("kind") != "DaemonSet"
            and MIRROR not in (pod["metadata"].get("annotations") or {})
            and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        deadline = time.monotonic() + p["timeout"]
        pending = list(movable)
        refused = {}
        while pending:
            still = []
            for pod in pending:
                ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                body = {
                    "apiVersion": "policy/v1",
                    "kind": "Eviction",
                    "metadata": {"name": name, "namespace": ns},
                }
                try:
                    kube.request(
                        "POST", "/api/v1/namespaces/%s/pods/%s/eviction" % (ns, name), body=body, query=dry
                    )
                    evicted.append("%s/%s" % (ns, name))
                    changed = True
                except KubeError as exc:
                    if exc.status == 404:
                        continue
                    if exc.status != 429:
                        raise
                    refused[name] = str(exc)
                    still.append(pod)
            pending = still
            if pending and (module.check_mode or time.monotonic() >= deadline):
                module.fail_json(
                    msg="evictions refused by a PodDisruptionBudget after %ss: %s"
                    % (p["timeout"], "; ".join("%s: %s" % (k, v) for k, v in refused.items())),
                    changed=changed,
                    node=info,
                    evicted=evicted,
                )
            if pending:
                time.sleep(1)
        if module.check_mode:
            module.exit_json(changed=changed, node=info, evicted=evicted)

        # kubernetes.core's k8s_drain does not check this reliably: every evicted pod is gone, and what
        # owned it is ready again with no pod left on the node.
        owners = {}
        for pod in movable:
            ref = owner(pod)
            if ref and ref.get("kind") in ("ReplicaSet", "StatefulSet"):
                owners[(pod["metadata"]["namespace"], ref["kind"], ref["name"])] = True
        rescheduled, problem = [], None
        while True:
            problem = None
            rescheduled = []
            for ns, kind, name in owners:
                base = "/apis/apps/v1/namespaces/%s/%s/%s" % (
                    ns,
                    "replicasets" if kind == "ReplicaSet" else "statefulsets",
                    name,
                )
                try:
                    obj = kube.request("GET", base)
                except KubeError as exc:
                    if exc.status == 404:  # a ReplicaSet replaced by a rollout meanwhile
                        continue
                    raise
                selector = selector_string(obj["spec"]["selector"].get("matchLabels", {}))
                its = kube.request(
                    "GET", "/api/v1/namespaces/%s/pods" % ns, query={"labelSelector": selector}
                ).get("items", [])
                wanted = obj["spec"].get("replicas", 1)
                serving = [
                    pod for pod in its if pod_serving(pod) and pod["spec"].get("nodeName") != p["node"]
                ]
                on_node = [pod["metadata"]["name"] for pod in its if pod["spec"].get("nodeName") == p["node"]]
                rescheduled.append(
                    {
                        "namespace": ns,
                        "kind": kind,
                        "name": name,
                        "ready_elsewhere": len(serving),
                        "replicas": wanted,
                        "nodes": sorted(set(pod["spec"].get("nodeName") for pod in serving)),
                    }
                )
                if on_node or len(serving) < wanted:
                    problem = "%s %s/%s: %d of %d ready on other nodes, still on %s: %s" % (
                        kind,
                        ns,
                        name,
                        len(serving),
                        wanted,
                        p["node"],
                        ", ".join(on_node) or "none",
                    )
            if problem is None:
                break
            if time.monotonic() >= deadline:
                module.fail_json(
                    msg="drained %s but not rescheduled after %ss: %s" % (p["node"], p["timeout"], problem),
                    changed=changed,
                    node=info,
                    evicted=evicted,
                    rescheduled=rescheduled,
                )
            time.sleep(0.25)
    except KubeError as exc:
        module.fail_json(msg=str(exc), changed=changed, evicted=evicted, outcome=outcome_of(exc, changed))
    module.exit_json(changed=changed, node=info, evicted=evicted, rescheduled=rescheduled)


if __name__ == "__main__":
    main()
