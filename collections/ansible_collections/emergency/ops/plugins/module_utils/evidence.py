# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Evidence bundles: what the services and their database look like, captured before anything changes.

A bundle is a numbered folder (``001``, ``002``, ...) under the incident's evidence folder; a new
capture never overwrites one. Every file is 0600, every folder 0700, and ``manifest.json`` lists each
file's sha256 and size with who captured it, when and from where. The manifest's own sha256 goes on
the incident's timeline, so a changed file or a changed manifest is visible to ``verify``.

No secret value reaches a bundle: the namespace's Secrets are read (values kept in memory only) and
every form of each value (as is, base64, URL- and JSON-escaped) is replaced in every captured text,
database dump included, before it is written. Secrets themselves are captured as metadata only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import gzip
import hashlib
import json
import os
import platform
import re
import socket
import subprocess

try:
    from urllib.parse import quote, quote_plus
except ImportError:  # pragma: no cover - Python 2
    from urllib import quote, quote_plus

from ansible_collections.emergency.ops.plugins.module_utils import cache
from ansible_collections.emergency.ops.plugins.module_utils.kube import KubeError, selector_string

MANIFEST = "manifest.json"
# Values shorter than this are not searched for: replacing every "1" or "true" would destroy the
# evidence and protect nothing. The manifest says so.
MIN_SECRET_LENGTH = 6
# What the runbooks grep the application's logs for (401/403/500 and "auth").
SUSPICIOUS = re.compile(
    rb"(?:\b(?:401|403|500)\b|auth|unauthori[sz]ed|forbidden|invalid (?:user|password|token|key)"
    rb"|locked|refused)",
    re.IGNORECASE,
)
# Keys of a Secret that name where a service is, not how to get in: their values (a host, a port, a
# user name) are kept, or every address in every log would be lost to the redaction.
NOT_SECRET_KEYS = frozenset(("host", "hostname", "port", "user", "username", "database", "dbname", "db"))
KEEP_SUSPICIOUS = 200  # lines kept per container in auth.json; all are counted
NAMESPACE_KINDS = ("Service", "Ingress", "NetworkPolicy", "ConfigMap")


class EvidenceError(Exception):
    """The capture could not be made; ``outcome`` as the driver maps it."""

    def __init__(self, message, outcome="failed"):
        super(EvidenceError, self).__init__(message)
        self.outcome = outcome


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_duration(text):
    """``90s``, ``30m``, ``24h``, ``7d`` (or plain seconds) -> seconds; None for empty."""
    if text in (None, ""):
        return None
    match = re.match(r"^\s*(\d+)\s*([smhd]?)\s*$", str(text))
    if not match:
        raise EvidenceError("cannot read the duration %r; use for example 30m, 24h or 7d" % text, "invalid")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


# -- redaction ---------------------------------------------------------------------------------------
def forms_of(value):
    """Every form in which a secret value may show up in a captured text."""
    forms = set()
    candidates = [value] + [line.strip() for line in value.splitlines() if line.strip()]
    for raw in candidates:
        forms.add(raw)
        forms.add(base64.b64encode(raw))
        forms.add(base64.b64encode(raw).rstrip(b"="))
        forms.add(base64.urlsafe_b64encode(raw).rstrip(b"="))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        forms.add(quote(text, safe="").encode())
        forms.add(quote_plus(text).encode())
        forms.add(json.dumps(text)[1:-1].encode())
    return set(f for f in forms if len(f) >= MIN_SECRET_LENGTH)


class Redactor:
    """Replaces the namespace's secret values, in every form, by ``[redacted <secret>/<key>]``."""

    def __init__(self, secrets):
        self.names = {}
        for secret in secrets:
            name = secret["metadata"]["name"]
            for key, encoded in (secret.get("data") or {}).items():
                if key.lower() in NOT_SECRET_KEYS:
                    continue
                value = base64.b64decode(encoded or "")
                for form in forms_of(value):
                    self.names.setdefault(form, ("[redacted %s/%s]" % (name, key)).encode())
        ordered = sorted(self.names, key=len, reverse=True)  # the longest form first
        self.pattern = re.compile(b"|".join(re.escape(f) for f in ordered)) if ordered else None
        self.values = len(self.names)

    def __call__(self, data):
        if self.pattern is None:
            return data
        return self.pattern.sub(lambda m: self.names[m.group(0)], data)

    def json(self, document):
        return self(json.dumps(document, indent=1, sort_keys=True, default=str).encode() + b"\n")


def secret_metadata(secret):
    """Names, keys, type and versions of a Secret; never its data (nor the last-applied annotation,
    which holds the data as it was applied)."""
    meta = secret["metadata"]
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return {
        "name": meta["name"],
        "type": secret.get("type"),
        "keys": sorted((secret.get("data") or {}).keys()),
        "resourceVersion": meta.get("resourceVersion"),
        "creationTimestamp": meta.get("creationTimestamp"),
        "labels": meta.get("labels") or {},
        "annotations": annotations,
    }


# -- the bundle ----------------------------------------------------------------------------------------
class Bundle:
    """A new numbered folder under ``root``; ``write`` adds a file and records its hash."""

    def __init__(self, root, redact):
        os.makedirs(root, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)
        numbers = [int(n) for n in os.listdir(root) if n.isdigit()]
        number = max(numbers, default=0) + 1
        while True:  # mkdir is the claim: two captures at once get two numbers
            name = "%03d" % number
            try:
                os.mkdir(os.path.join(root, name), 0o700)
                break
            except FileExistsError:
                number += 1
        self.name = name
        self.path = os.path.join(root, name)
        self.redact = redact
        self.files = []

    def _open(self, relative):
        path = os.path.join(self.path, relative)
        folder = self.path
        for part in os.path.dirname(relative).split(os.sep) if os.path.dirname(relative) else []:
            folder = os.path.join(folder, part)
            if not os.path.isdir(folder):
                os.mkdir(folder, 0o700)  # each level: makedirs applies the mode to the last one only
        return path, os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def write(self, relative, data):
        path, handle = self._open(relative)
        with handle:
            handle.write(self.redact(data))
        self._record(relative, path)

    def write_json(self, relative, document):
        self.write(relative, json.dumps(document, indent=1, sort_keys=True, default=str).encode() + b"\n")

    def write_stream(self, relative, lines, compress=False):
        """Writes an iterable of byte lines, each redacted, gzipped when ``compress``."""
        path, handle = self._open(relative)
        with handle:
            sink = gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) if compress else handle
            try:
                for line in lines:
                    sink.write(self.redact(line))
            finally:
                if compress:
                    sink.close()
        self._record(relative, path)

    def _record(self, relative, path):
        self.files.append(
            {"path": relative, "sha256": sha256_of(path), "size": os.path.getsize(path), "at": iso(utcnow())}
        )

    def seal(self, about):
        """Writes the manifest (not redacted: it holds only hashes and the capture's context)."""
        manifest = dict(about, bundle=self.name, files=sorted(self.files, key=lambda f: f["path"]))
        data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
        _path, handle = self._open(MANIFEST)
        with handle:
            handle.write(data)
        return manifest, hashlib.sha256(data).hexdigest()


# -- what is captured -----------------------------------------------------------------------------------
def event_time(event):
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event["metadata"].get("creationTimestamp")
        or ""
    )


def read_log(kube, pod, container, previous, since):
    """A container's log (bytes), or None with the API's reason when there is none (no previous one)."""
    query = {"container": container, "timestamps": "true"}
    if previous:
        query["previous"] = "true"
    if since:
        query["sinceSeconds"] = str(since)
    try:
        return kube.raw("GET", kube.path("Pod", pod, "log"), query=query), None
    except KubeError as exc:
        if exc.status in (400, 404):
            return None, str(exc)
        raise


def workloads_and_pods(kube, services):
    """The services' workloads, their ReplicaSets and their pods."""
    workloads, replicasets, pods = [], [], []
    for service in services:
        obj = kube.get_or_none(service["kind"], service["name"])
        if obj is None:
            raise EvidenceError("%s %s does not exist" % (service["kind"], service["name"]), "refused")
        workloads.append(obj)
        labels = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
        if not labels:
            continue
        selector = selector_string(labels)
        if service["kind"] == "Deployment":
            replicasets += [
                rs
                for rs in kube.list("ReplicaSet", label_selector=selector)
                if any(o.get("name") == service["name"] for o in rs["metadata"].get("ownerReferences") or [])
            ]
        pods += kube.list("Pod", label_selector=selector)
    return workloads, replicasets, pods


def capture_logs(kube, bundle, pods, since):
    """Every container's log, current and previous; returns what was found and the suspicious lines."""
    logs, findings = [], []
    for pod in pods:
        name = pod["metadata"]["name"]
        statuses = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        for container in [c["name"] for c in pod["spec"].get("containers") or []]:
            restarts = statuses.get(container, {}).get("restartCount", 0)
            for previous in (False, True):
                if previous and not restarts:
                    continue
                data, why = read_log(kube, name, container, previous, since)
                relative = "logs/%s/%s%s.log" % (name, container, ".previous" if previous else "")
                entry = {"pod": name, "container": container, "previous": previous}
                if data is None:
                    logs.append(dict(entry, missing=why))
                    continue
                bundle.write(relative, data)
                logs.append(dict(entry, file=relative, lines=data.count(b"\n")))
                hits = [line for line in data.splitlines() if SUSPICIOUS.search(line)]
                if hits:
                    findings.append(
                        dict(
                            entry,
                            count=len(hits),
                            status_401=sum(1 for h in hits if b" 401" in h or b"401 " in h),
                            status_403=sum(1 for h in hits if b" 403" in h or b"403 " in h),
                            status_500=sum(1 for h in hits if b" 500" in h or b"500 " in h),
                            lines=[
                                bundle.redact(h).decode("utf-8", "replace") for h in hits[-KEEP_SUSPICIOUS:]
                            ],
                        )
                    )
    return logs, findings


def pg_client(name, client_bin):
    return os.path.join(client_bin, name) if client_bin else name


def capture_database(bundle, database, data, client_bin, env):
    """A pg_dump of the live database (plain SQL, gzipped, redacted line by line) or, without data, its
    schema and row counts; and who is connected."""
    import psycopg

    name = database["name"]
    taken = {"database": name, "data": bool(data)}
    conninfo = dict(
        host=database["host"],
        port=database["port"],
        user=database["user"],
        password=database.get("password") or None,
        dbname=name,
        sslmode=database.get("sslmode") or "prefer",
        connect_timeout=5,
        application_name="emergency.ops evidence",
    )
    try:
        conn = psycopg.connect(autocommit=True, **conninfo)
    except psycopg.OperationalError as exc:
        raise EvidenceError(
            "cannot reach PostgreSQL at %s:%s: %s" % (database["host"], database["port"], exc), "unreachable"
        ) from exc
    with conn:
        sessions = conn.execute(
            "SELECT pid, usename, application_name, client_addr::text, state, backend_start, "
            "state_change, query FROM pg_stat_activity WHERE datname IS NOT NULL ORDER BY pid"
        ).fetchall()
        keys = ("pid", "user", "application", "client", "state", "backend_start", "state_change", "query")
        bundle.write_json(
            "database/sessions.json", [{k: row[i] for i, k in enumerate(keys)} for row in sessions]
        )
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        counts = {}
        for schema, relname in tables:
            counts["%s.%s" % (schema, relname)] = conn.execute(
                'SELECT count(*) FROM "%s"."%s"' % (schema.replace('"', '""'), relname.replace('"', '""'))
            ).fetchone()[0]
        bundle.write_json("database/row_counts.json", counts)
        taken["tables"] = len(counts)
    argv = [pg_client("pg_dump", client_bin), "--format=plain", "--no-password", "--dbname", name]
    if not data:
        argv.append("--schema-only")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    relative = "database/pg_dump.sql.gz" if data else "database/schema.sql"
    try:
        bundle.write_stream(relative, iter(proc.stdout.readline, b""), compress=bool(data))
    finally:
        proc.stdout.close()
        errors = proc.stderr.read()
        code = proc.wait()
    if code != 0:
        raise EvidenceError("pg_dump failed: %s" % bundle.redact(errors).decode("utf-8", "replace")[-500:])
    taken["file"] = relative
    return taken


def capture_redis(bundle, redis_settings):
    """Redis ``INFO`` (all sections); its password comes from a file and never leaves this process."""
    import redis

    try:
        info = cache.client(redis_settings).info("everything")
    except redis.RedisError as exc:
        raise EvidenceError(
            "cannot read Redis INFO at %s: %s" % (redis_settings["url"].split("@")[-1], exc), "unreachable"
        ) from exc
    lines = [
        "%s:%s" % (k, json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
        for k, v in sorted(info.items())
    ]
    bundle.write("redis/info.txt", ("\n".join(lines) + "\n").encode())
    return {"file": "redis/info.txt", "version": info.get("redis_version")}


def tool_versions(client_bin):
    versions = {"python": platform.python_version()}
    try:
        from ansible.module_utils.ansible_release import __version__ as ansible_version

        versions["ansible-core"] = ansible_version
    except ImportError:
        pass
    try:
        import kubernetes

        versions["kubernetes-client"] = kubernetes.__version__
    except ImportError:
        pass
    try:
        out = subprocess.run(
            [pg_client("pg_dump", client_bin), "--version"], capture_output=True, text=True, check=False
        )
        versions["pg_dump"] = out.stdout.strip()
    except OSError:
        pass
    return versions


def capture(
    kube,
    root,
    services,
    incident,
    captured_by,
    since=None,
    database=None,
    data=True,
    client_bin=None,
    pg_environment=None,
    redis_settings=None,
    cluster=None,
):
    """Captures one bundle under ``root``; returns ``(bundle, manifest, manifest sha256, summary)``."""
    secrets = kube.list("Secret")
    redact = Redactor(secrets)
    started = utcnow()
    bundle = Bundle(root, redact)
    about = {
        "incident": incident,
        "captured_by": captured_by,
        "started_at": iso(started),
        "from": {
            "cluster": cluster,
            "namespace": kube.namespace,
            "controller": socket.getfqdn(),
            "tools": tool_versions(client_bin),
        },
        "since_seconds": since,
        "redaction": {
            "secrets": len(secrets),
            "forms": redact.values,
            "note": "secret values of %d or more characters are replaced, as is, base64, URL- and "
            "JSON-escaped (except keys naming a host, port, user or database); Secrets are kept as "
            "metadata only" % MIN_SECRET_LENGTH,
        },
    }
    try:
        summary = capture_into(
            kube, bundle, secrets, services, since, database, data, client_bin, pg_environment, redis_settings
        )
    except Exception as exc:
        # What was captured stays, sealed and marked incomplete: it is evidence too.
        manifest, digest = bundle.seal(dict(about, captured_at=iso(utcnow()), complete=False, error=str(exc)))
        exc.bundle = (bundle, manifest, digest)
        raise
    manifest, digest = bundle.seal(dict(about, captured_at=iso(utcnow()), complete=True))
    return bundle, manifest, digest, summary


def capture_into(
    kube, bundle, secrets, services, since, database, data, client_bin, pg_environment, redis_settings
):
    """Writes every part of the capture into ``bundle``; returns the summary."""
    workloads, replicasets, pods = workloads_and_pods(kube, services)
    bundle.write_json("kubernetes/workloads.json", workloads)
    bundle.write_json("kubernetes/replicasets.json", replicasets)
    bundle.write_json("kubernetes/pods.json", pods)
    for kind in NAMESPACE_KINDS:
        bundle.write_json("kubernetes/%s.json" % kind.lower(), kube.list(kind))
    bundle.write_json("kubernetes/secrets.json", [secret_metadata(s) for s in secrets])
    events = sorted(kube.list("Event"), key=event_time)
    bundle.write_json("kubernetes/events.json", events)
    logs, findings = capture_logs(kube, bundle, pods, since)
    bundle.write_json("auth.json", findings)
    summary = {
        "services": [s["name"] for s in services],
        "pods": [p["metadata"]["name"] for p in pods],
        "logs": len([entry for entry in logs if entry.get("file")]),
        "logs_missing": [entry for entry in logs if entry.get("missing")],
        "events": len(events),
        "suspicious_lines": sum(f["count"] for f in findings),
        "database": None,
        "redis": None,
    }
    if database:
        summary["database"] = capture_database(bundle, database, data, client_bin, pg_environment)
    if redis_settings:
        summary["redis"] = capture_redis(bundle, redis_settings)
    return summary


# -- verify ---------------------------------------------------------------------------------------------
def verify_bundle(folder, expected_manifest=None):
    """Problems of one local bundle: files changed, missing or added, or a manifest that is not the one
    recorded on the timeline (``expected_manifest``, its sha256)."""
    problems = []
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        manifest = json.loads(raw)
    except (OSError, ValueError) as exc:
        return ["%s: no readable manifest (%s)" % (folder, exc)], None
    digest = hashlib.sha256(raw).hexdigest()
    if expected_manifest and digest != expected_manifest:
        problems.append(
            "%s changed (sha256 %s, the timeline recorded %s)" % (path, digest, expected_manifest)
        )
    listed = set()
    for entry in manifest.get("files", []):
        listed.add(entry["path"])
        target = os.path.join(folder, entry["path"])
        if not os.path.isfile(target):
            problems.append("%s is missing" % target)
        elif sha256_of(target) != entry["sha256"]:
            problems.append("%s changed (sha256 differs from the manifest)" % target)
    for base, _dirs, files in os.walk(folder):
        for name in files:
            relative = os.path.relpath(os.path.join(base, name), folder)
            if relative != MANIFEST and relative not in listed:
                problems.append("%s was added after the capture" % os.path.join(folder, relative))
    return problems, digest


def verify_uploaded(store, prefix, manifest, manifest_sha256):
    """Problems of a bundle's copy in the bucket: each object hashed again from its content."""
    problems = []
    for entry in [*manifest.get("files", []), {"path": MANIFEST, "sha256": manifest_sha256}]:
        key = "%s/%s" % (prefix, entry["path"])
        digest = hashlib.sha256()
        try:
            for chunk in store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].iter_chunks(1 << 20):
                digest.update(chunk)
        except Exception as exc:  # missing object, unreachable store
            problems.append("s3://%s/%s cannot be read: %s" % (store.bucket, key, exc))
            continue
        if digest.hexdigest() != entry["sha256"]:
            problems.append("s3://%s/%s changed (sha256 differs from the manifest)" % (store.bucket, key))
    return problems


def upload(store, bundle_path, prefix, retention_days):
    """Copies every file of the bundle to ``prefix`` in the bucket, under S3 Object Lock retention when
    the bucket has Object Lock enabled. Returns whether the lock applied."""
    locked = False
    try:
        config = store.s3.get_object_lock_configuration(Bucket=store.bucket)
        locked = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
    except Exception:  # no Object Lock on this bucket (or not supported by the store)
        locked = False
    extra = {}
    if locked and retention_days:
        extra = {
            "ObjectLockMode": "GOVERNANCE",
            "ObjectLockRetainUntilDate": utcnow() + datetime.timedelta(days=retention_days),
        }
    for base, _dirs, files in os.walk(bundle_path):
        for name in sorted(files):
            full = os.path.join(base, name)
            relative = os.path.relpath(full, bundle_path)
            store.s3.upload_file(
                full,
                store.bucket,
                "%s/%s" % (prefix, relative),
                ExtraArgs=dict(ServerSideEncryption="AES256", **extra),
            )
    return locked
