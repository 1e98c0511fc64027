#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: evidence_bundle
short_description: Capture the services' state as a hashed evidence bundle, or verify bundles
version_added: 1.2.0
description:
  - With O(state=captured), writes a new numbered bundle under O(root) (never overwriting one) with every
    container's logs of the services' pods (current and previous), the namespace's events sorted by
    time, the manifests of the workloads, their ReplicaSets and pods, the namespace's Services,
    Ingresses, NetworkPolicies and ConfigMaps, the Secrets' metadata (never their data), the
    database's state (a plain pg_dump, gzipped, or with O(data=false) its schema and row counts, and
    its sessions), Redis C(INFO), and the log lines that speak of refused or suspicious authentication.
  - Every value of the namespace's Secrets, as is, base64, URL- and JSON-escaped, is replaced in every
    captured text before it is written. Files are 0600, folders 0700.
  - C(manifest.json) lists each file's sha256 and size, who captured it, when and from where; the
    module returns the manifest's own sha256 for the incident's timeline.
  - With O(state=verified), re-checks every bundle under O(root) (and its copy in the bucket when it was
    uploaded) and fails naming each file that changed, is missing or was added.
  - Reads the platform only; in check mode nothing is written.
options:
  state:
    description: Capture a new bundle, or verify the bundles under O(root).
    type: str
    choices: [captured, verified]
    default: captured
  root:
    description: The incident's evidence folder; bundles are its numbered subfolders.
    type: path
    required: true
  services:
    description: The services whose pods, workloads and logs are captured.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Workload name.
        type: str
        required: true
      kind:
        description: Workload kind.
        type: str
        choices: [Deployment, StatefulSet]
        default: Deployment
  since:
    description: Only log lines newer than this (C(30m), C(24h), C(7d)); all of them when empty.
    type: str
  database:
    description: The database whose state is captured (an admin login); none when omitted.
    required: false
  data:
    description: Dump the database with its data; with V(false), its schema and row counts only.
    type: bool
    default: true
  client_bin:
    description: Folder of the pg_dump matching the server's major version.
    type: path
  redis:
    description: Redis whose C(INFO) is captured; none when omitted.
    type: dict
    suboptions:
      url:
        description: C(redis://host:port/db), without the password.
        type: str
        required: true
      password_file:
        description: File holding the password.
        type: path
  upload:
    description: Also copy the bundle to O(store) under C(evidence/<incident>/<bundle>/).
    type: bool
    default: false
  store:
    description: The backup bucket, for O(upload) and for verifying uploaded copies.
    type: dict
    suboptions:
      bucket:
        description: Bucket name.
        type: str
        required: true
      prefix:
        description: The backups' prefix (evidence is stored beside it, under C(evidence/)).
        type: str
        default: postgres
      endpoint_url:
        description: S3 endpoint, for S3-compatible stores.
        type: str
      region:
        description: AWS region.
        type: str
        default: us-east-1
      access_key:
        description: Access key id.
        type: str
      secret_key:
        description: Secret access key.
        type: str
  retention_days:
    description: S3 Object Lock retention of uploaded files, where the bucket has Object Lock enabled.
    type: int
    default: 90
  expected:
    description: Per bundle name, the manifest sha256 the incident's timeline recorded (verify).
    type: dict
    default: {}
  incident:
    description: The incident the bundle belongs to.
    type: str
    required: true
  captured_by:
    description: Who captured it (the operator).
    type: str
    default: ""
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.database
author: Emergency procedures maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Capture the api's evidence for the incident
  emergency.ops.evidence_bundle:
    namespace: matchbook
    root: /var/lib/incidents/INC-1/evidence
    services:
      - name: api
    since: 24h
    incident: INC-1
"""

RETURN = r"""
bundle:
  description: The bundle written (capture), with its path, manifest sha256 and file count.
  returned: state is captured
  type: dict
summary:
  description: What was captured (pods, logs, events, suspicious lines, database, Redis).
  returned: state is captured
  type: dict
verified:
  description: Every bundle checked, with its manifest sha256 and problems.
  returned: state is verified
  type: list
  elements: dict
"""

import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.emergency.ops.plugins.module_utils import evidence
from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    BACKUP_STORE_ARGS,
    DATABASE_ARGS,
    KUBE_ARGS,
)
from ansible_collections.emergency.ops.plugins.module_utils.postgres import pg_env
from ansible_collections.emergency.ops.plugins.module_utils.store import Store
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
)


def describe(bundle, manifest, digest):
    return {
        "name": bundle.name,
        "path": bundle.path,
        "manifest_sha256": digest,
        "files": len(manifest["files"]),
        "bytes": sum(f["size"] for f in manifest["files"]),
        "complete": manifest.get("complete", True),
        "uploaded_to": None,
        "object_lock": None,
    }


def capture_bundle(module, kube, since):
    p = module.params
    return evidence.capture(
        kube,
        p["root"],
        p["services"],
        p["incident"],
        p["captured_by"] or "unknown",
        since=since,
        database=p["database"],
        data=p["data"],
        client_bin=p["client_bin"],
        pg_environment=pg_env(p["database"]) if p["database"] else None,
        redis_settings=p["redis"],
        cluster=kube.api.configuration.host,
    )


def capture(module, kube):
    p = module.params
    since = evidence.parse_duration(p["since"])
    if module.check_mode:
        return dict(
            changed=False,
            summary={"services": [s["name"] for s in p["services"]], "would_write_under": p["root"]},
        )
    try:
        bundle, manifest, digest, summary = capture_bundle(module, kube, since)
    except Exception as exc:
        if not hasattr(exc, "bundle"):
            raise
        bundle, manifest, digest = exc.bundle
        module.fail_json(
            msg="the capture stopped: %s (what was captured is kept in %s, marked incomplete)"
            % (exc, bundle.path),
            outcome=getattr(exc, "outcome", "failed"),
            bundle=describe(bundle, manifest, digest),
        )
    result = describe(bundle, manifest, digest)
    if p["upload"]:
        store = Store(**p["store"])
        prefix = "evidence/%s/%s" % (p["incident"], bundle.name)
        result["object_lock"] = evidence.upload(store, bundle.path, prefix, p["retention_days"])
        result["uploaded_to"] = "s3://%s/%s/" % (store.bucket, prefix)
        # The upload is recorded beside the bundle, not in it: the manifest is sealed.
        marker = os.path.join(p["root"], ".%s.uploaded" % bundle.name)
        with os.fdopen(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(prefix + "\n")
    return dict(changed=True, bundle=result, summary=summary)


def verify(module):
    p = module.params
    root = p["root"]
    names = sorted(n for n in os.listdir(root) if n.isdigit()) if os.path.isdir(root) else []
    if not names:
        module.fail_json(msg="no evidence bundle under %s" % root, outcome="refused")
    checked, problems = [], []
    store = None
    for name in names:
        folder = os.path.join(root, name)
        found, digest = evidence.verify_bundle(folder, p["expected"].get(name))
        entry = {"name": name, "path": folder, "manifest_sha256": digest, "uploaded_to": None}
        marker = os.path.join(root, ".%s.uploaded" % name)
        if os.path.exists(marker) and digest:
            with open(marker) as handle:
                prefix = handle.read().strip()
            entry["uploaded_to"] = prefix
            if p["store"]:
                store = store or Store(**p["store"])
                import json

                with open(os.path.join(folder, evidence.MANIFEST), "rb") as handle:
                    found += evidence.verify_uploaded(store, prefix, json.loads(handle.read()), digest)
        entry["problems"] = found
        problems += found
        checked.append(entry)
    if problems:
        module.fail_json(
            msg="evidence changed: " + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""),
            outcome="failed",
            verified=checked,
        )
    return dict(changed=False, verified=checked)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            state=dict(type="str", choices=["captured", "verified"], default="captured"),
            root=dict(type="path", required=True),
            services=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    kind=dict(type="str", choices=["Deployment", "StatefulSet"], default="Deployment"),
                ),
            ),
            since=dict(type="str"),
            database=dict(DATABASE_ARGS["database"], required=False),
            data=dict(type="bool", default=True),
            client_bin=dict(type="path"),
            redis=dict(
                type="dict",
                options=dict(
                    url=dict(type="str", required=True), password_file=dict(type="path", no_log=False)
                ),
            ),
            upload=dict(type="bool", default=False),
            store=dict(BACKUP_STORE_ARGS["store"], required=False),
            retention_days=dict(type="int", default=90),
            expected=dict(type="dict", default={}),
            incident=dict(type="str", required=True),
            captured_by=dict(type="str", default=""),
        ),
        required_if=[("upload", True, ("store",))],
        supports_check_mode=True,
    )
    try:
        if module.params["state"] == "verified":
            module.exit_json(**verify(module))
        require_kubernetes(module)
        kube = Kube(module.params["kubeconfig"], module.params["context"], module.params["namespace"])
        module.exit_json(**capture(module, kube))
    except evidence.EvidenceError as exc:
        module.fail_json(msg=str(exc), outcome=exc.outcome)
    except KubeError as exc:
        module.fail_json(msg=str(exc), outcome=outcome_of(exc))
    except (OSError, socket.error) as exc:
        module.fail_json(msg="%s: %s" % (type(exc).__name__, exc), outcome="failed")


if __name__ == "__main__":
    main()
