# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Rotating a credential without breaking the service, and without the value leaving this process.

New values are made here (``secrets``), go to the Kubernetes API and to PostgreSQL only, and are never
returned: the result names Secrets, keys, resource versions and workloads, not values.

Database passwords alternate between two login roles (as AWS Secrets Manager's alternating-users
strategy does), ``<owner>_a`` and ``<owner>_b``, members of the owner role of the application's objects
and acting as it (``SET role``). PostgreSQL keeps one password per role: changing the password of the
role the running pods log in with would refuse every new connection their pools open until they are
replaced, and waiting for new pods before changing it cannot work (they need the new password to
become ready). With two roles the new pods log in as the other one while the old pods keep theirs;
once every old pod is gone the old role's password is removed and its sessions ended, so the old
credential is refused. The password reaches the server as a SCRAM verifier computed here, so it is
in no statement the server could log.

A keypair (runbook 000 "Compromised Crank Wallet") is made by the inventory's generator command
(``solana-keygen new -o {new}``) into a file of a private folder removed at the end whatever happens, with
the services that sign with it stopped first (replicas recorded) and brought back after. The old
keypair stays in the Secret beside the new one (key ``<key>.previous``) until the follow-up command
(the funds transfer, ``{old}`` to ``{new}``) has succeeded, once per incident: a failed transfer is
re-run by the next rotation for the incident, and no key that holds funds is ever lost. The commands'
output is discarded (a generator prints a recovery phrase); only their exit status is kept.

A rotation whose restarted pods do not become ready is put back: the Secret gets its previous data
and the workloads their previous pod template (so the previous ReplicaSet's pods serve), and the new
role's password is removed. The old credential was not touched yet, so the service keeps running.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os
import secrets
import shutil
import subprocess
import tempfile

try:
    from urllib.parse import quote, urlsplit, urlunsplit
except ImportError:  # pragma: no cover - Python 2
    from urlparse import urlsplit, urlunsplit
    from urllib import quote

from ansible_collections.emergency.ops.plugins.module_utils.kube import rfc3339, selector_string, wait_until
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import scale_all
from ansible_collections.emergency.ops.plugins.module_utils.workloads import wait_ready

ROTATED = "emergency.ops/rotated-incident"
FOLLOWED_UP = "emergency.ops/follow-up-incident"
PREVIOUS = "%s.previous"  # the Secret's key keeping the old keypair until the follow-up has used it
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class RotationFailed(Exception):
    """The rotation did not finish; ``put_back`` says whether the previous credential is in place."""

    def __init__(self, message, put_back):
        super(RotationFailed, self).__init__(message)
        self.put_back = put_back


def decoded(secret):
    return {k: base64.b64decode(v).decode("utf-8") for k, v in (secret.get("data") or {}).items()}


def encoded(data):
    return {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}


def references(template, name):
    """Whether a pod template uses the Secret: env, envFrom or a volume."""
    spec = template.get("spec") or {}
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == name:
                return True
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name") == name:
                return True
    return any((v.get("secret") or {}).get("secretName") == name for v in spec.get("volumes") or [])


def consumers(kube, name, order):
    """``(to restart, others)``: the Deployments and StatefulSets whose pods use the Secret, those of
    the inventory's restart ``order`` in that order, and the rest (a database StatefulSet that reads the
    password only to initialise its data directory, say), which are reported and not restarted."""
    found = [
        w
        for kind in ("Deployment", "StatefulSet")
        for w in kube.list(kind)
        if references(w["spec"]["template"], name)
    ]
    rank = {n: i for i, n in enumerate(order)}
    ordered = sorted(
        (w for w in found if w["metadata"]["name"] in rank), key=lambda w: rank[w["metadata"]["name"]]
    )
    return ordered, sorted(w["metadata"]["name"] for w in found if w["metadata"]["name"] not in rank)


def new_password():
    return secrets.token_urlsafe(32)


def with_userinfo(url, user, password):
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = "%s:%s@%s" % (quote(user, safe=""), quote(password, safe=""), host)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Rotation:
    def __init__(self, kube, name, incident, order, timeout, check_mode=False):
        self.kube, self.name, self.incident = kube, name, incident
        self.order, self.timeout, self.check_mode = order, timeout, check_mode
        self.secret = kube.get("Secret", name)
        self.previous = decoded(self.secret)
        self.workloads, self.not_restarted = consumers(kube, name, order)
        self.restarted = []

    def already(self):
        return (self.secret["metadata"].get("annotations") or {}).get(ROTATED) == self.incident

    def entry(self, changed):
        return {
            "secret": self.name,
            "keys": sorted(self.previous),
            "previous_resource_version": self.secret["metadata"].get("resourceVersion"),
            "resource_version": self.kube.get("Secret", self.name)["metadata"].get("resourceVersion"),
            "workloads": [w["metadata"]["name"] for w in self.workloads],
            "restarted": self.restarted,
            "not_restarted": self.not_restarted,
            "changed": changed,
        }

    # -- the Secret and its consumers -------------------------------------------------------------------
    def write_secret(self, data, annotate=True):
        annotations = {ROTATED: self.incident, "emergency.ops/rotated-at": rfc3339()} if annotate else {}
        body = {"data": encoded(data)}
        if annotations:
            body["metadata"] = {"annotations": annotations}
        self.kube.patch("Secret", self.name, body, patch_type="merge", dry_run=self.check_mode)

    def restart_all(self):
        """Restarts every consumer in order, each ready before the next; raises RotationFailed."""
        for workload in self.workloads:
            kind, name = workload["kind"], workload["metadata"]["name"]
            patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: rfc3339()}}}}}
            self.kube.patch(kind, name, patch, patch_type="strategic", dry_run=self.check_mode)
            if self.check_mode:
                continue
            self.restarted.append(name)
            obj, state, message = wait_ready(self.kube, kind, name, self.timeout)
            if state != "complete":
                raise RotationFailed("%s %s did not become ready: %s" % (kind, name, message), False)
            self.wait_old_pods_gone(obj)

    def wait_old_pods_gone(self, obj):
        """Until no pod of the workload is terminating: a draining pod still uses the old credential."""
        labels = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = selector_string(labels)
        wait_until(
            lambda: (
                not any(
                    p["metadata"].get("deletionTimestamp")
                    for p in self.kube.list("Pod", label_selector=selector)
                )
            ),
            self.timeout,
            interval=0.2,
        )

    def put_back(self):
        """The previous data in the Secret and the previous pod template on each restarted workload."""
        self.write_secret(self.previous, annotate=False)
        by_name = {w["metadata"]["name"]: w for w in self.workloads}
        for name in self.restarted:
            workload = by_name[name]
            previous = (workload["spec"]["template"].get("metadata", {}).get("annotations") or {}).get(
                RESTARTED_AT
            )
            patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: previous}}}}}
            self.kube.patch(workload["kind"], name, patch, patch_type="merge")
        for name in self.restarted:
            wait_ready(self.kube, by_name[name]["kind"], name, self.timeout)


# -- PostgreSQL ----------------------------------------------------------------------------------------
def alternate(current, owner):
    return "%s_b" % owner if current == "%s_a" % owner else "%s_a" % owner


def set_password(admin, role, owner, password):
    """Creates ``role`` (a login member of ``owner`` acting as it) if needed and gives it ``password``,
    sent as a SCRAM verifier."""
    from psycopg import sql

    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(role), sql.Identifier(owner))
        )
    member = admin.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (role, owner)).fetchone()[0]
    if not member:  # without it the login works but acts as itself, with none of the owner's privileges
        admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(role)))
    admin.execute(sql.SQL("ALTER ROLE {} SET role TO {}").format(sql.Identifier(role), sql.Literal(owner)))
    verifier = admin.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    admin.execute(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
    )


def remove_password(admin, role):
    from psycopg import sql

    admin.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(sql.Identifier(role)))


def end_sessions(admin, role):
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE usename = %s AND pid <> pg_backend_pid()",
        (role,),
    ).fetchall()
    return len(rows)


def login_works(database, user, password, acting_as=None):
    """Whether PostgreSQL accepts this login (and its session acts as ``acting_as``, when given): True,
    False (refused), or raises when unreachable."""
    import psycopg

    try:
        with psycopg.connect(
            host=database["host"],
            port=database["port"],
            user=user,
            password=password,
            dbname=database["name"],
            sslmode=database.get("sslmode") or "prefer",
            connect_timeout=5,
        ) as conn:
            return acting_as is None or conn.execute("SELECT current_user").fetchone()[0] == acting_as
    except psycopg.OperationalError as exc:
        text = str(exc)
        if (
            "password authentication failed" in text
            or "authentication" in text
            or "not permitted to log in" in text
        ):
            return False
        raise


def rotate_postgres(rotation, admin, database, owner):
    """The database password, by alternating users. Returns the entry (no value in it)."""
    previous = rotation.previous
    current = previous.get("username") or previous.get("user")
    if not current:
        raise RotationFailed("Secret %s has no username key" % rotation.name, True)
    target = alternate(current, owner)
    if rotation.check_mode:
        return dict(rotation.entry(True), user=target, previous_user=current)
    password = new_password()
    data = dict(previous, username=target, password=password)
    if "url" in previous:
        data["url"] = with_userinfo(previous["url"], target, password)
    set_password(admin, target, owner, password)
    rotation.write_secret(data)
    try:
        rotation.restart_all()
    except RotationFailed as exc:
        rotation.put_back()
        remove_password(admin, target)
        raise RotationFailed("%s; the previous credential and pods are back" % exc, True) from exc
    # Every pod uses the new role now: the old credential goes, and the sessions still open with it.
    remove_password(admin, current)
    ended = end_sessions(admin, current)
    accepted = login_works(database, target, password, acting_as=owner)
    refused = not login_works(database, current, previous.get("password", ""))
    if not (accepted and refused):
        raise RotationFailed(
            "after the rotation the new login is %s and the old one %s"
            % ("accepted" if accepted else "REFUSED", "refused" if refused else "STILL ACCEPTED"),
            False,
        )
    return dict(
        rotation.entry(True),
        user=target,
        previous_user=current,
        sessions_ended=ended,
        new_login_accepted=accepted,
        old_login_refused=refused,
    )


# -- API keys --------------------------------------------------------------------------------------------
def rotate_keys(rotation, check):
    """Every key of the Secret gets a new random value; ``check(old, new)`` judges each on the wire
    (the old key refused, the new one accepted) and returns what it saw."""
    previous = rotation.previous
    if rotation.check_mode:
        return rotation.entry(True)
    data = {k: new_password() for k in previous}
    rotation.write_secret(data)
    try:
        rotation.restart_all()
    except RotationFailed as exc:
        rotation.put_back()
        raise RotationFailed("%s; the previous keys and pods are back" % exc, True) from exc
    seen = check(previous, data) if check else None
    return dict(rotation.entry(True), wire=seen)


# -- keypairs --------------------------------------------------------------------------------------------
def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def run_command(argv, files, what, timeout):
    """Runs a configured command with ``{old}``/``{new}`` replaced by the files' paths; raises
    RotationFailed (put_back unknown to it: the caller says) on a non-zero exit."""
    filled = []
    for arg in argv:
        for name, path in files.items():
            arg = arg.replace("{%s}" % name, path)
        filled.append(arg)
    try:
        code = subprocess.call(
            filled,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RotationFailed(
            "%s (%s) did not run: %s" % (what, os.path.basename(argv[0]), type(exc).__name__), None
        ) from None
    if code != 0:
        raise RotationFailed("%s (%s) exited %d" % (what, os.path.basename(argv[0]), code), None)


def follow_up_pending(rotation, key):
    secret = rotation.kube.get("Secret", rotation.name)
    annotations = secret["metadata"].get("annotations") or {}
    return PREVIOUS % key in (secret.get("data") or {}) and annotations.get(FOLLOWED_UP) != rotation.incident


def run_follow_up(rotation, key, follow_up, folder, timeout):
    """The follow-up from the old keypair (kept in the Secret) to the new one, then the old one goes."""
    data = decoded(rotation.kube.get("Secret", rotation.name))
    folder = tempfile.mkdtemp(dir=folder)
    old, new = os.path.join(folder, "old.json"), os.path.join(folder, "new.json")
    write_private(old, data[PREVIOUS % key])
    write_private(new, data[key])
    run_command(follow_up, {"old": old, "new": new}, "the follow-up command", timeout)
    body = {"metadata": {"annotations": {FOLLOWED_UP: rotation.incident}}, "data": {PREVIOUS % key: None}}
    rotation.kube.patch("Secret", rotation.name, body, patch_type="merge")


def rotate_keypair(rotation, key, generator, follow_up, stop, timeout):
    """A new keypair from ``generator`` with ``stop``'s services stopped; the follow-up once per incident.
    Returns the entry (no value in it)."""
    if key not in rotation.previous:
        raise RotationFailed("Secret %s has no key %s" % (rotation.name, key), True)
    stopped = [s["name"] for s in stop]
    rotation.workloads = [w for w in rotation.workloads if w["metadata"]["name"] not in stopped]
    if rotation.check_mode:
        return dict(rotation.entry(not rotation.already()), stopped=stopped)
    folder = tempfile.mkdtemp(prefix="emergency-keypair-")  # 0700
    try:
        if rotation.already():  # rotated for this incident: only a follow-up that failed is left
            ran = bool(follow_up) and follow_up_pending(rotation, key)
            if ran:
                run_follow_up(rotation, key, follow_up, folder, timeout)
            return dict(rotation.entry(ran), stopped=[], followed_up=ran)
        if PREVIOUS % key in rotation.previous:
            # An earlier incident's transfer never ran: the key kept beside holds the funds. Its
            # transfer goes first; overwriting it would lose them.
            if not follow_up:
                raise RotationFailed(
                    "Secret %s still holds %s, whose follow-up never ran; nothing changed"
                    % (rotation.name, PREVIOUS % key),
                    True,
                )
            run_follow_up(rotation, key, follow_up, folder, timeout)
            rotation.previous = decoded(rotation.kube.get("Secret", rotation.name))
        # The compromised key signs nothing more from here on.
        scale_all(rotation.kube, stop, "down", rotation.incident, timeout)
        new = os.path.join(folder, "new.json")
        try:
            run_command(generator, {"new": new}, "the generator", timeout)
            with open(new) as handle:
                value = handle.read().strip()
            if not value:
                raise RotationFailed("the generator wrote an empty keypair", None)
        except (RotationFailed, OSError) as exc:
            scale_all(rotation.kube, stop, "restored", rotation.incident, timeout)
            raise RotationFailed("%s; the Secret is unchanged and the services are back" % exc, True) from exc
        data = dict(rotation.previous, **{key: value})
        if follow_up:  # kept until the follow-up has used it
            data[PREVIOUS % key] = rotation.previous[key]
        rotation.write_secret(data)
        failure = None
        if follow_up:
            try:
                run_follow_up(rotation, key, follow_up, folder, timeout)
            except RotationFailed as exc:
                failure = exc
        scale_all(rotation.kube, stop, "restored", rotation.incident, timeout)
        rotation.restart_all()
        if failure is not None:
            raise RotationFailed(
                "%s; the new keypair is in the Secret and serving, the previous one kept beside it as %s: "
                "a re-run for the incident runs the follow-up again" % (failure, PREVIOUS % key),
                False,
            )
        return dict(rotation.entry(True), stopped=stopped, followed_up=bool(follow_up))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
