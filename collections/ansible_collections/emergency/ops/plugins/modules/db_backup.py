#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: db_backup
short_description: Back up a PostgreSQL database to S3 with a parallel pg_dump and a manifest
description:
  - Runs C(pg_dump --format=directory --jobs=N), which both dumps and (with C(pg_restore --jobs)) restores
    in parallel, and uploads each file of the dump to the bucket as soon as pg_dump has closed it, then
    deletes it locally. The local disk holds only the files being written or uploaded, never the whole
    dump, let alone twice the database.
  - The dump and the row counts come from one exported snapshot, so the manifest's counts are exactly
    the rows in the dump, even while the application keeps writing.
  - The manifest (C(<prefix>/<id>/manifest.json)) is written last; it holds the id, database, server
    version, creation time, incident, each object's sha256 and size, and the row count of every table.
  - Backup ids are UTC times with microseconds, so they sort in time order; backups are never ordered
    by S3's LastModified.
  - A complete backup already made for the same incident is not made again (C(changed=false)).
  - In check mode it connects, reads the database's size and tables, and reports what it would do.
  - pg_dump is run directly because no module dumps in parallel (C(community.postgresql.postgresql_db)
    runs a single-process pg_dump).
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  database:
    description: Connection to the database server (an admin or owner login) and the database to dump.
  incident:
    description: Incident (or schedule run) id recorded in the manifest.
    type: str
    required: true
  jobs:
    description: Parallel pg_dump jobs; 0 means the number of CPUs here.
    type: int
    default: 0
  compression:
    description: gzip level of the dump's files (0-9).
    type: int
    default: 1
  workdir:
    description: Folder for the files being dumped (created 0700 under it, removed afterwards).
    type: path
    default: /tmp
  client_bin:
    description: Folder of the pg_dump to run, for the server's version; by default the one on PATH.
    type: path
extends_documentation_fragment:
  - emergency.ops.database
  - emergency.ops.backup_store
"""

EXAMPLES = r"""
- name: Backup | Dump the database to the bucket
  emergency.ops.db_backup:
    database: {host: db.internal, port: 5432, name: app, user: postgres, password: "{{ pw }}"}
    store: {bucket: matchbook-backups, prefix: postgres/app}
    incident: BACKUP-20261123
"""

RETURN = r"""
backup:
  description: The backup made (or found for this incident).
  returned: success
  type: dict
  contains:
    id: {description: Time-ordered backup id., type: str}
    created_at: {description: UTC time of the snapshot., type: str}
    objects: {description: Number of objects., type: int}
    bytes: {description: Total size of the objects., type: int}
    row_counts: {description: Rows per table., type: dict}
    seconds: {description: Duration of the dump and upload., type: float}
    peak_local_bytes: {description: Most bytes of dump held on local disk at once., type: int}
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    BACKUP_STORE_ARGS,
    DATABASE_ARGS,
)
from ansible_collections.emergency.ops.plugins.module_utils.dump import dump
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, fail
from ansible_collections.emergency.ops.plugins.module_utils.postgres import HAS_PSYCOPG, connect, row_counts
from ansible_collections.emergency.ops.plugins.module_utils.store import HAS_BOTO3, store_from
from ansible_collections.emergency.ops.plugins.module_utils.times import utcnow


def main():
    module = AnsibleModule(
        argument_spec=dict(
            DATABASE_ARGS,
            **BACKUP_STORE_ARGS,
            incident=dict(type="str", required=True),
            jobs=dict(type="int", default=0),
            compression=dict(type="int", default=1),
            workdir=dict(type="path", default="/tmp"),
            client_bin=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    if not (HAS_BOTO3 and HAS_PSYCOPG):
        module.fail_json(msg="boto3 and psycopg are required on the controller")
    params = module.params
    database, incident = params["database"], params["incident"]
    jobs = params["jobs"] or os.cpu_count() or 1
    try:
        store = store_from(params["store"])
        store.check()
        for backup_id, manifest in store.complete_backups():
            if manifest.get("incident") == incident and manifest.get("database") == database["name"]:
                module.exit_json(changed=False, backup=summary(backup_id, manifest, 0.0, 0))
        conn = connect(database, database["name"], autocommit=False)
    except Failure as exc:
        fail(module, exc)

    started = time.monotonic()
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        created = utcnow()
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        if module.check_mode:
            tables = len(row_counts(conn)) if size < 64 * 1024 * 1024 else None
            conn.close()
            module.exit_json(
                changed=True,
                backup={
                    "id": None,
                    "database": database["name"],
                    "database_bytes": size,
                    "tables": tables,
                    "jobs": jobs,
                },
            )
        backup_id, manifest, peak = dump(
            conn,
            snapshot,
            created,
            database,
            store,
            incident,
            jobs,
            params["compression"],
            params["workdir"],
            params["client_bin"],
        )
    except Failure as exc:
        fail(module, exc)
    except Exception as exc:  # the database went away mid-dump, disk full...
        module.fail_json(msg="backup failed: %s" % exc)
    finally:
        conn.close()
    module.exit_json(changed=True, backup=summary(backup_id, manifest, time.monotonic() - started, peak))


def summary(backup_id, manifest, seconds, peak):
    return {
        "id": backup_id,
        "database": manifest["database"],
        "created_at": manifest["created_at"],
        "incident": manifest.get("incident"),
        "objects": len(manifest["objects"]),
        "bytes": sum(o["size"] for o in manifest["objects"].values()),
        "row_counts": manifest["row_counts"],
        "seconds": round(seconds, 2),
        "peak_local_bytes": peak,
    }


if __name__ == "__main__":
    main()
