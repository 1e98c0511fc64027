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
author: Emergency procedures maintainers
options:
  database:
    description: Admin connection; O(database.name) is the live database's name.
    type: dict
    required: true
    suboptions:
      host: {description: Server host., type: str, required: true}
      port: {description: Server port., type: int, default: 5432}
      name: {description: The live database's name., type: str, required: true}
      user: {description: Admin login (may rename databases)., type: str, required: true}
      password: {description: Password., type: str, default: ""}
      sslmode: {description: libpq sslmode., type: str, default: prefer}
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

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.dbrecovery import (
    DATABASE_ARGS,
    HAS_PSYCOPG,
    Failure,
    allow_connections,
    connect,
    databases,
    fail,
    iso,
    set_marker,
    terminate,
    utcnow,
)

try:
    from psycopg import sql
except ImportError:  # reported through HAS_PSYCOPG
    sql = None


def rename(conn, old, new):
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            database=DATABASE_ARGS,
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
        swap = ((present.get(live) or {}).get("marker") or {}).get("swap") or {}
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
        if replacement not in present:
            module.fail_json(
                msg="nothing to swap in: database %s does not exist" % replacement,
                outcome="refused",
                swapped=False,
            )
        if keep_as in present:
            module.fail_json(
                msg="database %s already exists; refusing to overwrite it" % keep_as,
                outcome="refused",
                swapped=False,
            )
        now = iso(utcnow())
        closed = time.monotonic()
        terminated = []
        try:
            names = [n for n in (live, replacement) if n in present]
            for name in names:
                allow_connections(conn, name, False)
            terminated = terminate(conn, names)
            with conn.transaction():
                if live in present:
                    rename(conn, live, keep_as)
                    set_marker(
                        conn,
                        keep_as,
                        {
                            "kept": {
                                "incident": incident,
                                "role": params["kept_role"],
                                "was": live,
                                "at": now,
                                "action": params["action"],
                            },
                        },
                    )
                rename(conn, replacement, live)
                marker = {
                    "swap": {
                        "incident": incident,
                        "action": params["action"],
                        "at": now,
                        "kept_as": keep_as if live in present else None,
                    }
                }
                marker["swap"].update(params["details"])
                set_marker(conn, live, marker)
                allow_connections(conn, live, True)
            if live in present:
                allow_connections(conn, keep_as, True)
        except Exception as exc:  # put the old live database back in service before reporting
            rolled_back = False
            try:
                now_present = databases(conn)
                if live not in now_present and keep_as in now_present:
                    rename(conn, keep_as, live)
                for name in (live, replacement):
                    if name in databases(conn):
                        allow_connections(conn, name, True)
                rolled_back = live in databases(conn) or live not in present
            except Exception as again:  # the server itself is gone; the transaction was not committed
                module.fail_json(
                    msg="swap failed (%s) and the server could not be checked: %s" % (exc, again),
                    swapped=False,
                    rolled_back=False,
                    terminated=terminated,
                )
            module.fail_json(
                msg="swap failed, the previous database is live again: %s" % exc,
                swapped=False,
                rolled_back=rolled_back,
                terminated=terminated,
            )
    module.exit_json(
        changed=True,
        swapped=True,
        terminated=terminated,
        kept_as=keep_as if live in present else None,
        seconds=round(time.monotonic() - closed, 3),
    )


if __name__ == "__main__":
    main()
