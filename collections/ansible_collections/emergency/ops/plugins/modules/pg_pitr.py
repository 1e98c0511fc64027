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
author: Emergency procedures maintainers
options:
  database:
    description: Admin connection to the live cluster; O(database.name) is the live database.
    type: dict
    required: true
    suboptions:
      host: {description: Server host., type: str, required: true}
      port: {description: Server port., type: int, default: 5432}
      name: {description: The live database., type: str, required: true}
      user: {description: Admin login (may create and rename databases)., type: str, required: true}
      password: {description: Password (passed to pg_restore in its environment)., type: str, default: ""}
      sslmode: {description: libpq sslmode., type: str, default: prefer}
  pgbackrest:
    description: The pgBackRest repository of the live cluster and the programs the recovery runs.
    type: dict
    required: true
    suboptions:
      config: {description: pgBackRest configuration file (passed with --config)., type: path, required: true}
      stanza: {description: Stanza of the live cluster., type: str, required: true}
      pg_bin:
        description: Folder of pg_ctl for the temporary cluster.
        type: path
        default: /usr/lib/postgresql/15/bin
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
  keep_as:
    description: New name of the current live database (kept, never dropped).
    type: str
    required: true
  owner:
    description: Owner of the side database when the live database does not exist; otherwise the live owner.
    type: str
  workdir:
    description: Where the temporary cluster's folder (0700, one per incident, removed at the end) is made.
    type: path
    required: true
  jobs:
    description: Parallel pg_dump/pg_restore jobs and counting connections; 0 means the number of CPUs here.
    type: int
    default: 0
  smoke_queries:
    description:
      - Queries run on the side database before the swap; each must return one row whose first column is true.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Name reported in the result., type: str, required: true}
      sql: {description: The query., type: str, required: true}
  kubeconfig:
    description: Path to the kubeconfig.
    type: path
  context:
    description: Kubeconfig context to use.
    type: str
  namespace:
    description: Namespace of the writers.
    type: str
    required: true
  writers:
    description: The workloads that write to the database, quiesced during the swap.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Workload name., type: str, required: true}
      kind: {description: Workload kind., type: str, choices: [Deployment, StatefulSet], default: Deployment}
  incident:
    description: Incident recorded in the markers of the databases and on the writers.
    type: str
    required: true
  timeout:
    description: Seconds for each wait (archiving, recovery, the writers to stop and to be ready again).
    type: int
    default: 300
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
    What was recovered; id (as recorded in the markers), target, set (the pgBackRest backup label),
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
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.dbrecovery import (
    DATABASE_ARGS,
    HAS_PSYCOPG,
    Failure,
    Mismatch,
    SwapFailed,
    allow_connections,
    connect,
    count_side,
    databases,
    iso,
    live_swap,
    parse_when,
    restore_side,
    side_state,
    smoke,
    swap_databases,
    utcnow,
)
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Kube,
    KubeError,
)
from ansible_collections.emergency.ops.plugins.module_utils.pitr import (
    PGBACKREST_ARGS,
    TemporaryCluster,
    archive_now,
    choose,
    window,
)
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import NotSettled, scale_all

OUTCOMES = {
    "preflight": "failed in preflight: nothing was touched",
    "recover": "failed before the swap: the live database was not touched",
    "restore": "failed before the swap: the live database was not touched",
    "quiesce": "failed before the swap: the live database was not touched",
    "swap": "failed during the swap: the previous database is live again",
}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            database=DATABASE_ARGS,
            pgbackrest=PGBACKREST_ARGS,
            to_time=dict(type="str", required=True),
            side=dict(type="str", required=True),
            keep_as=dict(type="str", required=True),
            owner=dict(type="str"),
            workdir=dict(type="path", required=True),
            jobs=dict(type="int", default=0),
            smoke_queries=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(name=dict(type="str", required=True), sql=dict(type="str", required=True)),
            ),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
            namespace=dict(type="str", required=True),
            writers=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    kind=dict(type="str", default="Deployment", choices=["Deployment", "StatefulSet"]),
                ),
            ),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    for present, what in ((HAS_PSYCOPG, "psycopg"), (HAS_KUBERNETES, "kubernetes")):
        if not present:
            module.fail_json(
                msg="%s is required on the controller %s" % (what, KUBERNETES_IMPORT_ERROR or "")
            )
    result = dict(
        changed=False,
        backup=None,
        row_counts={},
        smoke_queries=[],
        terminated=[],
        kept_as=None,
        writers=[],
        downtime_seconds=None,
        temporary_cluster_removed=True,
        prior={"database": {}, "writers": {}},
    )
    state = {"stage": "preflight"}

    def fail(message, kind, outcome):
        if state["stage"] == "after-swap":
            outcome = (
                "failed after the swap: the recovered database is live, the previous one is kept as %s"
                % (result["kept_as"])
            )
        module.fail_json(msg=message, outcome=kind, failure=outcome, stage=state["stage"], **result)

    try:
        outcome = recover(module, state, result)
    except Mismatch as exc:
        result["row_counts"] = exc.counts
        fail(str(exc), "failed", OUTCOMES[state["stage"]])
    except SwapFailed as exc:
        result["terminated"] = exc.terminated
        fail(
            str(exc),
            "failed",
            OUTCOMES["swap"] if exc.rolled_back else "failed during the swap: check the server",
        )
    except Failure as exc:
        fail(str(exc), exc.outcome, OUTCOMES.get(state["stage"], "failed"))
    except (NotSettled, KubeError) as exc:
        kind = (
            "unreachable" if getattr(exc, "status", None) == 0 and state["stage"] == "preflight" else "failed"
        )
        fail(str(exc), kind, OUTCOMES.get(state["stage"], "failed"))
    except Exception as exc:  # the server went away mid-recovery, and the like
        fail("%s: %s" % (type(exc).__name__, exc), "failed", OUTCOMES.get(state["stage"], "failed"))
    module.exit_json(outcome=outcome, stage=state["stage"], **result)


def bring_back(kube, p, result):
    """Every writer back to its recorded replicas at once, then waits until all are ready."""
    writers = scale_all(kube, p["writers"], "restored", p["incident"], p["timeout"])
    by_name = {w["name"]: w for w in writers}
    for writer in result["writers"] or writers:
        writer["replicas"] = by_name[writer["name"]]["replicas"]
    result["writers"] = result["writers"] or writers


def recover(module, state, result):
    p = module.params
    database, incident, side, keep_as = p["database"], p["incident"], p["side"], p["keep_as"]
    live, settings = database["name"], p["pgbackrest"]
    jobs = p["jobs"] or os.cpu_count() or 1

    # Preflight: the time, the live server, whether this incident already swapped, the window.
    target = parse_when(p["to_time"])
    conn = connect(database)
    with conn:
        present = databases(conn)
        entry = dict(present.get(live) or {})
        entry.pop("marker", None)
        result["prior"]["database"] = entry
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        swap = live_swap(present, live)
        if swap.get("incident") == incident and swap.get("action") == "restore":
            result["backup"] = {k: v for k, v in swap.items() if k not in ("action", "incident")}
            result["backup"]["id"] = swap.get("backup")
            result["kept_as"] = swap.get("kept_as")
            state["stage"] = "already"
            if module.check_mode:
                return "already restored for this incident"
            if not present[live]["allow_connections"]:
                allow_connections(conn, live, True)  # a killed run left it closed
                result["changed"] = True
            state["stage"] = "after-swap"
            result["writers"] = scale_all(kube, p["writers"], "restored", incident, p["timeout"])
            result["changed"] = result["changed"] or any(w["changed"] for w in result["writers"])
            state["stage"] = "already"
            return "already restored for this incident"
        now = utcnow()
        backups = window(settings)
        backup = choose(backups, target, now)
        recovery = {
            "id": "pitr %s from %s" % (iso(target), backup["label"]),
            "target": iso(target),
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
            result["writers"] = scale_all(kube, p["writers"], "down", incident, p["timeout"], check_mode=True)
            result["prior"]["writers"] = {w["name"]: w["previous_replicas"] for w in result["writers"]}
            result["changed"] = True
            state["stage"] = "check"
            window_text = "%s to %s" % (recovery["window"]["start"], recovery["window"]["end"])
            return (
                "would recover %s to %s from pgBackRest backup %s (recoverable window %s) beside the live "
                "cluster, then swap it in and keep the live database as %s (check mode: nothing changed)"
                % (live, iso(target), backup["label"], window_text, keep_as)
            )

        # Recover beside the live cluster, copy the database into a side database, verify.
        state["stage"] = "recover"
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
            state["stage"] = "restore"
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
            )
        finally:
            result["temporary_cluster_removed"] = cluster.remove()
        result["smoke_queries"] = smoke(database, side, p["smoke_queries"])

        # Quiesce, swap, bring back: the writers' downtime.
        state["stage"] = "quiesce"
        down_at = time.monotonic()
        try:
            result["writers"] = scale_all(kube, p["writers"], "down", incident, p["timeout"])
            result["prior"]["writers"] = {w["name"]: w["previous_replicas"] for w in result["writers"]}
            state["stage"] = "swap"
            present = databases(conn)
            details = {"backup": recovery["id"], "to_time": recovery["target"], "set": backup["label"]}
            result["terminated"], _closed = swap_databases(
                conn, present, live, side, keep_as, "restore", "pre", incident, details
            )
            result["kept_as"] = keep_as if live in present else None
            state["stage"] = "after-swap"
        except BaseException:
            # Writers this run quiesced come back whatever happened; the failure that got us here is
            # the one reported, with where each writer stands.
            try:
                bring_back(kube, p, result)
            except (KubeError, NotSettled) as exc:
                result["writers_error"] = str(exc)
            raise
        bring_back(kube, p, result)
        result["downtime_seconds"] = round(time.monotonic() - down_at, 2)
    state["stage"] = "done"
    return "recovered to %s: swapped in, previous database kept" % iso(target)


if __name__ == "__main__":
    main()
