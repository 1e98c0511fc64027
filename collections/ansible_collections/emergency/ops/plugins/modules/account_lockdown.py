#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: account_lockdown
short_description: Lock users (or every new login) out of the application and the database, and back in
version_added: 1.2.0
description:
  - For each of O(users) with O(state=locked) - suspended in the application's users table (and its cache's
    lock key when O(accounts.locked_key) is given), every session ended in the session store (O(redis)), and
    the database role of the same name, if there is one, set C(NOLOGIN) with its backends terminated.
  - With O(all=true) and O(state=locked) - new logins disabled through an environment variable of
    O(accounts.logins.services) (each rollout waited for), the open sessions ended when O(end_sessions=true);
    with O(ingress) and O(accounts.login_path), a login attempt through the Ingress is checked refused.
  - What was there before is recorded first, in a ConfigMap of the namespace; O(state=unlocked) puts back
    exactly that and removes the record. A subject already locked out is not touched again.
  - In check mode nothing changes (the environment patches are validated with a server-side dry run).
options:
  state:
    description: Lock out, or put back what the lockdown recorded.
    type: str
    choices: [locked, unlocked]
    required: true
  users:
    description: The users, by their name in the application (and of their database role, if any).
    type: list
    elements: str
    default: []
  all:
    description: Every new login, rather than O(users).
    type: bool
    default: false
  end_sessions:
    description: With O(all), also end every open session.
    type: bool
    default: false
  accounts:
    description: The application's users table, session store and login switch.
    type: dict
    required: true
    suboptions:
      table:
        description: The users table (C(schema.table) or C(table)) in O(database.name).
        type: str
        required: true
      name_column:
        description: Its column holding the user's name.
        type: str
        default: name
      locked_column:
        description: Its boolean column that suspends the user.
        type: str
        default: locked
      user_sessions_key:
        description: Redis set of a user's session ids, with C({user}).
        type: str
      session_key:
        description: Redis key of one session, with C({session}).
        type: str
      locked_key:
        description: Redis key whose presence suspends a user, with C({user}).
        type: str
      login_path:
        description: Path of the login endpoint; with O(ingress), a login attempt (POST, empty JSON body)
          there checks O(all) on the wire.
        type: str
      logins:
        description: The configuration that disables new logins (O(all)).
        type: dict
        suboptions:
          services:
            description: The services taking logins, by name (their kinds come from O(services)).
            type: list
            elements: str
            required: true
          variable:
            description: Environment variable of their main container.
            type: str
            required: true
          disabled_value:
            description: Its value that disables new logins.
            type: str
            required: true
          disabled_status:
            description: The status the login endpoint answers while logins are disabled.
            type: int
            default: 503
  database:
    description: The admin login, with the application's database as O(database.name); needed for O(users).
    required: false
  redis:
    description: The session store.
    type: dict
    suboptions:
      url:
        description: Redis URL, without the password.
        type: str
        required: true
      password_file:
        description: File holding the password.
        type: path
  services:
    description: The platform's workloads, of which O(accounts.logins.services) names some; needed for O(all).
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
        default: Deployment
        choices: [Deployment, StatefulSet]
  ingress:
    description: The Ingress as a client reaches it, for the check on the wire.
    type: dict
    suboptions:
      url:
        description: Base URL.
        type: str
        required: true
      host:
        description: Host header.
        type: str
  incident:
    description: The incident the lockdown is recorded under.
    type: str
    required: true
  timeout:
    description: Seconds to wait for rollouts, for terminated backends to go and for a client to see it.
    type: int
    default: 120
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.database
author: Emergency procedures maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Lock a compromised account out
  emergency.ops.account_lockdown:
    namespace: matchbook
    state: locked
    users: [alice]
    accounts:
      table: users
      user_sessions_key: "matchbook:user-sessions:{user}"
      session_key: "matchbook:session:{session}"
    database: "{{ admin }}"
    redis: {url: "redis://127.0.0.1:6379/0", password_file: /run/secrets/redis}
    incident: INC-1
"""

RETURN = r"""
lockdown:
  description: Per user (or for all) the state before, what was ended, and who recorded the lockdown.
  returned: always
  type: dict
wire:
  description: With O(all), O(ingress) and O(accounts.login_path), the status a login attempt got through
    the Ingress.
  returned: when checked
  type: int
"""

import json

try:
    import psycopg
    import redis

    BACKEND_ERRORS = (psycopg.Error, redis.RedisError)
except ImportError:  # the module then fails when it first needs one of them
    BACKEND_ERRORS = ()

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.emergency.ops.plugins.module_utils.args_common import (
    DATABASE_ARGS,
    KUBE_ARGS,
    SERVICES_ARGS,
)
from ansible_collections.emergency.ops.plugins.module_utils import cache, postgres
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.isolation import NotVerified, wait, wire_status
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    outcome_of,
    require_kubernetes,
)
from ansible_collections.emergency.ops.plugins.module_utils.lockdown import (
    Accounts,
    Invalid,
    NotDone,
    Records,
    lock_all,
    lock_user,
    unlock_all,
    unlock_user,
)

ACCOUNTS = dict(
    table=dict(type="str", required=True),
    name_column=dict(type="str", default="name"),
    locked_column=dict(type="str", default="locked"),
    user_sessions_key=dict(type="str", no_log=False),
    session_key=dict(type="str", no_log=False),
    locked_key=dict(type="str", no_log=False),
    login_path=dict(type="str"),
    logins=dict(
        type="dict",
        options=dict(
            services=dict(type="list", elements="str", required=True),
            variable=dict(type="str", required=True),
            disabled_value=dict(type="str", required=True),
            disabled_status=dict(type="int", default=503),
        ),
    ),
)


def check_logins_on_wire(url, host, wanted, disabled, timeout):
    """Until a login attempt through the Ingress gets the disabled status (or, back on, any other)."""
    request = {"url": url, "host": host, "method": "POST", "data": json.dumps({})}
    request["headers"] = {"Content-Type": "application/json"}

    def seen():
        status = wire_status(request)
        return status if (status == wanted) == disabled and status else None

    state = "disabled" if disabled else "enabled"
    return wait(seen, timeout, "logins through %s still not %s" % (url, state))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            state=dict(type="str", choices=["locked", "unlocked"], required=True),
            users=dict(type="list", elements="str", default=[]),
            all=dict(type="bool", default=False),
            end_sessions=dict(type="bool", default=False),
            accounts=dict(type="dict", required=True, options=ACCOUNTS),
            database=dict(DATABASE_ARGS["database"], required=False),
            redis=dict(
                type="dict",
                options=dict(url=dict(type="str", required=True), password_file=dict(type="path")),
            ),
            services=dict(SERVICES_ARGS["services"], required=False, default=[]),
            ingress=dict(
                type="dict", options=dict(url=dict(type="str", required=True), host=dict(type="str"))
            ),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    locking = p["state"] == "locked"
    if bool(p["users"]) == p["all"]:
        module.fail_json(msg="give either users or all=true", outcome="invalid")
    logins = p["accounts"]["logins"]
    if p["all"]:
        kinds = {s["name"]: s["kind"] for s in p["services"]}
        unknown = [n for n in (logins or {}).get("services", []) if n not in kinds]
        if not logins or unknown:
            module.fail_json(
                msg="accounts.logins.services must name services of the platform to lock out every login%s"
                % (": unknown %s" % ", ".join(unknown) if unknown else ""),
                outcome="invalid",
            )
        logins = dict(logins, services=[{"name": n, "kind": kinds[n]} for n in logins["services"]])
    if p["users"] and not p["database"]:
        module.fail_json(msg="database is needed to lock users out", outcome="invalid")
    result = {"changed": False, "lockdown": {}}
    records = accounts = None

    def touched():
        return result["changed"] or any(x is not None and x.touched for x in (records, accounts))

    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        records = Records(kube, module.check_mode)
        store = cache.client(p["redis"], decode_responses=True) if p["redis"] else None
        if p["all"]:
            accounts = Accounts(p["accounts"], None, store)
            if locking:
                entry = lock_all(
                    kube, accounts, records, logins, p["end_sessions"], p["incident"], p["timeout"]
                )
            else:
                entry = unlock_all(kube, records, logins, p["timeout"])
            if p["ingress"] and p["accounts"]["login_path"] and not module.check_mode:
                result["wire"] = check_logins_on_wire(
                    p["ingress"]["url"] + p["accounts"]["login_path"],
                    p["ingress"].get("host"),
                    logins["disabled_status"],
                    locking,
                    p["timeout"],
                )
            result["changed"] = entry.pop("changed")
            result["lockdown"] = {"all": entry}
        else:
            with postgres.connect(p["database"], p["database"]["name"]) as db:
                accounts = Accounts(p["accounts"], db, store)
                if locking:  # every user known before the first is touched
                    for user in p["users"]:
                        accounts.known(user)
                for user in p["users"]:
                    if locking:
                        entry = lock_user(accounts, records, user, p["incident"], p["timeout"])
                    else:
                        entry = unlock_user(accounts, records, user)
                    result["changed"] = entry.pop("changed") or result["changed"]
                    result["lockdown"][user] = entry
    except Invalid as exc:
        module.fail_json(msg=str(exc), outcome="invalid", **result)
    except (NotDone, NotVerified) as exc:
        module.fail_json(msg=str(exc), **result)
    except KubeError as exc:
        module.fail_json(msg=str(exc), outcome=outcome_of(exc, touched()), **result)
    except Failure as exc:  # the database refused or unreachable, before anything changed
        module.fail_json(msg=str(exc), outcome=exc.outcome, **result)
    except BACKEND_ERRORS as exc:  # the database or Redis failing mid-way
        outcome = "failed" if touched() else "unreachable"
        module.fail_json(msg="%s: %s" % (type(exc).__name__, exc), outcome=outcome, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
