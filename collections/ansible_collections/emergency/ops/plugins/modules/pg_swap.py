#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_swap
short_description: Swap a replacement database in for the live one by renaming both, keeping the old one
description:
  - Closes both databases to new connections, terminates the sessions still on them, then in one
    transaction renames the live database to O(keep_as) and O(replacement) to the live name, and opens
    the new live database again. PostgreSQL renames databases transactionally, so a failure at any point
    leaves the old live database in place under its own name; the module then reopens it to connections.
  - Both databases get a marker (their comment) saying what happened, for which incident and when, so a
    re-run for the same incident changes nothing and C(restore-cleanup) can find kept databases by age.
  - Used by C(restore) (live -> C(<db>_pre_<incident>)) and C(restore-undo) (the kept one back, the restored
    one kept as C(<db>_restored_<incident>)).
  - Renaming databases is not something C(community.postgresql.postgresql_db) does with connections
    closed and terminated in one step, hence this module.
  - In check mode it reads the server and reports the plan.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  database:
    description: Admin connection (a login that may rename databases); O(database.name) is the live database.
  replacement:
    description: Database that becomes the live one.
    type: str
    required: true
  keep_as:
    description: New name of the current live database (kept, not dropped).
    type: str
    required: true
  action:
    description: What the swap is for, recorded in the markers.
    type: str
    choices: [restore, undo]
    default: restore
  kept_role:
    description: Role recorded on the kept database (V(pre) for a restore, V(restored) for an undo).
    type: str
    default: pre
  incident:
    description: Incident recorded in the markers.
    type: str
    required: true
  details:
    description: Extra facts recorded in the new live database's marker (for example the backup id).
    type: dict
    default: {}
extends_documentation_fragment:
  - emergency.ops.database
"""

EXAMPLES = r"""
- name: Restore | Swap the restored database in
  emergency.ops.pg_swap:
    database: {host: db.internal, name: app, user: postgres, password: "{{ pw }}"}
    replacement: app_restore_inc_1
    keep_as: app_pre_inc_1
    incident: INC-1
"""

RETURN = r"""
swapped:
  description: Whether this run swapped the databases.
  returned: always
  type: bool
terminated:
  description: Sessions that were still connected to either database and were terminated.
  returned: success
  type: list
  elements: dict
seconds:
  description: Seconds the live database was closed to connections.
  returned: success
  type: float
rolled_back:
  description: On failure, whether the old live database was confirmed back under its name.
  returned: on failure
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import DATABASE_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, fail
from ansible_collections.emergency.ops.plugins.module_utils.postgres import (
    HAS_PSYCOPG,
    allow_connections,
    connect,
    databases,
)
from ansible_collections.emergency.ops.plugins.module_utils.swap import SwapFailed, live_swap, swap_databases


def main():
    module = AnsibleModule(
        argument_spec=dict(
            DATABASE_ARGS,
            replacement=dict(type="str", required=True),
            keep_as=dict(type="str", required=True),
            action=dict(type="str", choices=["restore", "undo"], default="restore"),
            kept_role=dict(type="str", default="pre"),
            incident=dict(type="str", required=True),
            details=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    if not HAS_PSYCOPG:
        module.fail_json(msg="psycopg is required on the controller")
    params = module.params
    database, incident = params["database"], params["incident"]
    live, replacement, keep_as = database["name"], params["replacement"], params["keep_as"]
    try:
        conn = connect(database)
    except Failure as exc:
        fail(module, exc, swapped=False)
    with conn:
        present = databases(conn)
        swap = live_swap(present, live)
        if (
            swap.get("incident") == incident
            and swap.get("action") == params["action"]
            and replacement not in present
        ):
            if not present[live]["allow_connections"] and not module.check_mode:
                allow_connections(conn, live, True)  # an interrupted run left it closed
            module.exit_json(changed=False, swapped=False, terminated=[], kept_as=swap.get("kept_as"))
        if module.check_mode:
            module.exit_json(
                changed=True,
                swapped=False,
                terminated=[],
                plan="rename %s to %s and %s to %s" % (live, keep_as, replacement, live),
            )
        try:
            terminated, seconds = swap_databases(
                conn,
                present,
                live,
                replacement,
                keep_as,
                params["action"],
                params["kept_role"],
                incident,
                params["details"],
            )
        except SwapFailed as exc:
            module.fail_json(
                msg=str(exc), swapped=False, rolled_back=exc.rolled_back, terminated=exc.terminated
            )
        except Failure as exc:
            fail(module, exc, swapped=False)
    module.exit_json(
        changed=True,
        swapped=True,
        terminated=terminated,
        kept_as=keep_as if live in present else None,
        seconds=seconds,
    )


if __name__ == "__main__":
    main()
