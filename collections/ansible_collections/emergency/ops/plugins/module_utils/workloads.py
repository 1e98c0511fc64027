# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""What the service-recovery modules share: the pods and ReplicaSets of a workload, whether a pod
serves, waiting for a workload to be rolled out and ready, and cluster-scoped calls (Nodes)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.emergency.ops.plugins.module_utils.kube import parse_time, now, selector_string
from ansible_collections.emergency.ops.plugins.module_utils.rollout import REVISION, diagnose, rollout_state


def condition(obj, ctype):
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == ctype:
            return cond
    return {}


def pod_serving(pod):
    """Running, Ready and not terminating: the pod takes traffic (a pod being deleted has left its
    Service's endpoints even while its container still runs out its grace period)."""
    return (
        not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase") == "Running"
        and condition(pod, "Ready").get("status") == "True"
    )


def pod_age(pod):
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (now() - created).total_seconds() if created else 0.0


def pod_summary(pod):
    return {
        "name": pod["metadata"]["name"],
        "phase": "Terminating"
        if pod["metadata"].get("deletionTimestamp")
        else pod.get("status", {}).get("phase", "Unknown"),
        "ready": condition(pod, "Ready").get("status") == "True",
        "node": pod.get("spec", {}).get("nodeName"),
    }


def pods_of(kube, obj):
    selector = selector_string(obj.get("spec", {}).get("selector", {}).get("matchLabels"))
    return (
        kube.list("Pod", label_selector=selector, namespace=obj["metadata"].get("namespace"))
        if selector
        else []
    )


def replicasets_of(kube, deployment):
    """The Deployment's ReplicaSets, newest revision first."""
    uid = deployment["metadata"]["uid"]
    selector = selector_string(deployment["spec"]["selector"].get("matchLabels"))
    owned = [
        rs
        for rs in kube.list("ReplicaSet", label_selector=selector)
        if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences", []))
    ]
    return sorted(owned, key=revision_number, reverse=True)


def revision_number(obj):
    """The revision of a Deployment or of one of its ReplicaSets, as a number (0 when it has none)."""
    try:
        return int(obj["metadata"].get("annotations", {}).get(REVISION, "0"))
    except ValueError:
        return 0


def main_container(template, name):
    """Index of the container named like the workload, else 0 (the first)."""
    containers = template["spec"]["containers"]
    for index, container in enumerate(containers):
        if container["name"] == name:
            return index
    return 0


def images(template):
    return {c["name"]: c.get("image") for c in template.get("spec", {}).get("containers", [])}


def ready(obj):
    """Rolled out, with every wanted replica ready (none for 0)."""
    state, message = rollout_state(obj)
    wanted = obj["spec"].get("replicas", 1)
    if state != "complete":
        return state, message
    if obj.get("status", {}).get("readyReplicas", 0) < wanted:
        return "progressing", "%s: %d of %d replicas ready" % (
            obj["metadata"]["name"],
            obj.get("status", {}).get("readyReplicas", 0),
            wanted,
        )
    return "complete", message


def wait_ready(kube, kind, name, timeout, interval=0.25, fail_on_deadline=True):
    """Returns ``(object, state, message)``: ``complete``, ``failed`` (progress deadline) or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        obj = kube.get(kind, name)
        state, message = ready(obj)
        if state == "complete" or (state == "failed" and fail_on_deadline):
            return obj, state, message
        if time.monotonic() >= deadline:
            return obj, "timeout", "%s %s not ready after %ss: %s" % (kind, name, timeout, message)
        time.sleep(interval)


def not_ready_message(kube, obj, message):
    detail = diagnose(kube, obj)
    detail.update(name=obj["metadata"]["name"], kind=obj["kind"], reason=message)
    text = "%s %s did not become ready: %s. Pods not ready: %s. Recent events: %s" % (
        obj["kind"],
        obj["metadata"]["name"],
        message,
        ", ".join(detail["pods_not_ready"]) or "none",
        " | ".join(detail["recent_events"]) or "none",
    )
    return text, detail


def dry_run_delete(kube, kind, name):
    body = {"kind": "DeleteOptions", "apiVersion": "v1"}
    return kube.request("DELETE", kube.path(kind, name), body=body, query={"dryRun": "All"})
