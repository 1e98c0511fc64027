#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: postgres_ping
short_description: Check that PostgreSQL accepts connections with the credentials of a Kubernetes Secret
description:
  - Reads host, port, database, user and password from a Secret of the namespace and connects with them,
    retrying until O(timeout), as the platform's writers would when they reconnect.
  - Nothing secret is returned or logged; the result names the host, port, database and user only.
  - Read-only, so it never reports C(changed) and also runs in check mode.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  namespace:
    description: Namespace of the Secret.
    type: str
    required: true
  secret:
    description: Name of the Secret.
    type: str
    default: postgres-secret
  keys:
    description: The Secret's keys for C(host), C(port), C(database), C(user) and C(password).
    type: dict
    default: {host: host, port: port, database: database, user: username, password: password}
  timeout:
    description: Seconds to keep trying.
    type: int
    default: 60
requirements:
  - psycopg (version 3)
extends_documentation_fragment:
  - emergency.ops.kube.cluster
"""

EXAMPLES = r"""
- name: DB pod recover | Check the database accepts connections
  emergency.ops.postgres_ping:
    namespace: matchbook
    secret: postgres-secret
"""

RETURN = r"""
server_version:
  description: The server's version.
  returned: success
  type: str
endpoint:
  description: Host, port, database and user connected to (never the password).
  returned: always
  type: dict
attempts:
  description: Connection attempts made.
  returned: always
  type: int
"""

import base64
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_CLUSTER_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
)

try:
    import psycopg

    HAS_PSYCOPG = True
except ImportError:
    HAS_PSYCOPG = False

DEFAULT_KEYS = {
    "host": "host",
    "port": "port",
    "database": "database",
    "user": "username",
    "password": "password",
}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_CLUSTER_ARGS,
            namespace=dict(type="str", required=True),
            # The name of a Secret and the names of its keys, not secret values.
            secret=dict(type="str", default="postgres-secret", no_log=False),
            keys=dict(type="dict", default=DEFAULT_KEYS, no_log=False),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    if not HAS_PSYCOPG:
        module.fail_json(msg="the psycopg (3) Python package is required")
    p = module.params
    keys = dict(DEFAULT_KEYS, **p["keys"])
    try:
        secret = Kube(p["kubeconfig"], p["context"], p["namespace"]).get("Secret", p["secret"])
    except KubeError as exc:
        module.fail_json(msg="Secret %s: %s" % (p["secret"], exc), outcome=outcome_of(exc))
    data = secret.get("data") or {}
    missing = [keys[k] for k in keys if keys[k] not in data]
    if missing:
        module.fail_json(
            msg="Secret %s has no keys %s" % (p["secret"], ", ".join(missing)), outcome="invalid"
        )
    values = {k: base64.b64decode(data[keys[k]]).decode() for k in keys}
    module.no_log_values.add(values["password"])
    endpoint = {k: values[k] for k in ("host", "port", "database", "user")}
    deadline = time.monotonic() + p["timeout"]
    attempts, error = 0, None
    while True:
        attempts += 1
        try:
            with psycopg.connect(
                host=values["host"],
                port=int(values["port"]),
                dbname=values["database"],
                user=values["user"],
                password=values["password"],
                connect_timeout=5,
            ) as connection:
                version = connection.execute("SHOW server_version").fetchone()[0]
                connection.execute("SELECT 1").fetchone()
            module.exit_json(changed=False, server_version=version, endpoint=endpoint, attempts=attempts)
        except psycopg.Error as exc:
            error = str(exc).replace(values["password"], "********").strip().splitlines()[0]
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    module.fail_json(
        msg="PostgreSQL at %(host)s:%(port)s/%(database)s refuses user %(user)s: " % endpoint + error,
        endpoint=endpoint,
        attempts=attempts,
    )


if __name__ == "__main__":
    main()
