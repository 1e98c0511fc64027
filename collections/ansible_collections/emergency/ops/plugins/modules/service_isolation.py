#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: service_isolation
short_description: Isolate a compromised service (network, traffic, quarantine or stop), or release it
version_added: 1.2.0
description:
  - With O(state=isolated), records the exact prior state on the workload (annotation
    C(emergency.ops/isolation)) and then isolates it. C(network) adds a deny-all NetworkPolicy (ingress
    and egress) selecting exactly its pods; C(traffic) points the Services that select it at no pod and,
    with O(maintenance_service), sets the Ingresses' C(nginx.ingress.kubernetes.io/default-backend)
    annotation to it (never a snippet); C(quarantine) takes the running pods out of their ReplicaSet and
    Services (their selector labels removed) behind a deny-all policy, so fresh pods replace them while
    the compromised processes keep running for forensics; C(stop) scales to 0 with the replicas recorded.
  - With O(probe), checks what a client sees through the Ingress, refused after isolating (C(network),
    C(traffic), C(stop)) and served again after releasing.
  - With O(state=released), puts back exactly what the record says and removes only what isolate made.
    Quarantined pods are deleted only with O(delete_quarantined), and only when their evidence was captured.
  - Idempotent per incident; a workload isolated by another incident or in another mode is refused.
options:
  state:
    description: Isolate, release, or only read the record (C(inspected), refused like C(isolated) when
      another incident or mode isolated the service).
    type: str
    choices: [isolated, released, inspected]
    default: isolated
  service:
    description: The workload.
    type: dict
    required: true
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
  mode:
    description: How to isolate.
    type: str
    choices: [network, traffic, quarantine, stop]
    default: network
  allow_dns:
    description: Let the isolated pods still resolve names (egress to port 53).
    type: bool
    default: false
  maintenance_service:
    description: Service answering 503 with Retry-After that the Ingresses send requests to (C(traffic)).
    type: str
  evidence:
    description: The evidence bundle captured before isolating, recorded with the isolation.
    type: str
  delete_quarantined:
    description: On release, delete the quarantined pods and their policy.
    type: bool
    default: false
  probe:
    description: What a client requests through the Ingress to see the isolation.
    type: dict
    suboptions:
      url:
        description: URL of the request.
        type: str
        required: true
      host:
        description: Host header.
        type: str
  incident:
    description: The incident recorded with the isolation.
    type: str
    required: true
  timeout:
    description: Seconds to wait for the platform and the probe.
    type: int
    default: 120
extends_documentation_fragment:
  - emergency.ops.kube
author: Emergency procedures maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Cut the api off the network
  emergency.ops.service_isolation:
    namespace: matchbook
    service:
      name: api
    mode: network
    incident: INC-1
"""

RETURN = r"""
isolation:
  description: The record (mode, prior state, what was made) and whether anything changed.
  returned: always
  type: dict
wire:
  description: The status a client of the probe got (0 for a refused connection), when a probe was given.
  returned: when probe is given
  type: raw
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.emergency.ops.plugins.module_utils.isolation import (
    MODES,
    Isolation,
    NotVerified,
    Refused,
    verify_on_wire,
)
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
)
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import NotSettled


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            state=dict(type="str", choices=["isolated", "released", "inspected"], default="isolated"),
            service=dict(
                type="dict",
                required=True,
                options=dict(
                    name=dict(type="str", required=True),
                    kind=dict(type="str", choices=["Deployment", "StatefulSet"], default="Deployment"),
                ),
            ),
            mode=dict(type="str", choices=list(MODES), default="network"),
            allow_dns=dict(type="bool", default=False),
            maintenance_service=dict(type="str"),
            evidence=dict(type="str"),
            delete_quarantined=dict(type="bool", default=False),
            probe=dict(type="dict", options=dict(url=dict(type="str", required=True), host=dict(type="str"))),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    result = {"changed": False, "isolation": {}}
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        isolation = Isolation(kube, p["service"], p["incident"], module.check_mode, p["timeout"])
        if p["state"] == "inspected":
            entry = isolation.inspect(p["mode"])
            result["changed"], result["isolation"] = entry.pop("changed"), entry
            module.exit_json(**result)
        if p["state"] == "isolated":
            entry = isolation.isolate(p["mode"], p["allow_dns"], p["maintenance_service"], p["evidence"])
            refused = entry["mode"] != "quarantine"  # a quarantine keeps the service serving, on fresh pods
        else:
            entry = isolation.release(p["delete_quarantined"])
            refused = False
        result["changed"], result["isolation"] = entry.pop("changed"), entry
        if p["probe"] and not module.check_mode and (p["state"] == "isolated" or entry.get("released")):
            result["wire"] = verify_on_wire(p["probe"], refused, p["timeout"])
    except Refused as exc:
        module.fail_json(msg=str(exc), outcome="refused", **result)
    except (NotVerified, NotSettled) as exc:
        module.fail_json(msg=str(exc), outcome="failed", **result)
    except KubeError as exc:
        module.fail_json(msg=str(exc), outcome=outcome_of(exc, result["changed"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
