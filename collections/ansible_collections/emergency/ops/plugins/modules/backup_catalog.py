#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backup_catalog
short_description: Find, verify and prune the database backups in the S3 backup store
description:
  - V(resolve) finds one complete backup, by V(latest), by id, or as the newest made before a time. Backups
    are ordered by their time-ordered id, never by S3's LastModified. An unknown id fails with outcome
    C(invalid) and lists the newest ids.
  - V(fetch) downloads every object of a backup into O(dest), hashing each on the way, and fails with
    outcome C(refused) if any object's sha256 or size differs from the manifest. It touches no database.
    In check mode it downloads nothing.
  - V(prune) applies the retention (keep the newest O(keep_last) and everything younger than
    O(max_age_days)) and deletes the other backups, and incomplete backups older than a day; it reports
    what it deleted (in check mode, what it would delete).
  - A store that cannot be reached fails with outcome C(unreachable).
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  action:
    description: What to do.
    type: str
    choices: [resolve, fetch, prune]
    required: true
  backup:
    description: For V(resolve), V(latest) or a backup id; for V(fetch), a backup id.
    type: str
  before:
    description: For V(resolve), pick the newest backup made before this time (UTC unless it has an offset).
    type: str
  dest:
    description: For V(fetch), the folder to download into (created 0700).
    type: path
  keep_last:
    description: For V(prune), how many of the newest backups are always kept.
    type: int
    default: 7
  max_age_days:
    description: For V(prune), backups younger than this are kept; 0 keeps none for their age.
    type: int
    default: 30
extends_documentation_fragment:
  - emergency.ops.backup_store
"""

EXAMPLES = r"""
- name: Restore | Preflight | Resolve the backup
  emergency.ops.backup_catalog:
    store: {bucket: matchbook-backups, prefix: postgres/app}
    action: resolve
    backup: latest
"""

RETURN = r"""
backup:
  description: The backup resolved or fetched (id, created_at, database, objects, bytes, row_counts).
  returned: resolve, fetch
  type: dict
newest:
  description: Ids of the newest complete backups.
  returned: resolve
  type: list
  elements: str
deleted:
  description: Ids deleted (or that would be) by V(prune), with the reason.
  returned: prune
  type: list
  elements: dict
kept:
  description: Ids kept by V(prune).
  returned: prune
  type: list
  elements: str
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import BACKUP_STORE_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, fail
from ansible_collections.emergency.ops.plugins.module_utils.store import (
    HAS_BOTO3,
    backup_time,
    fetch,
    resolve,
    store_from,
)
from ansible_collections.emergency.ops.plugins.module_utils.times import utcnow


def prune(store, keep_last, max_age_days, check_mode):
    now = utcnow()
    complete = [i for i, _m in store.complete_backups(newest_first=True)]
    kept, deleted = [], []
    for rank, backup_id in enumerate(complete):
        young = max_age_days > 0 and now - backup_time(backup_id) < datetime.timedelta(days=max_age_days)
        if rank < keep_last or young:
            kept.append(backup_id)
        else:
            deleted.append(
                {
                    "id": backup_id,
                    "reason": "older than %d days and not among the newest %d" % (max_age_days, keep_last),
                }
            )
    for backup_id in set(store.backup_ids()) - set(complete):
        if now - backup_time(backup_id) > datetime.timedelta(days=1):
            deleted.append({"id": backup_id, "reason": "incomplete (no manifest) and older than a day"})
    if not check_mode:
        for entry in deleted:
            store.delete_backup(entry["id"])
    return kept, sorted(deleted, key=lambda e: e["id"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            BACKUP_STORE_ARGS,
            action=dict(type="str", choices=["resolve", "fetch", "prune"], required=True),
            backup=dict(type="str"),
            before=dict(type="str"),
            dest=dict(type="path"),
            keep_last=dict(type="int", default=7),
            max_age_days=dict(type="int", default=30),
        ),
        required_if=[("action", "fetch", ("backup", "dest"))],
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required on the controller")
    params = module.params
    try:
        store = store_from(params["store"])
        store.check()
        if params["action"] == "resolve":
            backup, newest = resolve(store, params["backup"], params["before"])
            module.exit_json(changed=False, backup=backup, newest=newest)
        if params["action"] == "fetch":
            backup = fetch(store, params["backup"], params["dest"], module.check_mode)
            module.exit_json(changed=False, backup=backup, verified=not module.check_mode)
        if params["keep_last"] < 1 or params["max_age_days"] < 0:
            raise Failure("retention must keep at least the newest backup (keep_last >= 1)", "invalid")
        kept, deleted = prune(store, params["keep_last"], params["max_age_days"], module.check_mode)
        module.exit_json(changed=bool(deleted), kept=kept, deleted=deleted)
    except Failure as exc:
        fail(module, exc)


if __name__ == "__main__":
    main()
