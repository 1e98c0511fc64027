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
author: Emergency procedures maintainers (!UNKNOWN)
options:
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
extends_documentation_fragment:
  - emergency.ops.kube.cluster
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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_CLUSTER_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
)
from ansible_collections.emergency.ops.plugins.module_utils.lease import LockHeld, acquire, release


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            namespace=dict(type="str", required=True),
            name=dict(type="str", default="driver-lock"),
            holder=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            duration_seconds=dict(type="int", default=900),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
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

        acquired, previous = acquire(kube, name, holder, p["duration_seconds"], module.check_mode)
        module.exit_json(
            changed=False,
            holder=current if module.check_mode else holder,
            acquired=acquired,
            previous_holder=previous,
        )
    except LockHeld as exc:
        module.fail_json(msg=str(exc), outcome="refused", holder=exc.holder)
    except KubeError as exc:
        module.fail_json(
            msg="lock %s in %s: %s" % (name, namespace, exc),
            outcome=outcome_of(exc),
        )


if __name__ == "__main__":
    main()
