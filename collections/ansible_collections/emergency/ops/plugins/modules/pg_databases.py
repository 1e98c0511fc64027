#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_databases
short_description: Read the databases of a PostgreSQL server with the recovery markers they carry
description:
  - Lists every non-template database with its owner, size, whether it accepts connections, and the
    marker the recovery procedures leave in a database's comment (what swapped it in, or why it is kept).
  - With O(older_than), also returns the databases kept by a restore or an undo longer ago than that.
  - Read-only; runs in check mode too. A server that cannot be reached fails with outcome C(unreachable).
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  database:
    description: Admin connection; O(database.name) is the live database.
  older_than:
    description:
      - Report the databases kept by a restore or an undo, and side databases left by a failed restore,
        whose marker is older than this, written as a number and a unit (V(7d), V(12h), V(30m)).
    type: str
extends_documentation_fragment:
  - emergency.ops.database
"""

EXAMPLES = r"""
- name: Restore | Preflight | Read the server's databases
  emergency.ops.pg_databases:
    database: {host: db.internal, name: app, user: postgres, password: "{{ pw }}"}
"""

RETURN = r"""
databases:
  description: Database name -> name, owner, size, allow_connections, marker.
  returned: always
  type: dict
live:
  description: The live database's entry, or null if it does not exist.
  returned: always
  type: dict
server_version:
  description: The server's version.
  returned: always
  type: str
live_swap:
  description: What swapped the live database in (incident, action, backup), or an empty dict.
  returned: always
  type: dict
expired:
  description: Kept and leftover side databases older than O(older_than), oldest first.
  returned: when older_than is set
  type: list
  elements: dict
"""

import datetime
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import DATABASE_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, fail
from ansible_collections.emergency.ops.plugins.module_utils.postgres import HAS_PSYCOPG, connect, databases
from ansible_collections.emergency.ops.plugins.module_utils.times import utcnow


def main():
    module = AnsibleModule(
        argument_spec=dict(DATABASE_ARGS, older_than=dict(type="str")),
        supports_check_mode=True,
    )
    if not HAS_PSYCOPG:
        module.fail_json(msg="psycopg is required on the controller")
    params = module.params
    limit = None
    if params["older_than"] is not None:
        match = re.match(r"^(\d+(?:\.\d+)?)([dhm])$", params["older_than"].strip())
        if not match:
            module.fail_json(
                msg="older than %r: write a number and a unit, for example 7d, 12h or 30m"
                % params["older_than"],
                outcome="invalid",
            )
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        limit = utcnow() - datetime.timedelta(**{unit: float(match.group(1))})
    try:
        with connect(params["database"]) as conn:
            found = databases(conn)
            version = conn.execute("SHOW server_version").fetchone()[0]
    except Failure as exc:
        fail(module, exc)
    for entry in found.values():
        entry.pop("comment", None)
    live = found.get(params["database"]["name"])
    result = dict(
        changed=False,
        databases=found,
        live=live,
        live_swap=((live or {}).get("marker") or {}).get("swap") or {},
        server_version=version,
    )
    if limit is not None:
        expired = []
        for entry in found.values():
            marker = entry.get("marker") or {}
            kept = marker.get("kept") or (dict(marker, role="side") if marker.get("role") == "side" else None)
            if not kept or entry["name"] == params["database"]["name"]:
                continue
            at = datetime.datetime.strptime(kept["at"], "%Y-%m-%dT%H:%M:%SZ")
            if at.replace(tzinfo=datetime.timezone.utc) < limit:
                expired.append(
                    dict(
                        name=entry["name"],
                        size=entry["size"],
                        kept_at=kept["at"],
                        incident=kept.get("incident"),
                        role=kept.get("role"),
                    )
                )
        result["expired"] = sorted(expired, key=lambda e: e["kept_at"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
