# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Rollout state of Deployments and StatefulSets, read the way ``kubectl rollout status`` reads it,
and the diagnosis an operator needs when one does not finish (pods' state and recent events)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.emergency.ops.plugins.module_utils.kube import selector_string

REVISION = "deployment.kubernetes.io/revision"


def rollout_state(obj):
    """Returns ``(state, message)`` with state ``complete``, ``progressing`` or ``failed``."""
    kind = obj.get("kind")
    spec = obj.get("spec", {})
    status = obj.get("status", {})
    name = obj["metadata"]["name"]
    wanted = spec.get("replicas", 1)
    if obj["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return "progressing", "%s %s: waiting for the controller to observe the change" % (kind, name)
    if kind == "Deployment":
        for condition in status.get("conditions", []):
            if (
                condition.get("type") == "Progressing"
                and condition.get("reason") == "ProgressDeadlineExceeded"
            ):
                return "failed", "Deployment %s exceeded its progress deadline" % name
        updated = status.get("updatedReplicas", 0)
        if updated < wanted:
            return "progressing", "%s: %d of %d new replicas updated" % (name, updated, wanted)
        if status.get("replicas", 0) > updated:
            return "progressing", "%s: %d old replicas pending termination" % (
                name,
                status.get("replicas", 0) - updated,
            )
        if status.get("availableReplicas", 0) < updated:
            return "progressing", "%s: %d of %d updated replicas available" % (
                name,
                status.get("availableReplicas", 0),
                updated,
            )
        return "complete", "Deployment %s successfully rolled out" % name
    # StatefulSet (RollingUpdate)
    if status.get("readyReplicas", 0) < wanted:
        return "progressing", "%s: %d of %d pods ready" % (name, status.get("readyReplicas", 0), wanted)
    if status.get("updateRevision") and status.get("updateRevision") != status.get("currentRevision"):
        return "progressing", "%s: %d of %d pods at the new revision" % (
            name,
            status.get("updatedReplicas", 0),
            wanted,
        )
    return "complete", "StatefulSet %s rolled out" % name


def revision(obj):
    """The revision an operator sees in ``kubectl rollout history``."""
    if obj.get("kind") == "Deployment":
        return obj["metadata"].get("annotations", {}).get(REVISION)
    return obj.get("status", {}).get("updateRevision") or obj.get("status", {}).get("currentRevision")


def diagnose(kube, obj, max_events=8):
    """Pods that are not ready (with why) and the newest events of the object and its pods."""
    selector = selector_string(obj.get("spec", {}).get("selector", {}).get("matchLabels"))
    pods = kube.list("Pod", label_selector=selector) if selector else []
    names = {obj["metadata"]["name"]} | {pod["metadata"]["name"] for pod in pods}
    not_ready = []
    for pod in pods:
        conditions = {c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            continue
        reasons = []
        for container in pod.get("status", {}).get("containerStatuses", []):
            for state, detail in container.get("state", {}).items():
                if state != "running":
                    reasons.append("%s %s: %s" % (container["name"], state, detail.get("reason", "")))
        not_ready.append(
            "%s (%s%s)"
            % (
                pod["metadata"]["name"],
                pod.get("status", {}).get("phase", "Unknown"),
                ", " + "; ".join(reasons) if reasons else "",
            )
        )
    events = [
        event
        for event in kube.list("Event")
        if event.get("involvedObject", {}).get("name") in names
        or any(event.get("involvedObject", {}).get("name", "").startswith(n + "-") for n in names)
    ]
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    recent = [
        "%s %s %s: %s"
        % (
            e.get("type", ""),
            e.get("reason", ""),
            e.get("involvedObject", {}).get("name", ""),
            e.get("message", ""),
        )
        for e in events[-max_events:]
    ]
    return {"pods_not_ready": not_ready, "recent_events": recent}
