# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # SIDE_RESTORE_ARGS of module_utils/args_common.py (emergency.ops.side_restore): what db_restore and
    # pg_pitr share beside the database (emergency.ops.database) and the cluster (emergency.ops.kube.cluster).
    # Their side, workdir, jobs and timeout each module takes and describes itself.
    DOCUMENTATION = r"""
options:
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
