#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollout_restart
short_description: Restart Deployments and StatefulSets in order and wait for each rollout
description:
  - Does what C(kubectl rollout restart) followed by C(kubectl rollout status) does, for a list of
    workloads in order, in one module invocation.
  - Preflight first, for every workload before any is touched; each must exist and its current
    rollout must be complete, unless O(force=true).
  - Records the incident on each workload it restarts (annotation C(emergency.ops/restart-incident)),
    so re-running for the same incident restarts nothing again; it only waits for a rollout that a
    previous, interrupted run started.
  - In check mode it validates the restart with a server-side dry run and changes nothing.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  services:
    description: Workloads to restart, in the order given.
  incident:
    description: Incident id recorded on each restarted workload.
    type: str
    required: true
  force:
    description: Restart even a workload whose current rollout is not complete.
    type: bool
    default: false
  timeout:
    description: Seconds each rollout may take to become complete and ready.
    type: int
    default: 300
  poll_interval:
    description: Seconds between two reads of a rollout's status.
    type: float
    default: 0.25
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.services
"""

EXAMPLES = r"""
- name: Restart | Restart services in order
  emergency.ops.rollout_restart:
    namespace: matchbook
    incident: INC-20261122-0931
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
    name: {description: Workload name., type: str}
    kind: {description: Workload kind., type: str}
    restarted: {description: Whether this run restarted it., type: bool}
    previous_revision: {description: Revision before the restart., type: str}
    new_revision: {description: Revision once the rollout completed., type: str}
    seconds_to_ready: {description: Seconds from the restart until every replica was ready., type: float}
    prior:
      description: State recorded before the change (replicas, images, revision, restartedAt).
      type: dict
failed_service:
  description: The workload whose rollout did not complete, with its pods' state and recent events.
  returned: on failure
  type: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_ARGS, SERVICES_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
    rfc3339,
)
from ansible_collections.emergency.ops.plugins.module_utils.rollout import revision, rollout_state
from ansible_collections.emergency.ops.plugins.module_utils.workloads import not_ready_message

INCIDENT_ANNOTATION = "emergency.ops/restart-incident"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def prior_state(obj):
    template = obj["spec"]["template"]
    return {
        "replicas": obj["spec"].get("replicas", 1),
        "revision": revision(obj),
        "images": {c["name"]: c.get("image") for c in template["spec"].get("containers", [])},
        "restarted_at": template.get("metadata", {}).get("annotations", {}).get(RESTARTED_AT),
    }


def restart_patch(incident):
    return {
        "metadata": {"annotations": {INCIDENT_ANNOTATION: incident}},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: rfc3339()}}}},
    }


def wait_for_rollout(kube, kind, name, timeout, interval):
    """Returns ``(object, state, message)`` once the rollout completes, fails, or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        obj = kube.get(kind, name)
        state, message = rollout_state(obj)
        if state == "complete":
            ready = obj.get("status", {}).get("readyReplicas", 0)
            if ready >= obj["spec"].get("replicas", 1):
                return obj, state, message
            state, message = "progressing", "%s: %d replicas ready" % (name, ready)
        if state == "failed":
            return obj, state, message
        if time.monotonic() >= deadline:
            return obj, "timeout", "%s %s not ready after %ss: %s" % (kind, name, timeout, message)
        time.sleep(interval)


def main():
    argument_spec = dict(
        KUBE_ARGS,
        **SERVICES_ARGS,
        incident=dict(type="str", required=True),
        force=dict(type="bool", default=False),
        timeout=dict(type="int", default=300),
        poll_interval=dict(type="float", default=0.25),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_kubernetes(module)
    params = module.params
    incident = params["incident"]

    try:
        kube = Kube(params["kubeconfig"], params["context"], params["namespace"])
        # Preflight: every workload, before any of them is touched.
        plan, missing, unhealthy = [], [], []
        for service in params["services"]:
            obj = kube.get_or_none(service["kind"], service["name"])
            if obj is None:
                missing.append("%s/%s" % (service["kind"], service["name"]))
                continue
            done = obj["metadata"].get("annotations", {}).get(INCIDENT_ANNOTATION) == incident
            state, message = rollout_state(obj)
            if not done and state != "complete":
                unhealthy.append(message)
            plan.append((service, obj, done))
    except KubeError as exc:
        module.fail_json(msg="preflight: %s" % exc, outcome=outcome_of(exc))

    if missing:
        module.fail_json(
            msg="preflight: not found in namespace %s: %s" % (params["namespace"], ", ".join(missing)),
            outcome="invalid",
        )
    if unhealthy and not params["force"]:
        module.fail_json(
            msg="preflight: refusing to restart a workload whose rollout is not healthy "
            "(use --force to restart anyway): %s" % "; ".join(unhealthy),
            outcome="refused",
        )

    results, changed = [], False
    for service, obj, done in plan:
        kind, name = service["kind"], service["name"]
        entry = {
            "name": name,
            "kind": kind,
            "restarted": not done,
            "previous_revision": revision(obj),
            "prior": prior_state(obj),
        }
        results.append(entry)
        try:
            if module.check_mode:
                if not done:
                    kube.patch(kind, name, restart_patch(incident), dry_run=True)
                    changed = True
                entry["new_revision"] = None
                continue
            started = time.monotonic()
            if not done:
                kube.patch(kind, name, restart_patch(incident))
                changed = True
            obj, state, message = wait_for_rollout(
                kube, kind, name, params["timeout"], params["poll_interval"]
            )
            entry["new_revision"] = revision(obj)
            entry["seconds_to_ready"] = round(time.monotonic() - started, 2) if not done else 0.0
            if state != "complete":
                text, detail = not_ready_message(kube, obj, message)
                module.fail_json(msg=text, changed=changed, services=results, failed_service=detail)
        except KubeError as exc:
            module.fail_json(
                msg="%s %s: %s" % (kind, name, exc),
                changed=changed,
                services=results,
                outcome=outcome_of(exc),  # unreachable even once a workload was restarted
            )
    module.exit_json(changed=changed, services=results)


if __name__ == "__main__":
    main()
