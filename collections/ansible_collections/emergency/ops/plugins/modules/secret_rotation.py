#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: secret_rotation
short_description: Rotate a database password or API keys without breaking the service; no value leaves it
version_added: 1.2.0
description:
  - Makes the new values itself; they go to the Kubernetes API and PostgreSQL only and are never returned.
  - O(kind=postgres) alternates between two login roles C(<owner>_a) and C(<owner>_b) (members of O(owner),
    acting as it), gives the other one a new password (as a SCRAM verifier), updates the Secret, restarts
    every workload whose pods use the Secret in O(order), each ready before the next, and then removes the
    old role's password and ends its sessions; checks the new login is accepted and the old one refused.
  - O(kind=api_keys) gives every key of the Secret a new random value, restarts the workloads that use it,
    and with O(probe) checks through the Ingress that each old key is refused and each new one accepted.
  - O(kind=keypair) stops O(stop) (replicas recorded), makes a new keypair with O(generator) into a file of
    a private folder (removed at the end whatever happens), stores it in the Secret under O(key) with the
    previous one kept as C(<key>.previous), runs O(follow_up) (the funds transfer) once per incident and then
    drops the previous one, and brings O(stop) back. A follow-up that fails is run again by a re-run for the
    incident.
  - Restarted pods that do not become ready put back the previous data and pod templates.
  - A Secret already rotated for O(incident) is not rotated again.
options:
  secret:
    description: The Secret to rotate.
    type: str
    required: true
  kind:
    description: What the Secret holds.
    type: str
    choices: [postgres, api_keys, keypair]
    required: true
  database:
    description: The admin login for O(kind=postgres).
    required: false
  owner:
    description: The role owning the application's objects, of which the alternating login roles are members.
    type: str
  order:
    description: The inventory's restart order; workloads using the Secret restart in it, others after.
    type: list
    elements: str
    default: []
  probe:
    description: For O(kind=api_keys), a request through the Ingress that needs a key.
    type: dict
    suboptions:
      url:
        description: URL of the request.
        type: str
        required: true
      host:
        description: Host header.
        type: str
      header:
        description: The header carrying the key.
        type: str
        default: X-API-Key
      key:
        description: The key of the Secret the request presents.
        type: str
        required: true
  key:
    description: For O(kind=keypair), the Secret's key holding the keypair file's content.
    type: str
    default: keypair
  generator:
    description: For O(kind=keypair), the command writing a new keypair file at C({new})
      (C(solana-keygen new -o {new})).
    type: list
    elements: str
  follow_up:
    description: For O(kind=keypair), a command run once per incident from C({old}) to C({new})
      (the funds transfer).
    type: list
    elements: str
    default: []
  stop:
    description: For O(kind=keypair), the workloads stopped while the keypair changes and brought back after.
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
        default: Deployment
        choices: [Deployment, StatefulSet]
  incident:
    description: The incident the rotation is recorded under.
    type: str
    required: true
  timeout:
    description: Seconds each restarted workload may take to become ready.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.database
author: Emergency procedures maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Rotate the database password
  emergency.ops.secret_rotation:
    namespace: matchbook
    secret: postgres-secret
    kind: postgres
    database: "{{ admin }}"
    owner: app
    order: [indexer, api, crank]
    incident: INC-1
"""

RETURN = r"""
rotation:
  description: The Secret, its keys, resource versions before and after, what restarted; never a value.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    DATABASE_ARGS,
    KUBE_ARGS,
    WORKLOAD_OPTIONS,
)
from ansible_collections.emergency.ops.plugins.module_utils.isolation import wire_status
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
)
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import NotSettled
from ansible_collections.emergency.ops.plugins.module_utils.rotation import (
    Rotation,
    RotationFailed,
    decoded,
    login_works,
    rotate_keypair,
    rotate_keys,
    rotate_postgres,
)


def wire_check(probe):
    """For each key rotated: the status with the old value (must be refused) and the new (served)."""

    def check(old, new):
        key = probe["key"]
        seen = {}
        for label, value in (("old", old[key]), ("new", new[key])):
            seen[label] = wire_status(
                {"url": probe["url"], "host": probe.get("host"), "headers": {probe["header"]: value}}
            )
        if not (seen["old"] in (401, 403) and 200 <= seen["new"] <= 299):
            raise RotationFailed(
                "through the Ingress the old key got %s and the new one %s" % (seen["old"], seen["new"]),
                False,
            )
        return seen

    return check


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            secret=dict(type="str", required=True, no_log=False),
            kind=dict(type="str", choices=["postgres", "api_keys", "keypair"], required=True),
            database=dict(DATABASE_ARGS["database"], required=False),
            owner=dict(type="str"),
            order=dict(type="list", elements="str", default=[]),
            probe=dict(
                type="dict",
                options=dict(
                    url=dict(type="str", required=True),
                    host=dict(type="str"),
                    header=dict(type="str", default="X-API-Key"),
                    key=dict(type="str", required=True, no_log=False),
                ),
            ),
            key=dict(type="str", default="keypair", no_log=False),
            generator=dict(type="list", elements="str"),
            follow_up=dict(type="list", elements="str", default=[]),
            stop=dict(type="list", elements="dict", default=[], options=WORKLOAD_OPTIONS),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
        ),
        required_if=[("kind", "postgres", ("database", "owner")), ("kind", "keypair", ("generator",))],
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    result = {"changed": False, "rotation": {}}
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        rotation = Rotation(kube, p["secret"], p["incident"], p["order"], p["timeout"], module.check_mode)
        if rotation.already() and p["kind"] != "keypair":  # a keypair's follow-up may be left to run
            entry = rotation.entry(False)
            if p["kind"] == "postgres":
                now = decoded(rotation.secret)
                entry["new_login_accepted"] = login_works(p["database"], now["username"], now["password"])
            result["rotation"] = entry
            module.exit_json(**result)
        if p["kind"] == "postgres":
            import psycopg

            with psycopg.connect(
                host=p["database"]["host"],
                port=p["database"]["port"],
                user=p["database"]["user"],
                password=p["database"]["password"] or None,
                dbname="postgres",
                sslmode=p["database"]["sslmode"],
                connect_timeout=5,
                autocommit=True,
            ) as admin:
                entry = rotate_postgres(rotation, admin, p["database"], p["owner"])
        elif p["kind"] == "keypair":
            entry = rotate_keypair(
                rotation, p["key"], p["generator"], p["follow_up"], p["stop"], p["timeout"]
            )
        else:
            entry = rotate_keys(rotation, wire_check(p["probe"]) if p["probe"] else None)
        result["changed"] = entry.pop("changed")
        result["rotation"] = entry
    except RotationFailed as exc:
        module.fail_json(msg=str(exc), outcome="failed", put_back=exc.put_back, **result)
    except NotSettled as exc:
        module.fail_json(msg=str(exc), outcome="failed", **result)
    except KubeError as exc:
        module.fail_json(msg=str(exc), outcome=outcome_of(exc, result["changed"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
