#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: lease
short_description: Take or release the lock that gives one operator a namespace
description:
  - A C(coordination.k8s.io/v1) Lease is the lock; it works across machines and AWX execution
    nodes because it lives in the cluster. Its holder is the incident id.
  - V(present) takes the Lease when it is free, released or expired, renews it when the same incident
    already holds it (re-entry), and fails with RV(outcome=refused) naming the holder when another
    incident holds a live one.
  - V(absent) releases it if this incident holds it and leaves anyone else's alone.
  - The Lease is bookkeeping, not a change to the platform, so the module never reports C(changed);
    this keeps a procedure's second run unchanged. In check mode it only checks that the lock is free.
version_added: 1.0.0
author: Emergency procedures maintainers
options:
  kubeconfig:
    description: Path to the kubeconfig.
    type: path
  context:
    description: Kubeconfig context to use.
    type: str
  namespace:
    description: Namespace the lock guards.
    type: str
    required: true
  name:
    description: Lease name.
    type: str
    default: driver-lock
  holder:
    description: Incident id that holds the lock.
    type: str
    required: true
  state:
    description: Whether the lock should be held (V(present)) or released (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  duration_seconds:
    description: Seconds the Lease stays valid without renewal; the driver renews it while a procedure runs.
    type: int
    default: 900
"""

EXAMPLES = r"""
- name: Lock | Take the namespace lock
  emergency.ops.lease:
    namespace: matchbook
    holder: INC-20261122-0931
"""

RETURN = r"""
holder:
  description: Holder of the Lease after the call (empty when released).
  returned: always
  type: str
acquired:
  description: Whether this call took a free or expired Lease.
  returned: always
  type: bool
outcome:
  description: V(refused) when another incident holds the lock, V(unreachable) when the API cannot be reached.
  returned: on failure
  type: str
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    CONNECTION_ARGS,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Kube,
    KubeError,
    micro_time,
    now,
    parse_time,
)


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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGS,
            name=dict(type="str", default="driver-lock"),
            holder=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            duration_seconds=dict(type="int", default=900),
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg="the kubernetes Python package is required: %s" % KUBERNETES_IMPORT_ERROR)
    p = module.params
    name, holder, namespace = p["name"], p["holder"], p["namespace"]
    try:
        kube = Kube(p["kubeconfig"], p["context"], namespace)
        lease = kube.get_or_none("Lease", name)
        current = (lease or {}).get("spec", {}).get("holderIdentity") or ""
        if p["state"] == "absent":
            if not module.check_mode:
                current = release(kube, name, holder, lease)
            module.exit_json(changed=False, holder=current, acquired=False)

        expiry = expires_at(lease) if lease else None
        live = bool(current) and current != holder and expiry is not None and expiry > now()
        if live:
            module.fail_json(
                msg="lock %s in namespace %s is held by %s until %s; wait for it, or have that "
                "incident's operator finish" % (name, namespace, current, expiry.strftime("%H:%M:%SZ")),
                outcome="refused",
                holder=current,
            )
        if module.check_mode:
            module.exit_json(changed=False, holder=current, acquired=False)
        if lease is None:
            kube.create("Lease", lease_body(name, holder, p["duration_seconds"]))
            module.exit_json(changed=False, holder=holder, acquired=True)
        if current == holder:  # re-entry by the same incident renews the lock
            kube.patch(
                "Lease",
                name,
                {"spec": {"renewTime": micro_time(), "leaseDurationSeconds": p["duration_seconds"]}},
                patch_type="merge",
            )
            module.exit_json(changed=False, holder=holder, acquired=False)
        # Free, released or expired: take it over; a stale resourceVersion means someone was faster.
        kube.replace("Lease", name, lease_body(name, holder, p["duration_seconds"], previous=lease))
        module.exit_json(changed=False, holder=holder, acquired=True, previous_holder=current)
    except KubeError as exc:
        if exc.status == 409:
            module.fail_json(
                msg="lock %s in %s was taken by another run just now" % (name, namespace), outcome="refused"
            )
        module.fail_json(
            msg="lock %s in %s: %s" % (name, namespace, exc),
            outcome="unreachable" if exc.status == 0 else "failed",
        )


if __name__ == "__main__":
    main()
