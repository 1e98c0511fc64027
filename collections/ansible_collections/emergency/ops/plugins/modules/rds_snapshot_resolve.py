#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rds_snapshot_resolve
short_description: Resolve the RDS snapshot a restore uses and the instance it restores into (read only)
description:
  - Preflight of C(restore --from-snapshot). Reads the instance the application uses, resolves the
    snapshot (C(latest) is the newest of that instance's snapshots by C(SnapshotCreateTime)), names the
    new instance from the incident and reads it if a previous run of the same incident created it.
  - Changes nothing, in check mode or not.
  - Why not C(amazon.aws.rds_snapshot_info) - an unknown snapshot must exit 2 with the newest ids listed
    and an unreachable endpoint must exit 4; the driver reads both from the failure's C(outcome), which
    only a module of ours returns. C(amazon.aws.rds_instance) still creates the instance.
  - Fails with C(outcome=invalid) (exit 2) for an unknown instance or snapshot or a name RDS would not
    accept, C(unreachable) (exit 4) when the endpoint cannot be reached, and C(refused) (exit 3) when the
    snapshot is not available or the new instance's name is taken by something this incident did not
    restore.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  instance:
    description: DB instance identifier the application uses; its snapshots are the candidates.
    type: str
    required: true
  snapshot:
    description: C(latest) or a DB snapshot identifier.
    type: str
    required: true
  incident:
    description: Incident the new instance is named and tagged after.
    type: str
    required: true
extends_documentation_fragment:
  - emergency.ops.aws
"""

EXAMPLES = r"""
- name: Restore | Preflight | Resolve the snapshot and the new instance
  emergency.ops.rds_snapshot_resolve:
    instance: matchbook-db
    snapshot: latest
    incident: INC-20261123-0931
    region: us-east-1
"""

RETURN = r"""
source:
  description: The instance the application uses (id, status, endpoint and the settings the new one copies).
  returned: success
  type: dict
snapshot:
  description: The resolved snapshot (id, created, status, type).
  returned: success
  type: dict
newest:
  description: The instance's newest snapshot ids, newest first (at most ten).
  returned: always
  type: list
  elements: str
target_id:
  description: DB instance identifier of the new instance, derived from the instance and the incident.
  returned: success
  type: str
target:
  description: The new instance when a previous run of this incident created it, else null.
  returned: success
  type: dict
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import AWS_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.rds import (
    HAS_BOTO3,
    instance_or_none,
    rds_client,
    rds_errors,
)

INCIDENT_TAG = "emergency-ops/restore-incident"
SNAPSHOT_TAG = "emergency-ops/restored-from"


def summary(db):
    endpoint = db.get("Endpoint") or {}
    groups = db.get("DBParameterGroups") or [{}]
    return {
        "id": db["DBInstanceIdentifier"],
        "status": db.get("DBInstanceStatus"),
        "address": endpoint.get("Address"),
        "port": endpoint.get("Port"),
        "instance_class": db.get("DBInstanceClass"),
        "engine": db.get("Engine"),
        "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName") or "",
        "security_groups": [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups") or []],
        "parameter_group": groups[0].get("DBParameterGroupName") or "",
        "multi_az": bool(db.get("MultiAZ")),
    }


def target_name(instance, incident):
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", incident.lower())).strip("-")
    return "%s-restore-%s" % (instance, slug)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            AWS_ARGS,
            instance=dict(type="str", required=True),
            snapshot=dict(type="str", required=True),
            incident=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required")
    p = module.params
    rds = rds_client(p)
    name = target_name(p["instance"], p["incident"])
    if len(name) > 63 or not re.match(r"^[a-z][a-z0-9-]*[a-z0-9]$", name):
        module.fail_json(
            msg="the new instance's name %s is not a valid DB instance identifier (at most 63 characters)"
            % name,
            outcome="invalid",
        )
    newest = []
    with rds_errors(module):
        found = rds.describe_db_instances(DBInstanceIdentifier=p["instance"])["DBInstances"]
        source = summary(found[0])
        pages = rds.get_paginator("describe_db_snapshots").paginate(DBInstanceIdentifier=p["instance"])
        snapshots = sorted(
            (s for page in pages for s in page["DBSnapshots"]),
            key=lambda s: s.get("SnapshotCreateTime") or 0,
            reverse=True,
        )
        newest = [s["DBSnapshotIdentifier"] for s in snapshots[:10]]
        target = instance_or_none(rds, name)
        tags = {}
        if target is not None:
            listed = rds.list_tags_for_resource(ResourceName=target["DBInstanceArn"])["TagList"]
            tags = {t["Key"]: t["Value"] for t in listed}

    if p["snapshot"] == "latest":
        chosen = snapshots[0] if snapshots else None
    else:
        chosen = next((s for s in snapshots if s["DBSnapshotIdentifier"] == p["snapshot"]), None)
    if chosen is None:
        module.fail_json(
            msg="no snapshot %s of %s; newest: %s"
            % (p["snapshot"], p["instance"], ", ".join(newest) or "none"),
            outcome="invalid",
            newest=newest,
        )
    snapshot = {
        "id": chosen["DBSnapshotIdentifier"],
        "created": str(chosen.get("SnapshotCreateTime") or ""),
        "status": chosen.get("Status"),
        "type": chosen.get("SnapshotType"),
    }
    result = dict(changed=False, source=source, snapshot=snapshot, newest=newest, target_id=name, target=None)
    if target is not None:
        if tags.get(INCIDENT_TAG) != p["incident"]:
            module.fail_json(
                msg="%s exists and was not restored for incident %s" % (name, p["incident"]),
                outcome="refused",
                **result,
            )
        restored_from = tags.get(SNAPSHOT_TAG, "")
        if p["snapshot"] != "latest" and restored_from != snapshot["id"]:
            module.fail_json(
                msg="incident %s already restored %s into %s; use another incident to restore %s"
                % (p["incident"], restored_from, name, snapshot["id"]),
                outcome="refused",
                **result,
            )
        result["target"] = dict(summary(target), restored_from=restored_from)
        earlier = next((s for s in snapshots if s["DBSnapshotIdentifier"] == restored_from), None)
        if earlier is not None:
            result["snapshot"] = dict(
                id=restored_from,
                created=str(earlier.get("SnapshotCreateTime") or ""),
                status=earlier.get("Status"),
                type=earlier.get("SnapshotType"),
            )
        module.exit_json(**result)
    if snapshot["status"] != "available":
        module.fail_json(
            msg="snapshot %s is %s, not available" % (snapshot["id"], snapshot["status"]), outcome="refused"
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
