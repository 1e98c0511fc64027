#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pod_replace
short_description: Delete a workload's pods (all, or only those not serving) and wait for their replacements
description:
  - With O(only_unhealthy=true) deletes only the pods that are not Running and Ready and older than
    O(min_age) seconds (runbook 003 "restart pods that are not running"); otherwise every pod of the
    workload (runbook 003 database pod recovery). All are deleted at once, in one step.
  - Waits until the deleted pods are gone and the workload has every replica ready again, then checks
    that the workloads in O(verify) are rolled out and ready too.
  - Records the incident on the workload (annotation C(emergency.ops/pods-replaced-incident)), so a
    re-run for the same incident deletes nothing again and only verifies.
  - In check mode each deletion is a server-side dry run.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  services:
    description: Workloads whose pods are replaced.
  only_unhealthy:
    description: Delete only pods that are not Running and Ready.
    type: bool
    default: true
  min_age:
    description: With O(only_unhealthy), leave alone pods younger than this many seconds (still starting).
    type: int
    default: 30
  verify:
    description: Workloads that must be rolled out and ready afterwards (for example the database's writers).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Workload name.
        type: str
        required: true
      kind:
        description: Workload kind.
        type: str
        choices: [Deployment, StatefulSet]
        default: Deployment
  incident:
    description: Incident id recorded on each workload whose pods were deleted.
    type: str
    required: true
  timeout:
    description: Seconds the replacements may take to be ready.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.services
"""

EXAMPLES = r"""
- name: Restart unhealthy | Replace the pods of api that do not serve
  emergency.ops.pod_replace:
    namespace: matchbook
    incident: INC-20261122-0931
    services:
      - {name: api, kind: Deployment}
"""

RETURN = r"""
services:
  description: One entry per workload.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Workload name.
      type: str
    pods_before:
      description: Its pods before, with phase, readiness and node.
      type: list
    deleted:
      description: Pods deleted by this run.
      type: list
    pods_after:
      description: Its pods once ready again.
      type: list
    seconds_to_ready:
      description: Seconds until every replica was ready again.
      type: float
verified:
  description: The workloads of O(verify), each with its ready replicas.
  returned: success
  type: list
failed_service:
  description: The workload that did not become ready, with its pods and recent events.
  returned: on failure
  type: dict
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
from ansible_collections.emergency.ops.plugins.module_utils.workloads import (
    dry_run_delete,
    not_ready_message,
    pod_age,
    pod_serving,
    pod_summary,
    pods_of,
    wait_ready,
)

INCIDENT = "emergency.ops/pods-replaced-incident"


def main():
    verify_options = dict(SERVICES_ARGS["services"], required=False, default=[])
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            **SERVICES_ARGS,
            only_unhealthy=dict(type="bool", default=True),
            min_age=dict(type="int", default=30),
            verify=verify_options,
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    results, changed, plan = [], False, []
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        for service in p["services"] + p["verify"]:  # preflight: everything named exists
            get_or_fail(module, kube, service["kind"], service["name"])
        for service in p["services"]:
            kind, name = service["kind"], service["name"]
            obj = kube.get(kind, name)
            pods = pods_of(kube, obj)
            done = obj["metadata"].get("annotations", {}).get(INCIDENT) == p["incident"]
            doomed = (
                []
                if done
                else [
                    pod
                    for pod in pods
                    if not p["only_unhealthy"] or (not pod_serving(pod) and pod_age(pod) >= p["min_age"])
                ]
            )
            entry = {
                "name": name,
                "kind": kind,
                "pods_before": [pod_summary(pod) for pod in pods],
                "deleted": [pod["metadata"]["name"] for pod in doomed],
                "already_done": done,
            }
            results.append(entry)
            plan.append((entry, obj, doomed))

        for entry, _obj, doomed in plan:
            kind, name = entry["kind"], entry["name"]
            if doomed and not module.check_mode:
                kube.patch(
                    kind, name, {"metadata": {"annotations": {INCIDENT: p["incident"]}}}, patch_type="merge"
                )
            for pod in doomed:
                if module.check_mode:
                    dry_run_delete(kube, "Pod", pod["metadata"]["name"])
                else:
                    try:
                        kube.delete("Pod", pod["metadata"]["name"])
                    except KubeError as exc:
                        if exc.status != 404:  # already gone is what we want
                            raise
                changed = True
        if module.check_mode:
            module.exit_json(changed=changed, services=results)

        for entry, obj, doomed in plan:
            kind, name = entry["kind"], entry["name"]
            gone = set(pod["metadata"]["uid"] for pod in doomed)
            started = time.monotonic()
            deadline = started + p["timeout"]
            while gone and time.monotonic() < deadline:
                gone &= set(pod["metadata"]["uid"] for pod in pods_of(kube, obj))
                if gone:
                    time.sleep(0.25)
            obj, state, message = wait_ready(kube, kind, name, max(1, deadline - time.monotonic()))
            entry["seconds_to_ready"] = round(time.monotonic() - started, 2)
            entry["pods_after"] = [pod_summary(pod) for pod in pods_of(kube, obj)]
            if gone or state != "complete":
                text, detail = not_ready_message(
                    kube, obj, message if not gone else "deleted pods still present"
                )
                module.fail_json(msg=text, changed=changed, services=results, failed_service=detail)

        verified = []
        for service in p["verify"]:
            obj, state, message = wait_ready(kube, service["kind"], service["name"], p["timeout"])
            if state != "complete":
                text, detail = not_ready_message(kube, obj, message)
                module.fail_json(msg=text, changed=changed, services=results, failed_service=detail)
            verified.append(
                {"name": service["name"], "ready_replicas": obj.get("status", {}).get("readyReplicas", 0)}
            )
    except KubeError as exc:
        module.fail_json(msg=str(exc), changed=changed, services=results, outcome=outcome_of(exc, changed))
    module.exit_json(changed=changed, services=results, verified=verified)


if __name__ == "__main__":
    main()
