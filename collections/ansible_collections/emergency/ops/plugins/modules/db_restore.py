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
    result says which happened (O(stage)).
  - Re-running for the same incident after the swap changes nothing but bringing back writers a killed
    run left at 0. A side database left by an interrupted run is reused when verified, restored again
    otherwise.
  - In check mode it resolves the backup, validates the writers' scale-down with a server-side dry run,
    and reports the plan; nothing is downloaded, created or scaled.
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
      user: {description: Admin login (may create and rename databases)., type: str, required: true}
      password: {description: Password (passed to pg_restore in its environment)., type: str, default: ""}
      sslmode: {description: libpq sslmode., type: str, default: prefer}
  store:
    description: The backup store.
    type: dict
    required: true
    suboptions:
      bucket: {description: Bucket., type: str, required: true}
      prefix: {description: Key prefix of the backups., type: str, default: postgres}
      endpoint_url: {description: S3 endpoint (empty for AWS)., type: str}
      region: {description: Region., type: str, default: us-east-1}
      access_key: {description: Access key id (empty for the default credential chain)., type: str}
      secret_key: {description: Secret access key., type: str}
  backup:
    description: V(latest) or a backup id. Exactly one of O(backup) and O(before).
    type: str
  before:
    description: Restore the newest complete backup made before this time (UTC unless it has an offset).
    type: str
  side:
    description: Name of the side database restored into.
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
    description: Folder the backup is downloaded into (created 0700, removed at the end).
    type: path
    required: true
  jobs:
    description: Parallel pg_restore jobs and counting connections; 0 means the number of CPUs here.
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
    description: Seconds the writers may take to stop, and to be ready again.
    type: int
    default: 300
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
  description: The backup restored (id, created_at, database, objects, bytes, row_counts).
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
prior:
  description: What was recorded before the change (the live database's entry, the writers' replicas).
  returned: always
  type: dict
"""

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.dbrecovery import (
    DATABASE_ARGS,
    HAS_BOTO3,
    HAS_PSYCOPG,
    STORE_ARGS,
    Failure,
    Mismatch,
    SwapFailed,
    allow_connections,
    connect,
    databases,
    fetch,
    live_swap,
    resolve,
    restore_side,
    side_state,
    smoke,
    store_from,
    swap_databases,
)
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Kube,
    KubeError,
)
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import NotSettled, scale_all

OUTCOMES = {
    "preflight": "failed in preflight: nothing was touched",
    "verify": "failed before the swap: the live database was not touched",
    "restore": "failed before the swap: the live database was not touched",
    "quiesce": "failed before the swap: the live database was not touched",
    "swap": "failed during the swap: the previous database is live again",
}


class Run:
    """What the run did so far; every exit reports it."""

    def __init__(self, module):
        self.module = module
        self.stage = "preflight"
        self.result = dict(
            changed=False,
            backup=None,
            row_counts={},
            smoke_queries=[],
            terminated=[],
            kept_as=None,
            writers=[],
            downtime_seconds=None,
            prior={"database": {}, "writers": {}},
        )

    def exit(self, outcome, stage):
        self.module.exit_json(outcome=outcome, stage=stage, **self.result)

    def fail(self, message, outcome_kind, outcome):
        if self.stage == "after-swap":
            outcome = (
                "failed after the swap: the restored database is live, the previous one is kept as %s"
                % (self.result["kept_as"])
            )
        self.module.fail_json(
            msg=message, outcome=outcome_kind, failure=outcome, stage=self.stage, **self.result
        )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            database=DATABASE_ARGS,
            store=STORE_ARGS,
            backup=dict(type="str"),
            before=dict(type="str"),
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
        mutually_exclusive=[("backup", "before")],
        required_one_of=[("backup", "before")],
        supports_check_mode=True,
    )
    for present, what in ((HAS_PSYCOPG, "psycopg"), (HAS_BOTO3, "boto3"), (HAS_KUBERNETES, "kubernetes")):
        if not present:
            module.fail_json(
                msg="%s is required on the controller %s" % (what, KUBERNETES_IMPORT_ERROR or "")
            )
    run = Run(module)
    try:
        restore(module, run)
    except Mismatch as exc:
        run.result["row_counts"] = exc.counts
        run.fail(str(exc), "failed", OUTCOMES[run.stage])
    except SwapFailed as exc:
        run.result["terminated"] = exc.terminated
        outcome = OUTCOMES["swap"] if exc.rolled_back else "failed during the swap: check the server"
        run.fail(str(exc), "failed", outcome)
    except Failure as exc:
        run.fail(str(exc), exc.outcome, OUTCOMES.get(run.stage, "failed"))
    except NotSettled as exc:
        run.fail(str(exc), "failed", OUTCOMES.get(run.stage, "failed"))
    except KubeError as exc:
        kind = "unreachable" if exc.status == 0 and run.stage == "preflight" else "failed"
        run.fail(str(exc), kind, OUTCOMES.get(run.stage, "failed"))
    except Exception as exc:  # the server went away mid-restore, and the like
        run.fail("%s: %s" % (type(exc).__name__, exc), "failed", OUTCOMES.get(run.stage, "failed"))


def bring_back(kube, p, result):
    """Every writer back to its recorded replicas at once, then waits until all are ready."""
    writers = scale_all(kube, p["writers"], "restored", p["incident"], p["timeout"])
    if result["writers"]:
        by_name = {w["name"]: w for w in writers}
        for writer in result["writers"]:
            writer["replicas"] = by_name[writer["name"]]["replicas"]
    else:
        result["writers"] = writers


def restore(module, run):
    p = module.params
    database, incident, side, keep_as = p["database"], p["incident"], p["side"], p["keep_as"]
    live = database["name"]
    jobs = p["jobs"] or os.cpu_count() or 1
    result = run.result

    # Preflight: the server, whether this incident already swapped, the backup.
    conn = connect(database)
    with conn:
        present = databases(conn)
        entry = dict(present.get(live) or {})
        entry.pop("marker", None)
        result["prior"]["database"] = entry
        swap = live_swap(present, live)
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        if swap.get("incident") == incident and swap.get("action") == "restore":
            result["backup"] = {k: v for k, v in swap.items() if k not in ("action", "incident")}
            result["backup"]["id"] = swap.get("backup")
            result["kept_as"] = swap.get("kept_as")
            if module.check_mode:
                run.exit("already restored for this incident", "already")
            if not present[live]["allow_connections"]:
                allow_connections(conn, live, True)  # a killed run left it closed
                result["changed"] = True
            run.stage = "after-swap"
            result["writers"] = scale_all(kube, p["writers"], "restored", incident, p["timeout"])
            result["changed"] = result["changed"] or any(w["changed"] for w in result["writers"])
            run.exit("already restored for this incident", "already")
        store = store_from(p["store"])
        store.check()
        backup, _newest = resolve(store, p["backup"], p["before"])
        result["backup"] = {k: v for k, v in backup.items() if k != "row_counts"}
        side_state(present, side, backup["id"], live)
        if keep_as in present:
            raise Failure("database %s already exists; refusing to overwrite it" % keep_as, "refused")
        if module.check_mode:
            result["writers"] = scale_all(kube, p["writers"], "down", incident, p["timeout"], check_mode=True)
            result["prior"]["writers"] = {w["name"]: w["previous_replicas"] for w in result["writers"]}
            result["changed"] = True
            run.exit("would restore (check mode): nothing changed", "check")

        # Verify every checksum before any database is touched.
        run.stage = "verify"
        try:
            fetch(store, backup["id"], p["workdir"], False)
            run.stage = "restore"
            result["changed"] = True
            _changed, result["row_counts"] = restore_side(
                conn, database, present, side, backup, p["workdir"], incident, jobs, p["owner"]
            )
        finally:
            shutil.rmtree(p["workdir"], ignore_errors=True)
        result["smoke_queries"] = smoke(database, side, p["smoke_queries"])

        # Quiesce, swap, bring back: the writers' downtime.
        run.stage = "quiesce"
        down_at = time.monotonic()
        try:
            result["writers"] = scale_all(kube, p["writers"], "down", incident, p["timeout"])
            result["prior"]["writers"] = {w["name"]: w["previous_replicas"] for w in result["writers"]}
            run.stage = "swap"
            present = databases(conn)
            result["terminated"], _closed = swap_databases(
                conn, present, live, side, keep_as, "restore", "pre", incident, {"backup": backup["id"]}
            )
            result["kept_as"] = keep_as if live in present else None
            run.stage = "after-swap"
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
    run.exit("restored: backup swapped in, previous database kept", "done")


if __name__ == "__main__":
    main()
