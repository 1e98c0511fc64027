#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_pitr
short_description: Point-in-time recovery with pgBackRest beside the live cluster, then swap the database in
description:
  - The whole of C(restore --to-time) in one invocation, each step only if the previous one succeeded.
    The live cluster keeps serving throughout and is never stopped or replaced; only its database is
    swapped at the end.
  - Preflight reads the live server and the pgBackRest repository. A time that does not parse, lies in
    the future or before the end of the oldest backup is invalid, and the failure lists the recoverable
    window.
  - Makes the archive hold everything up to now (a commit, a WAL switch, waiting for the archiver), then
    runs C(pgbackrest restore --type=time --target-action=promote) of the newest backup that ended
    before the target into a new data directory, starts a temporary PostgreSQL from it on a free
    127.0.0.1 port and a private socket (archiving off), and waits until recovery stopped at the target
    and the cluster is promoted.
  - Counts the rows of every table of the recovered database, dumps it with C(pg_dump --jobs) and
    restores it with C(pg_restore --jobs) into the side database O(side) of the live cluster, whose row
    counts must equal the recovered ones; the smoke queries run on the side database. The temporary
    cluster is then stopped and its folder removed (also on any failure).
  - Only then quiesces the writers, swaps the databases by rename (the live one kept as O(keep_as)) and
    brings the writers back, as M(emergency.ops.db_restore) does; C(restore-undo) swaps the previous one
    back.
  - Re-running for the same incident after the swap changes nothing but bringing back writers a killed
    run left at 0. In check mode it reads the window, chooses the backup and validates the writers'
    scale-down with a server-side dry run; nothing is recovered, created or scaled.
version_added: 1.1.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  database:
    description: Admin connection to the live cluster; O(database.name) is the live database.
  pgbackrest:
    description: The pgBackRest repository of the live cluster and the programs the recovery runs.
    type: dict
    required: true
    suboptions:
      config: {description: pgBackRest configuration file (passed with --config)., type: path, required: true}
      stanza: {description: Stanza of the live cluster., type: str, required: true}
      pg_bin:
        description:
          - Folder of pg_ctl for the temporary cluster; of the live cluster's major version (pgBackRest
            restores its files).
          - When not given, the newest C(/usr/lib/postgresql/<major>/bin), else C(pg_config --bindir),
            else the folder of C(pg_ctl) on PATH.
        type: path
      os_user:
        description: User pgBackRest and the temporary cluster run as when the module runs as root.
        type: str
        default: postgres
      executable: {description: The pgbackrest program., type: path, default: pgbackrest}
  to_time:
    description: Recover to this time (UTC unless it has an offset), e.g. V(2026-11-20 10:30:00).
    type: str
    required: true
  side:
    description: Name of the side database the recovered database is restored into.
    type: str
    required: true
  workdir:
    description: Where the temporary cluster's folder (0700, one per incident, removed at the end) is made.
    type: path
    required: true
  jobs:
    description: Parallel pg_dump/pg_restore jobs and counting connections; 0 means the number of CPUs here.
    type: int
    default: 0
  timeout:
    description: Seconds for each wait (archiving, recovery, the writers to stop and to be ready again).
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.side_restore
  - emergency.ops.database
  - emergency.ops.kube.cluster
"""

EXAMPLES = r"""
- name: Restore | Recover to a point in time beside the live cluster, verify, swap it in
  emergency.ops.pg_pitr:
    database: {host: db.internal, name: app, user: postgres, password: "{{ pw }}"}
    pgbackrest: {config: /etc/pgbackrest/pgbackrest.conf, stanza: app}
    to_time: "2026-11-20 10:30"
    side: app_restore_inc_1
    keep_as: app_pre_inc_1
    workdir: /var/tmp
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
    How far the run got; V(done), V(already), V(check), V(preflight), V(recover) (temporary cluster),
    V(restore) (side database), V(quiesce), V(swap) or V(after-swap).
  returned: always
  type: str
backup:
  description: >-
    What was recovered; id (as recorded in the markers), target (the time as read, in UTC with its
    microseconds, e.g. 2026-12-02T06:05:16.763209Z), set (the pgBackRest backup label),
    window (start and end of the recoverable window), stopped (where recovery stopped, from the server's log).
  returned: when resolved
  type: dict
row_counts:
  description: Rows per table in the side database, equal to the recovered database's.
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
  description: Each writer's previous and current replicas.
  returned: always
  type: list
  elements: dict
downtime_seconds:
  description: Seconds from the start of the writers' quiesce until every writer was ready again.
  returned: when swapped
  type: float
temporary_cluster_removed:
  description: Whether the temporary cluster was stopped and its folder removed.
  returned: always
  type: bool
prior:
  description: What was recorded before the change (the live database's entry, the writers' replicas).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    DATABASE_ARGS,
    KUBE_CLUSTER_ARGS,
    SIDE_RESTORE_ARGS,
)
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, parse_when
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Kube,
)
from ansible_collections.emergency.ops.plugins.module_utils.pitr import (
    PGBACKREST_ARGS,
    TemporaryCluster,
    archive_now,
    choose,
    window,
)
from ansible_collections.emergency.ops.plugins.module_utils.postgres import HAS_PSYCOPG, connect, databases
from ansible_collections.emergency.ops.plugins.module_utils.restore import (
    count_side,
    restore_side,
    side_state,
    smoke,
)
from ansible_collections.emergency.ops.plugins.module_utils.side_restore import Run
from ansible_collections.emergency.ops.plugins.module_utils.swap import live_swap
from ansible_collections.emergency.ops.plugins.module_utils.times import iso, iso_precise, utcnow


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            **DATABASE_ARGS,
            **SIDE_RESTORE_ARGS,
            side=dict(type="str", required=True),
            workdir=dict(type="path", required=True),
            jobs=dict(type="int", default=0),
            timeout=dict(type="int", default=300),
            pgbackrest=PGBACKREST_ARGS,
            to_time=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    for present, what in ((HAS_PSYCOPG, "psycopg"), (HAS_KUBERNETES, "kubernetes")):
        if not present:
            module.fail_json(
                msg="%s is required on the controller %s" % (what, KUBERNETES_IMPORT_ERROR or "")
            )
    Run(module, "recovered", temporary_cluster_removed=True).run(recover)


def recover(run):
    module, result = run.module, run.result
    p = module.params
    database, incident, side, keep_as = p["database"], p["incident"], p["side"], p["keep_as"]
    live, settings = database["name"], p["pgbackrest"]
    jobs = p["jobs"] or os.cpu_count() or 1

    # Preflight: the time, the live server, whether this incident already swapped, the window.
    target = parse_when(p["to_time"])
    conn = connect(database)
    with conn:
        present = run.read_databases(conn)
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        swap = live_swap(present, live)
        if swap.get("incident") == incident and swap.get("action") == "restore":
            run.rerun(conn, present, kube, swap)
            return "already restored for this incident"
        now = utcnow()
        backups = window(settings)
        backup = choose(backups, target, now)
        recovery = {
            "id": "pitr %s from %s" % (iso(target), backup["label"]),
            "target": iso_precise(target),  # the time as read, in UTC, to the microsecond
            "set": backup["label"],
            "set_ended": iso(backup["stopped"]),
            "created_at": iso(backup["stopped"]),  # when the backup the recovery starts from was made
            "window": {"start": iso(backups[0]["stopped"]), "end": iso(now)},
            "backups": [b["label"] for b in backups],
        }
        result["backup"] = recovery
        side_state(present, side, recovery["id"], live)
        if keep_as in present:
            raise Failure("database %s already exists; refusing to overwrite it" % keep_as, "refused")
        if module.check_mode:
            run.quiesce(kube, check_mode=True)
            result["changed"] = True
            run.stage = "check"
            window_text = "%s to %s" % (recovery["window"]["start"], recovery["window"]["end"])
            return (
                "would recover %s to %s from pgBackRest backup %s (recoverable window %s) beside the live "
                "cluster, then swap it in and keep the live database as %s (check mode: nothing changed)"
                % (live, iso(target), backup["label"], window_text, keep_as)
            )

        # Recover beside the live cluster, copy the database into a side database, verify.
        run.stage = "recover"
        result["changed"] = True
        cluster = TemporaryCluster(settings, p["workdir"], incident)
        result["temporary_cluster_removed"] = False
        try:
            archive_now(conn, p["timeout"])
            cluster.prepare()
            cluster.restore(backup, target, p["timeout"])
            cluster.start(p["timeout"])
            recovery["stopped"] = cluster.wait_promoted(connect, database["user"], p["timeout"])
            with connect(cluster.connection(database["user"], "postgres")) as recovered:
                if live not in databases(recovered):
                    raise Failure("database %s did not exist at %s" % (live, iso(target)), "invalid")
            recovered_counts = count_side(cluster.connection(database["user"], live), live, jobs)
            cluster.dump(database["user"], live, jobs, os.path.join(cluster.home, "dump"), p["timeout"])
            run.stage = "restore"
            _changed, result["row_counts"] = restore_side(
                conn,
                database,
                present,
                side,
                {"id": recovery["id"], "row_counts": recovered_counts},
                cluster.home,
                incident,
                jobs,
                p["owner"],
                result["timings"],
                p["client_bin"],
            )
        finally:
            result["temporary_cluster_removed"] = cluster.remove()
        result["smoke_queries"] = smoke(database, side, p["smoke_queries"])

        details = {"backup": recovery["id"], "to_time": recovery["target"], "set": backup["label"]}
        run.swap_in(conn, kube, details)
    run.stage = "done"
    return "recovered to %s: swapped in, previous database kept" % iso(target)


if __name__ == "__main__":
    main()
