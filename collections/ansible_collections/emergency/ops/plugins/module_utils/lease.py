# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""The namespace lock: a ``coordination.k8s.io/v1`` Lease whose holder is the incident id.

Shared by the ``lease`` module (playbooks run from AWX take the lock themselves) and the driver
(which takes it before starting a playbook, renews it while the playbook runs and releases it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.emergency.ops.plugins.module_utils.kube import KubeError, micro_time, now, parse_time


class LockHeld(Exception):
    """Another incident holds a live lock."""

    def __init__(self, name, namespace, holder, expiry):
        until = " until %s" % expiry.strftime("%H:%M:%SZ") if expiry else ""
        super(LockHeld, self).__init__(
            "lock %s in namespace %s is held by %s%s; wait for it, or have that incident's operator "
            "finish" % (name, namespace, holder or "another run", until)
        )
        self.holder = holder


def expires_at(lease):
    spec = lease.get("spec", {})
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    if renewed is None:
        return None
    return renewed + datetime.timedelta(seconds=spec.get("leaseDurationSeconds") or 0)


def lease_body(name, holder, duration, previous=None):
    moment = micro_time()
    transitions = (previous or {}).get("spec", {}).get("leaseTransitions") or 0
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "emergency-procedures"}},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": moment,
            "renewTime": moment,
            "leaseTransitions": transitions + (1 if previous else 0),
        },
    }
    if previous:
        body["metadata"]["resourceVersion"] = previous["metadata"]["resourceVersion"]
    return body


def release(kube, name, holder, lease, attempts=5):
    """Deletes the Lease if ``holder`` still holds it. The delete is conditional on the version just
    read, so a concurrent renewal (the driver renews while a procedure runs) makes it fail with a
    conflict: read again and retry, rather than reporting someone else's lock."""
    for _attempt in range(attempts):
        current = (lease or {}).get("spec", {}).get("holderIdentity") or ""
        if lease is None or current != holder:
            return current
        try:
            kube.delete("Lease", name, resource_version=lease["metadata"]["resourceVersion"])
            return ""
        except KubeError as exc:
            if exc.status == 404:
                return ""
            if exc.status != 409:
                raise
        lease = kube.get_or_none("Lease", name)
    return holder


def acquire(kube, name, holder, duration, check_mode=False):
    """Takes the lock when it is free, released or expired; renews it when ``holder`` already has it
    (re-entry); raises LockHeld when another incident holds a live one. Returns ``(acquired,
    previous_holder)``. In check mode it only checks."""
    lease = kube.get_or_none("Lease", name)
    current = (lease or {}).get("spec", {}).get("holderIdentity") or ""
    expiry = expires_at(lease) if lease else None
    if current and current != holder and expiry is not None and expiry > now():
        raise LockHeld(name, kube.namespace, current, expiry)
    if check_mode:
        return False, current
    try:
        if lease is None:
            kube.create("Lease", lease_body(name, holder, duration))
            return True, ""
        if current == holder:
            patch = {"spec": {"renewTime": micro_time(), "leaseDurationSeconds": duration}}
            kube.patch("Lease", name, patch, patch_type="merge")
            return False, current
        # Free, released or expired: take it over; a stale resourceVersion means someone was faster.
        kube.replace("Lease", name, lease_body(name, holder, duration, previous=lease))
        return True, current
    except KubeError as exc:
        if exc.status == 409:
            raise LockHeld(name, kube.namespace, "", None) from exc
        raise
