#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: incident_entry
short_description: Append one entry to an incident's shared record
description:
  - Writes one entry under C(<prefix>/<incident>/entries/) of the incident record's bucket (by default
    the backup bucket), as the driver does for its own runs, so that a playbook run by AWX or
    C(ansible-playbook) is on the same timeline every operator reads with C(incident show).
  - Entries are never rewritten and two writers never collide, so the module needs no lock.
  - The record is not the platform, so writing an entry is reported as C(changed=false), and the module
    writes also in check mode (a run in check mode is on the record, marked as such).
  - The record's bucket credentials are credential references (C(env), C(file), C(secret)), read here.
version_added: 1.3.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  record:
    description: C(platform_incident.record) of the inventory (bucket, prefix, endpoint, region, access key).
    type: dict
    default: {}
  backup:
    description: C(platform_backup) of the inventory; what O(record) leaves out is taken from it.
    type: dict
    default: {}
  secret_key:
    description:
      - The bucket's secret key as a credential reference (C(platform_incident.record.secret_key), else
        C(platform_backup.secret_key)); O(record) and O(backup) are read without theirs.
    type: raw
  incident:
    description: The incident's id.
    type: str
    required: true
  kind:
    description: What the entry is, for example C(procedure).
    type: str
    required: true
  fields:
    description: The entry's fields.
    type: dict
    default: {}
  by:
    description: Who wrote it.
    type: str
  namespace:
    description: Namespace of the Secret that holds the bucket's key, when O(secret_key) names one.
    type: str
requirements:
  - boto3
extends_documentation_fragment:
  - emergency.ops.kube.cluster
"""

EXAMPLES = r"""
- name: Procedure | Put the run on the incident's record
  emergency.ops.incident_entry:
    record: "{{ platform_incident.record | default({}) }}"
    backup: "{{ platform_backup | default({}) }}"
    incident: "{{ incident_id }}"
    kind: procedure
    fields:
      event: finished
      procedure: restart
      status: succeeded
"""

RETURN = r"""
key:
  description: The entry's key in the bucket.
  returned: success
  type: str
at:
  description: When it was written (UTC, milliseconds).
  returned: success
  type: str
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils import credentials
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_CLUSTER_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure, fail
from ansible_collections.emergency.ops.plugins.module_utils.incident_record import Record, valid_id
from ansible_collections.emergency.ops.plugins.module_utils.store import HAS_BOTO3


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            record=dict(type="dict", default={}),
            backup=dict(type="dict", default={}),
            secret_key=dict(type="raw", no_log=True),
            incident=dict(type="str", required=True),
            kind=dict(type="str", required=True),
            fields=dict(type="dict", default={}),
            by=dict(type="str"),
            namespace=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg="boto3 is required", outcome="invalid")
    params = module.params
    if not valid_id(params["incident"]):
        module.fail_json(
            msg="incident id %r: letters, digits, '.', '_' and '-' only" % params["incident"][:70],
            outcome="invalid",
        )
    settings = credentials.record_settings(params["record"], params["backup"])
    settings["secret_key"] = params["secret_key"]
    if not settings.get("bucket"):
        module.fail_json(
            msg="the incident record has no bucket (platform_incident.record or platform_backup)",
            outcome="invalid",
        )
    try:
        kube = None
        if isinstance(settings.get("secret_key"), dict) and settings["secret_key"].get("source") == "secret":
            from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube

            kube = Kube(params["kubeconfig"], params["context"], params["namespace"])
        secret_key = credentials.resolve(settings.get("secret_key"), kube) or None
    except ValueError as exc:
        module.fail_json(msg="the incident record's secret key: %s" % exc, outcome="invalid")
    settings["secret_key"] = secret_key
    fields = dict(params["fields"], host=params["fields"].get("host") or socket.gethostname())
    try:
        entry = Record.connect(settings).append(params["incident"], params["kind"], fields, by=params["by"])
    except Failure as exc:
        fail(module, exc)
    module.exit_json(changed=False, key=entry["key"], at=entry["at"])


if __name__ == "__main__":
    main()
