#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: db_restore
short_description: Restore a backup beside the live database, verify it, swap it in with the writers quiesced
description:
  - The whole of C(restore --backup|--before) in one invocation, in this order, each step only if the
    previous one succeeded. Preflight reads the server and resolves the backup in the store (an unknown
    id or no backup before the time is invalid, an unreachable server or store is unreachable).
  - Downloads every object of the backup, several at once, hashing each while it streams in, and
    refuses the backup when any checksum or size differs from the manifest, before any database is
    touched.
  - Creates the side database O(side) and restores into it with C(pg_restore --jobs) while the live
    database keeps serving; counts the rows of every table on several connections and requires them to
    equal the manifest's; runs the smoke queries on the side database.
  - Only then quiesces the writers (scaled to 0 all at once with their replicas recorded on each
    workload, waiting until their pods are gone), closes both databases to connections, terminates their
    sessions and swaps them by rename in one transaction, keeping the live one as O(keep_as); then
    scales every writer back to its recorded replicas at once and waits until all are ready. The writers
    are brought back together, not one after another, since they were stopped only for the rename, everything
    they depend on kept running, and waiting for each in turn would add one readiness wait per writer to
    the downtime.
  - A failure before the swap leaves the live database untouched; a failure during the swap puts the old
    one back; in every case writers this run quiesced are brought back before the module fails. The
    result says which happened (RV(stage)).
  - Re-running for the same incident after the swap changes nothing but bringing back writers a killed
    run left at 0. A side database left by an interrupted run is reused when verified, restored again
    otherwise.
  - In check mode it resolves the backup, validates the writers' scale-down with a server-side dry run,
    and reports the plan; nothing is downloaded, created or scaled.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  database:
    description: Admin connection to the live cluster; O(database.name) is the live database.
  backup:
    description: V(latest) or a backup id. Exactly one of O(backup) and O(before).
    type: str
  before:
    description:
      - Restore the newest complete backup made before this time (UTC unless it has an offset), in any
        form psql, C(date -Is) or ISO 8601 print, e.g. C(2026-12-02 06:05:16.763209+00).
      - The time as read, in UTC, is returned as C(before) in RV(backup).
    type: str
  side:
    description: Name of the side database restored into.
    type: str
    required: true
  workdir:
    description: Folder the backup is downloaded into (created 0700, removed at the end).
    type: path
    required: true
  jobs:
    description: Parallel pg_restore jobs and counting connections; 0 means the number of CPUs here.
    type: int
    default: 0
  timeout:
    description: Seconds the writers may take to stop, and to be ready again.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.side_restore
  - emergency.ops.database
  - emergency.ops.backup_store
  - emergency.ops.kube.cluster
"""

EXAMPLES = r"""
- name: Restore | Restore beside the live database, verify, swap it in
  emergency.ops.db_restore:
    database: {host: db.internal, name: app, user: postgres, password: "{{ pw }}"}
    store: {bucket: backups, prefix: postgres/app}
    backup: latest
    side: app_restore_inc_1
    keep_as: app_pre_inc_1
    workdir: /var/tmp/emergency-restore-INC-1
    namespace: matchbook
    writers:
      - {name: api, kind: Deployment}
    incident: INC-1
"""

RETURN = r"""
outcome:
  description: What happened, for the operator.
  returned: always
  type: str
stage:
  description: >-
    How far the run got; V(done), V(already), V(check), V(preflight), V(verify) (checksums), V(restore)
    (side database), V(quiesce), V(swap) or V(after-swap).
  returned: always
  type: str
backup:
  description: >-
    The backup restored (id, created_at, database, objects, bytes, row_counts) and, with O(before),
    before (the time as read, in UTC with its microseconds).
  returned: when resolved
  type: dict
row_counts:
  description: Rows per table counted in the side database, equal to the manifest's.
  returned: when verified
  type: dict
smoke_queries:
  description: Names of the smoke queries that passed.
  returned: always
  type: list
  elements: str
terminated:
  description: Sessions still connected to either database at the swap, terminated.
  returned: always
  type: list
  elements: dict
kept_as:
  description: Name the previous live database is kept under (when swapped).
  returned: always
  type: str
writers:
  description: Each writer's previous and current replicas (as C(scale_workloads) reports them).
  returned: always
  type: list
  elements: dict
downtime_seconds:
  description: Seconds from the start of the writers' quiesce until every writer was ready again.
  returned: when swapped
  type: float
timings:
  description:
    - Seconds per phase (preflight, download_and_verify, pg_restore, count, smoke_queries), where the
      time went.
  returned: always
  type: dict
prior:
  description: What was recorded before the change (the live database's entry, the writers' replicas).
  returned: always
  type: dict
"""

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    BACKUP_STORE_ARGS,
    DATABASE_ARGS,
    KUBE_CLUSTER_ARGS,
    SIDE_RESTORE_ARGS,
)
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, parse_when
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Kube,
    in_background,
)
from ansible_collections.emergency.ops.plugins.module_utils.postgres import HAS_PSYCOPG, connect
from ansible_collections.emergency.ops.plugins.module_utils.restore import restore_side, side_state, smoke
from ansible_collections.emergency.ops.plugins.module_utils.side_restore import Run
from ansible_collections.emergency.ops.plugins.module_utils.store import HAS_BOTO3, fetch, resolve, store_from
from ansible_collections.emergency.ops.plugins.module_utils.swap import live_swap
from ansible_collections.emergency.ops.plugins.module_utils.times import iso_precise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            **DATABASE_ARGS,
            **SIDE_RESTORE_ARGS,
            **BACKUP_STORE_ARGS,
            side=dict(type="str", required=True),
            workdir=dict(type="path", required=True),
            jobs=dict(type="int", default=0),
            timeout=dict(type="int", default=300),
            backup=dict(type="str"),
            before=dict(type="str"),
        ),
        mutually_exclusive=[("backup", "before")],
        required_one_of=[("backup", "before")],
        supports_check_mode=True,
    )
    for present, what in ((HAS_PSYCOPG, "psycopg"), (HAS_BOTO3, "boto3"), (HAS_KUBERNETES, "kubernetes")):
        if not present:
            module.fail_json(
                msg="%s is required on the controller %s" % (what, KUBERNETES_IMPORT_ERROR or "")
            )
    Run(module, "restored").run(restore)


def restore(run):
    module, result = run.module, run.result
    p = module.params
    database, incident, side, keep_as = p["database"], p["incident"], p["side"], p["keep_as"]
    live = database["name"]
    jobs = p["jobs"] or os.cpu_count() or 1

    # Preflight: the server, whether this incident already swapped, the backup.
    started = time.monotonic()
    conn = connect(database)
    with conn:
        present = run.read_databases(conn)
        swap = live_swap(present, live)
        if swap.get("incident") == incident and swap.get("action") == "restore":
            run.rerun(conn, present, Kube(p["kubeconfig"], p["context"], p["namespace"]), swap)
            return "already restored for this incident"
        store = store_from(p["store"])
        store.check()
        backup, _newest = resolve(store, p["backup"], p["before"])
        result["backup"] = {k: v for k, v in backup.items() if k != "row_counts"}
        if p["before"]:
            result["backup"]["before"] = iso_precise(parse_when(p["before"]))  # the time as read, UTC
        side_state(present, side, backup["id"], live)
        if keep_as in present:
            raise Failure("database %s already exists; refusing to overwrite it" % keep_as, "refused")
        if module.check_mode:
            run.quiesce(Kube(p["kubeconfig"], p["context"], p["namespace"]), check_mode=True)
            result["changed"] = True
            run.stage = "check"
            return "would restore (check mode): nothing changed"

        # Verify every checksum before any database is touched.
        run.stage = "verify"
        timings = result["timings"]
        timings["preflight"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        # The cluster's client is first needed for the quiesce: it is made (the kubernetes package
        # imported, the kubeconfig read) in a thread while the backup downloads and restores.
        kube = in_background(p["kubeconfig"], p["context"], p["namespace"])
        try:
            fetch(store, backup["id"], p["workdir"], False)
            timings["download_and_verify"] = round(time.monotonic() - started, 2)
            run.stage = "restore"
            result["changed"] = True
            _changed, result["row_counts"] = restore_side(
                conn,
                database,
                present,
                side,
                backup,
                p["workdir"],
                incident,
                jobs,
                p["owner"],
                timings,
                p["client_bin"],
            )
        finally:
            shutil.rmtree(p["workdir"], ignore_errors=True)
        started = time.monotonic()
        result["smoke_queries"] = smoke(database, side, p["smoke_queries"])
        timings["smoke_queries"] = round(time.monotonic() - started, 2)

        run.swap_in(conn, kube.result(), {"backup": backup["id"]})
    run.stage = "done"
    return "restored: backup swapped in, previous database kept"


if __name__ == "__main__":
    main()
