#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: scale_workloads
short_description: Scale Deployments and StatefulSets down to zero and back, remembering their replicas
description:
  - V(down) records each workload's replicas on the workload itself (annotation
    C(emergency.ops/replicas-before)) and scales it to 0, all at once, then waits until their pods
    are gone. A running workload's current replicas are the truth, so they are recorded even over a
    record an earlier shutdown or quiesce left behind (the service may have been scaled back by hand
    since). A workload already at 0 keeps its record, so a second shutdown never overwrites the
    replicas of the first with 0.
  - V(restored) scales each workload back to its recorded replicas, in the order given, waiting until
    each is rolled out and every replica ready before the next, then removes the record. A workload
    with no record is left alone; one that is running again keeps its replicas and only loses its
    stale record.
  - V(present) sets O(replicas) on every workload and waits until they are ready.
  - The record lives on the object, not on the machine that ran the procedure, so any operator (or an
    AWX node) can resume what another shut down.
  - In check mode each change is validated with a server-side dry run and nothing changes.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  services:
    description: Workloads, in order (the order matters for V(restored)).
  state:
    description: V(down), V(restored) or V(present).
    type: str
    choices: [down, restored, present]
    required: true
  replicas:
    description: Replicas to set with V(present).
    type: int
  incident:
    description: Incident id recorded on each workload changed.
    type: str
    required: true
  wait:
    description: Wait until the workloads reach the new size (and are ready).
    type: bool
    default: true
  timeout:
    description: Seconds each wait may take.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.services
"""

EXAMPLES = r"""
- name: Shutdown | Scale the writers to zero
  emergency.ops.scale_workloads:
    namespace: matchbook
    incident: INC-20261122-0931
    state: down
    services:
      - {name: indexer, kind: Deployment}
      - {name: api, kind: Deployment}
"""

RETURN = r"""
services:
  description: One entry per workload, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Workload name.
      type: str
    kind:
      description: Workload kind.
      type: str
    previous_replicas:
      description: C(spec.replicas) before this call.
      type: int
    replicas:
      description: C(spec.replicas) after this call.
      type: int
    recorded_replicas:
      description: The replicas recorded on the workload (before V(restored) removes the record).
      type: int
    changed:
      description: Whether this call changed the workload.
      type: bool
    seconds:
      description: Seconds spent waiting for this workload.
      type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_ARGS, SERVICES_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    get_or_fail,
    outcome_of,
    require_kubernetes,
)
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import (
    not_ready_message,
    plan,
    settled,
    wait,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            **SERVICES_ARGS,
            state=dict(type="str", required=True, choices=["down", "restored", "present"]),
            replicas=dict(type="int"),
            incident=dict(type="str", required=True),
            wait=dict(type="bool", default=True),
            timeout=dict(type="int", default=300),
        ),
        required_if=[("state", "present", ["replicas"])],
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    if p["replicas"] is not None and p["replicas"] < 0:
        module.fail_json(msg="replicas must be 0 or more", outcome="invalid")

    results, changed = [], False
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        objects = []
        for service in p["services"]:  # preflight: every workload exists before any is touched
            objects.append((service, get_or_fail(module, kube, service["kind"], service["name"])))

        pending = []
        for service, obj in objects:
            kind, name = service["kind"], service["name"]
            entry, patch, target = plan(service, obj, p["state"], p["incident"], p["replicas"])
            results.append(entry)
            if patch is None:
                if p["state"] != "down" and p["wait"] and not module.check_mode and not settled(obj, target):
                    # Nothing to change, but a previous run's rollout may still be going: verify it.
                    _obj, ok = wait(kube, kind, name, target, p["timeout"])
                    if not ok:
                        module.fail_json(
                            msg="%s %s not ready" % (kind, name), changed=False, services=results
                        )
                continue
            changed = True
            kube.patch(kind, name, patch, patch_type="merge", dry_run=module.check_mode)
            if module.check_mode:
                continue
            if p["state"] == "down":
                pending.append((entry, kind, name))
            elif p["wait"]:  # restored/present: in order, each ready before the next
                started = time.monotonic()
                obj, ok = wait(kube, kind, name, target, p["timeout"])
                entry["seconds"] = round(time.monotonic() - started, 2)
                if not ok:
                    module.fail_json(
                        msg=not_ready_message(kube, obj, kind, name, target, p["timeout"]),
                        changed=changed,
                        services=results,
                    )
        if p["state"] == "down" and p["wait"] and not module.check_mode:
            started = time.monotonic()
            for entry, kind, name in pending:
                _obj, ok = wait(kube, kind, name, 0, p["timeout"])
                entry["seconds"] = round(time.monotonic() - started, 2)
                if not ok:
                    module.fail_json(
                        msg="%s %s still has pods after %ss" % (kind, name, p["timeout"]),
                        changed=changed,
                        services=results,
                    )
    except KubeError as exc:
        module.fail_json(
            msg=str(exc),
            changed=changed,
            services=results,
            outcome=outcome_of(exc, changed),
        )
    module.exit_json(changed=changed, services=results)


if __name__ == "__main__":
    main()
