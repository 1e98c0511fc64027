# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Scaling workloads to zero and back with their replicas recorded on the workload itself.

The record (annotation ``emergency.ops/replicas-before``) lives on the object, not on the machine that
ran the procedure, so any operator (or an AWX node) can bring back what another one quiesced.

A running workload's current replicas are the truth: quiescing it records what it runs now, even over
a record an earlier shutdown or quiesce left behind (the service may have been scaled back by hand
since). Only a workload already at 0 keeps its record, so a second quiesce never overwrites the
replicas of the first with 0. Bringing back a workload that is running again only drops a stale record;
it is never scaled to the record's older size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.emergency.ops.plugins.module_utils.kube import selector_string
from ansible_collections.emergency.ops.plugins.module_utils.rollout import diagnose, rollout_state

RECORD = "emergency.ops/replicas-before"
INCIDENT = "emergency.ops/scaled-incident"


def recorded(obj):
    value = obj["metadata"].get("annotations", {}).get(RECORD)
    return int(value) if value not in (None, "") else None


def settled(obj, replicas):
    """The workload runs exactly ``replicas`` pods, all ready (none at all for 0)."""
    status = obj.get("status", {})
    if obj["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return False
    if replicas == 0:
        return status.get("replicas", 0) == 0
    state, _message = rollout_state(obj)
    return state == "complete" and status.get("readyReplicas", 0) >= replicas


def pods_left(kube, obj):
    """Pods of the workload whose processes may still run: the controllers stop counting a pod once it
    is terminating, but it may still be draining (and writing) for its grace period."""
    labels = (obj["spec"].get("selector") or {}).get("matchLabels")
    if not labels:
        return []
    pods = kube.list("Pod", label_selector=selector_string(labels))
    return [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]


def wait(kube, kind, name, replicas, timeout):
    """Waits until the workload is settled at ``replicas``; for 0, until none of its pods is left."""
    deadline = time.monotonic() + timeout
    while True:
        obj = kube.get(kind, name)
        if settled(obj, replicas) and (replicas > 0 or not pods_left(kube, obj)):
            return obj, True
        if time.monotonic() >= deadline:
            return obj, False
        time.sleep(0.1)  # each tenth of a second here is writers' downtime around a swap


def plan_for(obj, state, replicas=None):
    """Returns ``(patch or None, target replicas)`` for one workload and the wanted state
    (``down``, ``restored`` or ``present``)."""
    current = obj["spec"].get("replicas", 1)
    record = recorded(obj)
    if state == "down":
        if current == 0:
            return None, 0
        return {"metadata": {"annotations": {RECORD: str(current)}}, "spec": {"replicas": 0}}, 0
    if state == "restored":
        if record is None:
            return None, current
        if current > 0:
            # Running again (scaled back by hand): what it runs now wins; the record is stale.
            return {"metadata": {"annotations": {RECORD: None}}}, current
        return {"metadata": {"annotations": {RECORD: None}}, "spec": {"replicas": record}}, record
    if current == replicas:
        return None, current
    return {"spec": {"replicas": replicas}}, replicas


def plan(service, obj, state, incident, replicas=None):
    """Returns ``(entry, patch or None, target replicas)`` for one workload: the entry scale_workloads
    reports for it, and the patch (which records ``incident`` on the workload) that brings it to ``state``."""
    patch, target = plan_for(obj, state, replicas)
    if patch is not None:
        patch.setdefault("metadata", {}).setdefault("annotations", {})[INCIDENT] = incident
    entry = {
        "name": service["name"],
        "kind": service["kind"],
        "previous_replicas": obj["spec"].get("replicas", 1),
        "replicas": target,
        "recorded_replicas": recorded(obj),
        "changed": patch is not None,
        "seconds": 0.0,
    }
    return entry, patch, target


def not_ready_message(kube, obj, kind, name, replicas, timeout):
    detail = diagnose(kube, obj)
    return "%s %s not ready with %d replicas after %ss; pods not ready: %s; events: %s" % (
        kind,
        name,
        replicas,
        timeout,
        ", ".join(detail["pods_not_ready"]) or "none",
        " | ".join(detail["recent_events"]) or "none",
    )


class NotSettled(Exception):
    """A workload did not reach its size in time; ``entries`` says where every workload stands."""

    def __init__(self, message, entries):
        super(NotSettled, self).__init__(message)
        self.entries = entries


def scale_all(kube, services, state, incident, timeout, check_mode=False):
    """Patches every workload at once, then waits until all of them are settled (pods gone for
    ``down``; rolled out and every replica ready otherwise). Returns one entry per workload.

    Used where the workloads do not depend on each other's start order, such as the database writers
    around a swap: the waits overlap, so the whole takes as long as the slowest workload, not the sum.
    Raises ``NotSettled`` when one is not settled within ``timeout`` seconds, ``KubeError`` on API errors.
    """
    entries, pending = [], []
    objects = [(s, kube.get(s["kind"], s["name"])) for s in services]
    for service, obj in objects:
        kind, name = service["kind"], service["name"]
        entry, patch, target = plan(service, obj, state, incident)
        entries.append(entry)
        if patch is not None:
            kube.patch(kind, name, patch, patch_type="merge", dry_run=check_mode)
        if not check_mode and (patch is not None or target == 0 or not settled(obj, target)):
            pending.append((entry, kind, name, target))
    started = time.monotonic()
    for entry, kind, name, target in pending:
        obj, ok = wait(kube, kind, name, target, max(1, timeout - (time.monotonic() - started)))
        entry["seconds"] = round(time.monotonic() - started, 2)
        if not ok:
            if target == 0:
                raise NotSettled("%s %s still has pods after %ss" % (kind, name, timeout), entries)
            raise NotSettled(not_ready_message(kube, obj, kind, name, target, timeout), entries)
    return entries
