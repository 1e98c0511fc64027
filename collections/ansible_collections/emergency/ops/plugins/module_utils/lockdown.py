# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Locking accounts out, and the exact way back.

A user (runbook 004 "Compromised Account Response", 000 "Compromised Credentials"): suspended in the
application's users table (and its cache's lock key when the inventory names one), every session of
theirs ended in the session store, and the database login role of the same name, when one exists, set
NOLOGIN with its backends terminated. The state found before is recorded first, in a ConfigMap of the
namespace (``emergency-lockdown-user-<hash>``), so ``unlock`` puts back exactly that (a user already
suspended stays suspended, a role that could not log in still cannot) and a run stopped half-way is
completed or undone like a finished one.

Everyone (004 "System-wide Lockdown"): new logins disabled by the application's configuration, an
environment variable of the services that take logins (their rollout waited for), the open sessions
kept or ended as asked. The record (``emergency-lockdown-all``) holds each service's previous value,
or that it had none. Ended sessions do not come back: after ``unlock`` the users log in again.

A subject already locked out is not touched again; what a re-run finds not locked out (a session
opened since) it locks out again, keeping the first record.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json

from ansible_collections.emergency.ops.plugins.module_utils.kube import KubeError, rfc3339, wait_until
from ansible_collections.emergency.ops.plugins.module_utils.workloads import main_container, wait_ready

RECORD_LABEL = "emergency.ops/lockdown"
ALL = "emergency-lockdown-all"


class Invalid(Exception):
    """The request names nothing that can be locked out; nothing was changed."""


class NotDone(Exception):
    """A change was made but the state checked afterwards is not the one wanted."""


def record_name(user):
    """A ConfigMap name for any user name (which need not be a DNS label)."""
    return "emergency-lockdown-user-%s" % hashlib.sha256(user.encode("utf-8")).hexdigest()[:16]


class Records:
    """The lockdown records of a namespace, one ConfigMap each, written before anything changes."""

    def __init__(self, kube, check_mode):
        self.kube, self.check_mode = kube, check_mode
        self.touched = False  # something was written: a failure now is not "nothing changed"

    def read(self, name):
        found = self.kube.get_or_none("ConfigMap", name)
        return json.loads(found["data"]["record"]) if found else None

    def write(self, name, record):
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {RECORD_LABEL: "user" if name != ALL else "all"},
                "annotations": {"emergency.ops/incident": record["incident"]},
            },
            "data": {"record": json.dumps(record, sort_keys=True)},
        }
        try:
            self.kube.create("ConfigMap", body, dry_run=self.check_mode)
        except KubeError as exc:
            if exc.status != 409:
                raise
            return  # another operator's run recorded it first: its prior state is the one to keep
        self.touched = not self.check_mode

    def remove(self, name):
        if not self.check_mode:
            self.kube.delete("ConfigMap", name)
            self.touched = True


# -- the application's users, the session store, the database's roles -----------------------------------
class Accounts:
    """The application's users table and session store as the inventory describes them
    (``platform_accounts``), over an autocommit admin connection to the application's database and a
    Redis client (None when the inventory has no session store)."""

    def __init__(self, settings, db, cache):
        self.settings, self.db, self.cache = settings, db, cache
        self.touched = False  # as Records.touched

    def _sql(self, text):
        from psycopg import sql

        s = self.settings
        return sql.SQL(text).format(
            table=sql.Identifier(*s["table"].split(".")),
            name=sql.Identifier(s["name_column"]),
            locked=sql.Identifier(s["locked_column"]),
        )

    def state(self, user):
        """What holds the user in: suspended or not (None: not a user of the application), open
        sessions, the cache's lock key, the database role's login (None: no such role) and backends."""
        row = self.db.execute(self._sql("SELECT {locked} FROM {table} WHERE {name} = %s"), (user,)).fetchone()
        role = self.db.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        backends = self.db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()", (user,)
        ).fetchone()[0]
        return {
            "app_locked": None if row is None else bool(row[0]),
            "sessions": len(self.session_ids(user)),
            "cache_locked": bool(self.cache.exists(self.key("locked_key", user=user)))
            if self.cache is not None and self.settings.get("locked_key")
            else None,
            "db_login": None if role is None else bool(role[0]),
            "db_backends": backends,
        }

    def known(self, user):
        """The user's state; raises Invalid when the name is neither a user nor a database role."""
        state = self.state(user)
        if state["app_locked"] is None and state["db_login"] is None:
            raise Invalid(
                "%r is neither a user of the application (%s) nor a database role"
                % (user, self.settings["table"])
            )
        return state

    def key(self, name, **fields):
        return self.settings[name].format(**fields)

    def session_ids(self, user):
        if self.cache is None or not self.settings.get("user_sessions_key"):
            return []
        return sorted(self.cache.smembers(self.key("user_sessions_key", user=user)))

    def set_app_locked(self, user, locked):
        self.touched = True
        self.db.execute(self._sql("UPDATE {table} SET {locked} = %s WHERE {name} = %s"), (locked, user))

    def set_cache_locked(self, user, locked):
        self.touched = True
        if locked:
            self.cache.set(self.key("locked_key", user=user), "1")
        else:
            self.cache.delete(self.key("locked_key", user=user))

    def end_sessions(self, user):
        """Every session of the user, by the store's per-user index; the number of sessions ended."""
        self.touched = True
        ids = self.session_ids(user)
        pipe = self.cache.pipeline()
        for session in ids:
            pipe.delete(self.key("session_key", session=session))
        pipe.delete(self.key("user_sessions_key", user=user))
        return sum(pipe.execute()[:-1]) if ids else 0

    def end_all_sessions(self):
        """Every session of the store, and every user's index; the number of sessions ended."""
        self.touched = True
        ended = self._delete_matching(self.key("session_key", session="*"))
        self._delete_matching(self.key("user_sessions_key", user="*"))
        return ended

    def _delete_matching(self, match):
        removed, batch = 0, []
        for key in self.cache.scan_iter(match=match, count=500):
            batch.append(key)
            if len(batch) == 500:
                removed, batch = removed + self.cache.delete(*batch), []
        return removed + (self.cache.delete(*batch) if batch else 0)

    def open_sessions(self):
        if self.cache is None or not self.settings.get("session_key"):
            return 0
        match = self.key("session_key", session="*")
        return sum(1 for _key in self.cache.scan_iter(match=match, count=500))

    def set_db_login(self, user, login):
        self.touched = True
        from psycopg import sql

        flag = sql.SQL("LOGIN" if login else "NOLOGIN")
        self.db.execute(sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(user), flag))

    def terminate_backends(self, user):
        self.touched = True
        rows = self.db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_backend_pid()",
            (user,),
        ).fetchall()
        return len(rows)


def locked_out(state):
    """Whether nothing of the user's state lets them in."""
    return (
        state["app_locked"] in (None, True)
        and state["sessions"] == 0
        and state["cache_locked"] in (None, True)
        and state["db_login"] in (None, False)
        and state["db_backends"] == 0
    )


def lock_user(accounts, records, user, incident, timeout):
    """Locks ``user`` out; returns the entry the module reports."""
    before = accounts.known(user)
    name = record_name(user)
    record = records.read(name)
    entry = {"user": user, "before": before, "locked_by": (record or {}).get("incident")}
    if locked_out(before):
        return dict(entry, changed=False, already=True)
    if records.check_mode:
        return dict(entry, changed=True)
    if record is None:  # first: what unlock puts back
        prior = dict(before, sessions=None, db_backends=None)
        records.write(name, {"subject": user, "incident": incident, "at": rfc3339(), "before": prior})
        entry["locked_by"] = incident
    # The suspension before the sessions end: a login between the two would open a new session.
    if before["app_locked"] is False:
        accounts.set_app_locked(user, True)
    if before["cache_locked"] is False:
        accounts.set_cache_locked(user, True)
    entry["sessions_ended"] = accounts.end_sessions(user) if accounts.cache is not None else 0
    if before["db_login"]:
        accounts.set_db_login(user, False)
    entry["db_backends_terminated"] = (
        accounts.terminate_backends(user) if before["db_login"] is not None else 0
    )
    # pg_terminate_backend only signals: the backends are gone a moment later.
    after = wait_until(lambda: settled_state(accounts, user), timeout, 0.2)
    if not after:
        raise NotDone("%s is not locked out after %ss: %s" % (user, timeout, accounts.state(user)))
    return dict(entry, changed=True, after=after)


def settled_state(accounts, user):
    """The user's state once nothing of it lets them in, else None."""
    state = accounts.state(user)
    return state if locked_out(state) else None


def unlock_user(accounts, records, user):
    """Puts back what ``lock_user`` recorded; returns the entry the module reports."""
    name = record_name(user)
    record = records.read(name)
    if record is None:
        return {"user": user, "changed": False, "recorded": False}
    prior = record["before"]
    entry = {
        "user": user,
        "changed": True,
        "recorded": True,
        "locked_by": record["incident"],
        "restored": prior,
    }
    if records.check_mode:
        return entry
    if prior["app_locked"] is False:
        accounts.set_app_locked(user, False)
    if prior["cache_locked"] is False:
        accounts.set_cache_locked(user, False)
    if prior["db_login"]:
        accounts.set_db_login(user, True)
    records.remove(name)
    entry["after"] = accounts.state(user)
    return entry


# -- everyone: new logins off in the application's configuration -------------------------------------------
def env_value(workload, variable):
    """The variable's value in the main container (None: not set; a dict for valueFrom)."""
    template = workload["spec"]["template"]
    container = template["spec"]["containers"][main_container(template, workload["metadata"]["name"])]
    for env in container.get("env") or []:
        if env["name"] == variable:
            return env.get("value", {"valueFrom": env.get("valueFrom")})
    return None


def set_env(kube, workload, variable, value, dry_run):
    """One JSON patch of the main container's env: ``value`` set, or the variable removed (None)."""
    template = workload["spec"]["template"]
    index = main_container(template, workload["metadata"]["name"])
    env = [e for e in template["spec"]["containers"][index].get("env") or [] if e["name"] != variable]
    if value is not None:
        env.append(
            {"name": variable, "value": value} if not isinstance(value, dict) else dict(value, name=variable)
        )
    patch = [{"op": "add", "path": "/spec/template/spec/containers/%d/env" % index, "value": env}]
    kube.patch(workload["kind"], workload["metadata"]["name"], patch, patch_type="json", dry_run=dry_run)


def switch_logins(kube, services, variable, value_of, timeout, dry_run):
    """Sets each service's variable to ``value_of(name)`` where it differs, then waits for each rollout;
    returns the services changed."""
    changed = []
    for service in services:
        workload = kube.get(service["kind"], service["name"])
        wanted = value_of(service["name"])
        if env_value(workload, variable) != wanted:
            set_env(kube, workload, variable, wanted, dry_run)
            changed.append(service)
    for service in [] if dry_run else changed:
        _obj, state, message = wait_ready(kube, service["kind"], service["name"], timeout)
        if state != "complete":
            raise NotDone(message)
    return [s["name"] for s in changed]


def lock_all(kube, accounts, records, logins, end_sessions, incident, timeout):
    services, variable, disabled = logins["services"], logins["variable"], logins["disabled_value"]
    record = records.read(ALL)
    current = {s["name"]: env_value(kube.get(s["kind"], s["name"]), variable) for s in services}
    entry = {"before": current, "locked_by": (record or {}).get("incident"), "end_sessions": end_sessions}
    open_sessions = accounts.open_sessions() if end_sessions else 0
    if all(v == disabled for v in current.values()) and not open_sessions:
        return dict(entry, changed=False, already=True)
    if records.check_mode:
        switch_logins(kube, services, variable, lambda _: disabled, timeout, dry_run=True)
        return dict(entry, changed=True)
    if record is None:
        records.write(ALL, {"subject": "all", "incident": incident, "at": rfc3339(), "before": current})
        entry["locked_by"] = incident
    entry["restarted"] = switch_logins(kube, services, variable, lambda _: disabled, timeout, False)
    entry["sessions_ended"] = accounts.end_all_sessions() if end_sessions else 0
    return dict(entry, changed=True)


def unlock_all(kube, records, logins, timeout):
    record = records.read(ALL)
    if record is None:
        return {"changed": False, "recorded": False}
    prior = record["before"]
    entry = {"changed": True, "recorded": True, "locked_by": record["incident"], "restored": prior}
    services = [s for s in logins["services"] if s["name"] in prior]
    entry["restarted"] = switch_logins(
        kube, services, logins["variable"], prior.get, timeout, dry_run=records.check_mode
    )
    records.remove(ALL)
    return entry
