# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # SIDE_RESTORE_ARGS of module_utils/side_restore.py (db_restore, pg_pitr), but for kubeconfig and
    # context (emergency.ops.kube.cluster) and for side, workdir, jobs and timeout, which each module
    # describes itself.
    DOCUMENTATION = r"""
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
  client_bin:
    description:
      - Folder of the pg_restore to run, for the live server's version; by default the one on PATH.
    type: path
  keep_as:
    description: New name of the current live database (kept, never dropped).
    type: str
    required: true
  owner:
    description: Owner of the side database when the live database does not exist; otherwise the live owner.
    type: str
  smoke_queries:
    description:
      - Queries run on the side database before the swap; each must return one row whose first column is true.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: Name reported in the result., type: str, required: true}
      sql: {description: The query., type: str, required: true}
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
"""
