#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: migration_state
short_description: Read applied migrations and a ready pod; record a migration rollback
description:
  - In one invocation, reads the workload that runs the application's migration command, picks a
    ready pod of it (by name order), reads the incident record of a migration rollback from the
    workload's annotation C(emergency.ops/migrate-rollback), and reads the versions in the
    database's C(schema_migrations) table, newest first (read only; rows are never changed here).
  - With O(record), it writes that record on the workload's annotation (metadata only, so nothing
    rolls out); in check mode with a server-side dry run.
  - The database password is a no_log parameter and is never returned.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  namespace:
    description: Namespace of the workload.
    type: str
    required: true
  service:
    description: The workload whose pods run the command.
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
  container:
    description: Container that must be ready in the pod; empty for the pod's first container.
    type: str
    default: ""
  database:
    description: Admin connection to the application's database.
    type: dict
    required: true
    suboptions:
      host: {description: Host., type: str, required: true}
      port: {description: Port., type: int, default: 5432}
      name: {description: Database., type: str, required: true}
      user: {description: Login., type: str, required: true}
      password: {description: Password., type: str, required: true}
      sslmode: {description: libpq sslmode., type: str, default: prefer}
  table:
    description: The migrations table, with a text or number column C(version).
    type: str
    default: schema_migrations
  record:
    description: When given, the record written on the workload (incident, state, versions).
    type: dict
extends_documentation_fragment:
  - emergency.ops.kube.cluster
"""

EXAMPLES = r"""
- name: Migrate rollback | Preflight | Read the pod and the applied migrations
  emergency.ops.migration_state:
    namespace: matchbook
    service: {name: api, kind: Deployment}
    database: "{{ __database_admin }}"
  register: __migrate_rollback_before
"""

RETURN = r"""
pod:
  description: A ready pod of the workload (empty when none is ready).
  returned: always
  type: str
container:
  description: The container the command runs in.
  returned: always
  type: str
versions:
  description: Applied versions, newest first.
  returned: always
  type: list
  elements: str
newest:
  description: The newest applied version (empty when none).
  returned: always
  type: str
record:
  description: The rollback record on the workload before this call (empty dict when none).
  returned: always
  type: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    KUBE_CLUSTER_ARGS,
    WORKLOAD_OPTIONS,
)
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    get_or_fail,
    outcome_of,
    require_kubernetes,
    selector_string,
)

try:
    import psycopg

    HAS_PSYCOPG = True
except ImportError:
    HAS_PSYCOPG = False

ANNOTATION = "emergency.ops/migrate-rollback"
IDENTIFIER = "abcdefghijklmnopqrstuvwxyz0123456789_"


def ready(pod, container):
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    if not any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    ):
        return False
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    return not container or container in names


def versions(database, table):
    conn = psycopg.connect(
        host=database["host"],
        port=database["port"],
        dbname=database["name"],
        user=database["user"],
        password=database["password"],
        sslmode=database["sslmode"],
        connect_timeout=10,
        autocommit=True,
    )
    try:
        rows = conn.execute("SELECT version::text FROM %s ORDER BY version DESC" % table).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            namespace=dict(type="str", required=True),
            service=dict(type="dict", required=True, options=WORKLOAD_OPTIONS),
            container=dict(type="str", default=""),
            database=dict(
                type="dict",
                required=True,
                options=dict(
                    host=dict(type="str", required=True),
                    port=dict(type="int", default=5432),
                    name=dict(type="str", required=True),
                    user=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                    sslmode=dict(type="str", default="prefer"),
                ),
            ),
            table=dict(type="str", default="schema_migrations"),
            record=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    if not HAS_PSYCOPG:
        module.fail_json(msg="psycopg (version 3) is required")
    params = module.params
    service, table = params["service"], params["table"]
    if not table or any(ch not in IDENTIFIER for part in table.split(".") for ch in part.lower()):
        module.fail_json(msg="table %r is not a plain (schema.)name" % table, outcome="invalid")

    try:
        kube = Kube(params["kubeconfig"], params["context"], params["namespace"])
        workload = get_or_fail(module, kube, service["kind"], service["name"])
        annotations = workload["metadata"].get("annotations") or {}
        try:
            record = json.loads(annotations.get(ANNOTATION) or "{}")
        except ValueError:
            record = {}
        pods = kube.list(
            "Pod", label_selector=selector_string(workload["spec"]["selector"].get("matchLabels"))
        )
        ready_pods = sorted(p["metadata"]["name"] for p in pods if ready(p, params["container"]))
        pod = ready_pods[0] if ready_pods else ""
        container = params["container"]
        if pod and not container:
            chosen = next(p for p in pods if p["metadata"]["name"] == pod)
            container = chosen["spec"]["containers"][0]["name"]
        changed = False
        if params["record"] is not None:
            value = json.dumps(params["record"], sort_keys=True, separators=(",", ":"))
            if annotations.get(ANNOTATION) != value:
                patch = {"metadata": {"annotations": {ANNOTATION: value}}}
                kube.patch(service["kind"], service["name"], patch, "merge", dry_run=module.check_mode)
                changed = True
    except KubeError as exc:
        module.fail_json(msg=str(exc), outcome=outcome_of(exc))

    try:
        applied = versions(params["database"], table)
    except psycopg.OperationalError as exc:
        module.fail_json(msg="cannot reach the database: %s" % type(exc).__name__, outcome="unreachable")
    except psycopg.Error as exc:
        module.fail_json(msg="cannot read %s: %s" % (table, exc.diag.message_primary or type(exc).__name__))

    module.exit_json(
        changed=changed,
        pod=pod,
        container=container,
        versions=applied,
        newest=applied[0] if applied else "",
        record=record,
    )


if __name__ == "__main__":
    main()
