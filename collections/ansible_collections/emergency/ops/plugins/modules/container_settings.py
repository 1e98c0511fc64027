#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: container_settings
short_description: Set or remove environment variables and resources of a workload's main container
description:
  - Changes the main container (the one named like the workload, else the first) of each workload in
    one patch per workload, then waits for the rollout and checks every replica is ready.
  - O(env) sets variables, O(unset) removes them, O(resources) sets the same values as requests and
    limits (runbook 003 worker backlog gives workers more CPU and memory).
  - Records what it changes before changing it (previous values, or that a variable was absent) and
    the incident on the workload (annotation C(emergency.ops/settings-incident)). A workload already
    in the wanted state is not touched, so a re-run changes nothing.
  - Values of variables whose names look secret (password, token, key, URL...) are shown as
    C((redacted)); a variable set from a Secret or ConfigMap (C(valueFrom)) is shown by reference.
  - Lowering a request or limit is refused unless O(allow_lower=true).
  - In check mode the patch is validated with a server-side dry run and nothing changes.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  services:
    description: Workloads to change, in order.
  env:
    description: Variables to set, name to value.
    type: dict
    default: {}
  unset:
    description: Variables to remove.
    type: list
    elements: str
    default: []
  resources:
    description: CPU and memory (Kubernetes quantities) set as both requests and limits.
    type: dict
    default: {}
  allow_lower:
    description: Allow O(resources) to lower a current request or limit.
    type: bool
    default: false
  incident:
    description: Incident id recorded on each changed workload.
    type: str
    required: true
  timeout:
    description: Seconds each rollout may take to be complete and ready.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.services
"""

EXAMPLES = r"""
- name: Set env | Turn on debug logging
  emergency.ops.container_settings:
    namespace: matchbook
    incident: INC-20261122-0931
    services:
      - {name: api, kind: Deployment}
    env:
      RUST_LOG: debug
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
    container:
      description: Container changed.
      type: str
    changed:
      description: Whether this run changed it.
      type: bool
    previous_env:
      description: Previous value of each variable touched (null when it was absent).
      type: dict
    previous_resources:
      description: Requests and limits before the change.
      type: dict
    resources:
      description: Requests and limits after the change.
      type: dict
failed_service:
  description: The workload whose rollout did not become ready, with its pods and recent events.
  returned: on failure
  type: dict
"""

import copy
import re
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
    main_container,
    not_ready_message,
    wait_ready,
)

INCIDENT = "emergency.ops/settings-incident"
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|DSN|URL|AUTH", re.IGNORECASE)
UNITS = {
    "m": 0.001,
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")


def quantity(text):
    match = QUANTITY.match(str(text))
    if not match:
        return None
    return float(match.group(1)) * UNITS[match.group(2) or ""]


def shown(name, entry):
    """A variable's value as it may appear in a result."""
    if entry is None:
        return None
    if "valueFrom" in entry:
        return {"valueFrom": entry["valueFrom"]}
    if SECRET_NAME.search(name):
        return "(redacted)"
    return entry.get("value", "")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            **SERVICES_ARGS,
            env=dict(type="dict", default={}),
            unset=dict(type="list", elements="str", default=[]),
            resources=dict(type="dict", default={}),
            allow_lower=dict(type="bool", default=False),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    bad = [k for k in p["resources"] if k not in ("cpu", "memory") or quantity(p["resources"][k]) is None]
    if bad:
        module.fail_json(msg="resources: expected cpu and memory quantities, got %s" % bad, outcome="invalid")
    both = set(p["env"]) & set(p["unset"])
    if both:
        module.fail_json(msg="both set and unset: %s" % ", ".join(sorted(both)), outcome="invalid")

    results, changed, plan = [], False, []
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        for service in p["services"]:  # preflight: every workload and its change, before any is touched
            kind, name = service["kind"], service["name"]
            obj = get_or_fail(module, kube, kind, name)
            template = obj["spec"]["template"]
            index = main_container(template, name)
            container = template["spec"]["containers"][index]
            env = copy.deepcopy(container.get("env") or [])
            by_name = {e["name"]: e for e in env}
            previous_env = {k: shown(k, by_name.get(k)) for k in list(p["env"]) + list(p["unset"])}
            new_env = [e for e in env if e["name"] not in p["unset"]]
            for key, value in p["env"].items():
                entry = {"name": key, "value": str(value)}
                position = next((i for i, e in enumerate(new_env) if e["name"] == key), None)
                if position is None:
                    new_env.append(entry)
                else:
                    new_env[position] = entry
            resources = copy.deepcopy(container.get("resources") or {})
            new_resources = copy.deepcopy(resources)
            lowered = []
            for key, value in p["resources"].items():
                for section in ("requests", "limits"):
                    current = resources.get(section, {}).get(key)
                    if (
                        current is not None
                        and quantity(current) is not None
                        and quantity(value) < quantity(current)
                    ):
                        lowered.append("%s %s %s -> %s" % (section, key, current, value))
                    new_resources.setdefault(section, {})[key] = str(value)
            if lowered and not p["allow_lower"]:
                module.fail_json(
                    msg="%s %s: refusing to lower %s (use --force)" % (kind, name, "; ".join(lowered)),
                    outcome="refused",
                )
            entry = {
                "name": name,
                "kind": kind,
                "container": container["name"],
                "changed": new_env != env or new_resources != resources,
                "previous_env": previous_env,
                "env": {k: shown(k, {"name": k, "value": str(v)}) for k, v in p["env"].items()},
                "unset": list(p["unset"]),
                "previous_resources": resources,
                "resources": new_resources,
            }
            results.append(entry)
            patch = []
            if new_env != env:
                patch.append(
                    {"op": "add", "path": "/spec/template/spec/containers/%d/env" % index, "value": new_env}
                )
            if new_resources != resources:
                patch.append(
                    {
                        "op": "add",
                        "path": "/spec/template/spec/containers/%d/resources" % index,
                        "value": new_resources,
                    }
                )
            if patch:
                annotations = dict(obj["metadata"].get("annotations") or {}, **{INCIDENT: p["incident"]})
                patch.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
            plan.append((entry, kind, name, patch))

        for entry, kind, name, patch in plan:
            if patch:
                kube.patch(kind, name, patch, patch_type="json", dry_run=module.check_mode)
                changed = True
            if module.check_mode:
                continue
            started = time.monotonic()
            obj, state, message = wait_ready(kube, kind, name, p["timeout"])
            entry["seconds_to_ready"] = round(time.monotonic() - started, 2)
            if state != "complete":
                text, detail = not_ready_message(kube, obj, message)
                module.fail_json(msg=text, changed=changed, services=results, failed_service=detail)
    except KubeError as exc:
        module.fail_json(msg=str(exc), changed=changed, services=results, outcome=outcome_of(exc, changed))
    module.exit_json(changed=changed, services=results)


if __name__ == "__main__":
    main()
