#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_side_restore
short_description: Restore a verified pg_dump into a new side database and check its rows against the manifest
description:
  - Creates O(side) (owner, encoding and collation of the live database), restores the dump in O(source)
    into it with C(pg_restore --jobs=N), then counts the rows of every table and compares them with the
    manifest's counts. The live database is not touched and keeps serving.
  - pg_restore is run directly because C(community.postgresql.postgresql_db) cannot restore in parallel
    (its issue 594) and chooses pg_restore only for a C(.pgc) file.
  - The side database carries a marker (its comment) with the incident, the backup and whether it was
    verified. A verified side database of the same backup is not restored again; an unverified one (left
    by an interrupted run) is dropped and restored again.
  - In check mode it reads the server and reports the plan.
version_added: 1.0.0
author: Emergency procedures maintainers
options:
  database:
    description: Admin connection; O(database.name) is the live database.
    type: dict
    required: true
    suboptions:
      host: {description: Server host., type: str, required: true}
      port: {description: Server port., type: int, default: 5432}
      name: {description: The live database., type: str, required: true}
      user: {description: Admin login (may create databases)., type: str, required: true}
      password: {description: Password (passed to pg_restore in its environment)., type: str, default: ""}
      sslmode: {description: libpq sslmode., type: str, default: prefer}
  side:
    description: Name of the side database to restore into.
    type: str
    required: true
  owner:
    description: Owner of the side database when the live database does not exist; otherwise the live owner.
    type: str
  source:
    description: Folder holding the verified directory-format dump (its C(dump/) subfolder).
    type: path
    required: true
  backup:
    description: The backup being restored, as C(backup_catalog) returns it (id and row_counts are used).
    type: dict
    required: true
  incident:
    description: Incident recorded in the side database's marker.
    type: str
    required: true
  jobs:
    description: Parallel pg_restore jobs; 0 means the number of CPUs here.
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Restore | Restore into the side database
  emergency.ops.pg_side_restore:
    database: {host: db.internal, name: app, user: postgres, password: "{{ pw }}"}
    side: app_restore_inc_1
    source: /tmp/emergency-restore-INC-1
    backup: "{{ resolved.backup }}"
    incident: INC-1
"""

RETURN = r"""
side:
  description: Name of the side database.
  returned: always
  type: str
row_counts:
  description: Rows per table counted in the side database (equal to the manifest's on success).
  returned: success
  type: dict
mismatches:
  description: Tables whose counts differ from the manifest (on failure).
  returned: on failure
  type: list
  elements: str
seconds:
  description: Seconds spent restoring and verifying.
  returned: success
  type: float
"""

import concurrent.futures
import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.dbrecovery import (
    DATABASE_ARGS,
    HAS_PSYCOPG,
    Failure,
    connect,
    databases,
    fail,
    iso,
    pg_env,
    set_marker,
    user_tables,
    utcnow,
)

PG_RESTORE = os.environ.get("EMERGENCY_PG_RESTORE", "pg_restore")

try:
    from psycopg import sql
except ImportError:  # reported through HAS_PSYCOPG
    sql = None


def count_side(database, side, jobs):
    """Counts every table of the side database, on several connections at once."""
    with connect(database, side) as conn:
        tables = user_tables(conn)

    def count(batch):
        result = {}
        with connect(database, side) as conn:
            for schema, table in batch:
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                result["%s.%s" % (schema, table)] = conn.execute(query).fetchone()[0]
        return result

    batches = [tables[i::jobs] for i in range(jobs) if tables[i::jobs]]
    counts = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(batches))) as pool:
        for part in pool.map(count, batches):
            counts.update(part)
    return counts


def compare(expected, actual):
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append("%s: missing (manifest %d rows)" % (table, expected[table]))
        elif table not in expected:
            problems.append("%s: not in the manifest" % table)
        elif expected[table] != actual[table]:
            problems.append("%s: %d rows, manifest %d" % (table, actual[table], expected[table]))
    return problems


def main():
    module = AnsibleModule(
        argument_spec=dict(
            database=DATABASE_ARGS,
            side=dict(type="str", required=True),
            owner=dict(type="str"),
            source=dict(type="path", required=True),
            backup=dict(type="dict", required=True),
            incident=dict(type="str", required=True),
            jobs=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    if not HAS_PSYCOPG:
        module.fail_json(msg="psycopg is required on the controller")
    params = module.params
    database, side, incident = params["database"], params["side"], params["incident"]
    backup = params["backup"]
    jobs = params["jobs"] or os.cpu_count() or 1
    live = database["name"]
    started = time.monotonic()
    changed = False
    try:
        with connect(database) as conn:
            present = databases(conn)
            if side == live:
                raise Failure("the side database cannot be the live database", "invalid")
            existing = present.get(side)
            marker = (existing or {}).get("marker") or {}
            done = (
                marker.get("role") == "side"
                and marker.get("backup") == backup["id"]
                and marker.get("verified")
            )
            if existing and not marker.get("role") == "side":
                raise Failure(
                    "database %s exists and was not created by a restore; refusing to replace it" % side,
                    "refused",
                )
            if module.check_mode:
                module.exit_json(
                    changed=not done,
                    side=side,
                    plan="restore backup %s into %s with %d jobs" % (backup["id"], side, jobs),
                )
            if not done:
                changed = True
                if existing:  # left unverified by an interrupted run: start again
                    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(side)))
                template = conn.execute(
                    "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                    "WHERE datname = %s",
                    (live,),
                ).fetchone() or ("UTF8", None, None)
                owner = present[live]["owner"] if live in present else (params["owner"] or database["user"])
                create = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {}").format(
                    sql.Identifier(side), sql.Identifier(owner), sql.Literal(template[0])
                )
                if template[1]:
                    create += sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
                        sql.Literal(template[1]), sql.Literal(template[2])
                    )
                conn.execute(create)
                set_marker(
                    conn,
                    side,
                    {
                        "role": "side",
                        "incident": incident,
                        "backup": backup["id"],
                        "verified": False,
                        "at": iso(utcnow()),
                    },
                )
                argv = [
                    PG_RESTORE,
                    "--format=directory",
                    "--jobs=%d" % jobs,
                    "--exit-on-error",
                    "--no-password",
                    "--dbname=%s" % side,
                    os.path.join(params["source"], "dump"),
                ]
                proc = subprocess.run(argv, env=pg_env(database), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise Failure(
                        "pg_restore into %s failed (exit %d): %s"
                        % (side, proc.returncode, proc.stderr.strip()[-1500:])
                    )
            counts = count_side(database, side, jobs)
            problems = compare(backup.get("row_counts") or {}, counts)
            if problems:
                module.fail_json(
                    msg="the restored rows differ from the backup's manifest: %s" % "; ".join(problems[:10]),
                    side=side,
                    mismatches=problems,
                    row_counts=counts,
                    changed=changed,
                )
            if not done:
                set_marker(
                    conn,
                    side,
                    {
                        "role": "side",
                        "incident": incident,
                        "backup": backup["id"],
                        "verified": True,
                        "at": iso(utcnow()),
                    },
                )
    except Failure as exc:
        fail(module, exc, side=side, changed=changed)
    except Exception as exc:  # the server went away mid-restore
        module.fail_json(msg="restore into %s failed: %s" % (side, exc), side=side, changed=changed)
    module.exit_json(
        changed=changed, side=side, row_counts=counts, seconds=round(time.monotonic() - started, 2)
    )


if __name__ == "__main__":
    main()
