#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rds_promote
short_description: Promote an RDS read replica once per incident and wait until it is available
description:
  - Calls the RDS API's C(PromoteReadReplica) directly, then waits until the instance is C(available)
    and tags it with the incident (C(emergency-ops/failover-incident)), so a re-run for the same
    incident promotes nothing again.
  - Why not C(amazon.aws.rds_instance) with C(read_replica=false) - that module decides whether the
    promotion finished from C(StatusInfos), which some RDS implementations (moto, the sandbox's AWS
    emulator) never return, so it reports C(ok) and promotes nothing there. Calling the API is the
    same request the module would make, without that dependency.
  - Preflight refuses an instance that is not a read replica (unless this incident promoted it).
  - In check mode it only reports what it would do; with O(primary) it is the procedure's preflight read
    of both instances, failing with C(outcome=unreachable) when the RDS API cannot be reached (exit 4)
    and C(outcome=invalid) when an instance does not exist (exit 2).
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  replica:
    description: DB instance identifier of the read replica.
    type: str
    required: true
  primary:
    description: When given, this instance (the primary the replica replicates) is read too and returned.
    type: str
    default: ""
  incident:
    description: Incident recorded as a tag on the promoted instance.
    type: str
    required: true
  timeout:
    description: Seconds to wait until the promoted instance is available.
    type: int
    default: 900
  poll_interval:
    description: Seconds between two reads of the instance's status.
    type: float
    default: 2
extends_documentation_fragment:
  - emergency.ops.aws
"""

EXAMPLES = r"""
- name: DB failover | Promote the read replica
  emergency.ops.rds_promote:
    replica: matchbook-db-replica
    incident: INC-20261122-0931
    region: us-east-1
"""

RETURN = r"""
instance:
  description: The replica's identifier, status, endpoint and the source it replicated.
  returned: always
  type: dict
primary:
  description: The primary's identifier, status and endpoint, when O(primary) is given.
  returned: when O(primary) is given
  type: dict
promoted:
  description: Whether this run promoted it (false when this incident already had, or in check mode).
  returned: always
  type: bool
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import AWS_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.rds import HAS_BOTO3, rds_client, rds_errors

TAG = "emergency-ops/failover-incident"


def summary(db):
    endpoint = db.get("Endpoint") or {}
    return {
        "id": db["DBInstanceIdentifier"],
        "status": db.get("DBInstanceStatus"),
        "address": endpoint.get("Address"),
        "port": endpoint.get("Port"),
        "source": db.get("ReadReplicaSourceDBInstanceIdentifier"),
        "arn": db.get("DBInstanceArn"),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            AWS_ARGS,
            replica=dict(type="str", required=True),
            primary=dict(type="str", default=""),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=900),
            poll_interval=dict(type="float", default=2),
        ),
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required")
    p = module.params
    rds = rds_client(p)

    def describe(name=None):
        return rds.describe_db_instances(DBInstanceIdentifier=name or p["replica"])["DBInstances"][0]

    def exit_json(**result):
        module.exit_json(**dict(result, **primary))

    primary = {}
    with rds_errors(module):
        if p["primary"]:
            primary["primary"] = summary(describe(p["primary"]))
        db = describe()
        tags = {
            t["Key"]: t["Value"]
            for t in rds.list_tags_for_resource(ResourceName=db["DBInstanceArn"])["TagList"]
        }
        if tags.get(TAG) == p["incident"]:
            exit_json(changed=False, promoted=False, instance=summary(db))
        if not db.get("ReadReplicaSourceDBInstanceIdentifier"):
            module.fail_json(
                msg="%s is not a read replica" % p["replica"], outcome="refused", instance=summary(db)
            )
        if db.get("DBInstanceStatus") != "available":
            module.fail_json(
                msg="%s is %s, not available" % (p["replica"], db.get("DBInstanceStatus")), outcome="refused"
            )
        if module.check_mode:
            exit_json(changed=True, promoted=False, instance=summary(db))
        rds.promote_read_replica(DBInstanceIdentifier=p["replica"])
        deadline = time.monotonic() + p["timeout"]
        time.sleep(min(p["poll_interval"], 1))
        db = describe()
        while db.get("DBInstanceStatus") != "available":
            if time.monotonic() > deadline:
                module.fail_json(
                    msg="%s not available %ss after its promotion (status %s)"
                    % (p["replica"], p["timeout"], db.get("DBInstanceStatus")),
                    changed=True,
                    instance=summary(db),
                )
            time.sleep(p["poll_interval"])
            db = describe()
        rds.add_tags_to_resource(
            ResourceName=db["DBInstanceArn"], Tags=[{"Key": TAG, "Value": p["incident"]}]
        )
    exit_json(changed=True, promoted=True, instance=summary(db))


if __name__ == "__main__":
    main()
