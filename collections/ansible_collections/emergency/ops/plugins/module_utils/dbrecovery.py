# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""What the database-recovery modules share: backup ids, the S3 backup store, PostgreSQL access.

A backup lives in the bucket under ``<prefix>/<id>/``: the files of a directory-format ``pg_dump``
under ``dump/`` and, written last, ``manifest.json``. A backup without a manifest is incomplete (its
run was interrupted) and is never restored. Ids are UTC times with microseconds
(``20261123T081512.123456Z``): sorted as strings they are in time order, so backups are ordered by
id, never by S3's LastModified, which has one-second resolution.

Databases the procedures create or keep carry a JSON marker in their comment
(``COMMENT ON DATABASE``), which is how a re-run for the same incident knows what is already done
and how ``restore-cleanup`` finds the databases it may drop.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

try:
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    HAS_BOTO3 = True
except ImportError:  # reported by the module
    HAS_BOTO3 = False

try:
    import psycopg
    from psycopg import sql

    HAS_PSYCOPG = True
except ImportError:  # reported by the module
    HAS_PSYCOPG = False

from ansible_collections.emergency.ops.plugins.module_utils import times
from ansible_collections.emergency.ops.plugins.module_utils.times import iso_precise  # noqa: F401  # pylint: disable=unused-import

ID_FORMAT = "%Y%m%dT%H%M%S.%fZ"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "emergency-ops/backup-manifest/v1"
MARKER_KEY = "emergency.ops"
CHUNK = 1024 * 1024


class Failure(Exception):
    """A failure with the outcome the driver maps to an exit code (invalid, refused, unreachable)."""

    def __init__(self, message, outcome="failed"):
        super(Failure, self).__init__(message)
        self.outcome = outcome


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_backup_id(moment=None):
    return (moment or utcnow()).strftime(ID_FORMAT)


def backup_time(backup_id):
    return datetime.datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=datetime.timezone.utc)


def parse_when(text):
    """An operator's time as psql, ``date -Is``, a log or ISO 8601 prints it (see ``times.parse_when``),
    in UTC; raises ``Failure`` (``invalid``) for anything else."""
    try:
        return times.parse_when(text)
    except ValueError as exc:
        raise Failure(str(exc), "invalid") from None


def incident_suffix(incident):
    """The incident as a part of a database name: lowercase letters, digits and underscores."""
    return re.sub(r"[^a-z0-9]+", "_", incident.lower()).strip("_")


def derived_name(database, role, incident):
    """``<db>_<role>_<incident>``, within PostgreSQL's 63-byte limit."""
    name = "%s_%s_%s" % (database, role, incident_suffix(incident))
    if len(name) > 63:
        digest = hashlib.sha256(incident.encode()).hexdigest()[:8]
        name = "%s_%s_%s" % (database[: 63 - len(role) - 10], role, digest)
    return name


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- S3 ----------------------------------------------------------------------------------------------
class Store:
    """The backup bucket. Every call raises ``Failure``: unreachable, or invalid for a missing bucket."""

    def __init__(
        self,
        bucket,
        prefix="postgres",
        endpoint_url=None,
        region="us-east-1",
        access_key=None,
        secret_key=None,
        **_ignored,
    ):
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        config = BotoConfig(
            connect_timeout=5,
            read_timeout=120,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=16,
        )
        kwargs = dict(region_name=region, endpoint_url=endpoint_url or None, config=config)
        if access_key and secret_key:
            kwargs.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        self.s3 = boto3.client("s3", **kwargs)
        self.endpoint = endpoint_url or "s3.%s.amazonaws.com" % region

    def key(self, *parts):
        return "/".join([p for p in (self.prefix, *parts) if p])

    def call(self, what, function, **kwargs):
        try:
            return function(**kwargs)
        except EndpointConnectionError as exc:
            raise Failure(
                "cannot reach the backup store %s: %s" % (self.endpoint, exc), "unreachable"
            ) from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",):
                raise Failure(
                    "bucket %s does not exist at %s" % (self.bucket, self.endpoint), "invalid"
                ) from exc
            if code in ("NoSuchKey", "404"):
                raise
            raise Failure("%s: %s" % (what, exc)) from exc
        except BotoCoreError as exc:  # timeouts, broken connections
            raise Failure(
                "cannot reach the backup store %s: %s" % (self.endpoint, exc), "unreachable"
            ) from exc

    def check(self):
        self.call("read the bucket", self.s3.head_bucket, Bucket=self.bucket)

    def backup_ids(self):
        """Every backup id under the prefix, complete or not, oldest first (ordered by id)."""
        ids = []
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = self.call(
            "list backups",
            lambda: list(
                paginator.paginate(
                    Bucket=self.bucket, Prefix=self.key("") + "/" if self.prefix else "", Delimiter="/"
                )
            ),
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if ID_PATTERN.match(name):
                    ids.append(name)
        return sorted(ids)

    def manifest(self, backup_id):
        try:
            body = self.call(
                "read manifest", self.s3.get_object, Bucket=self.bucket, Key=self.key(backup_id, MANIFEST)
            )["Body"].read()
        except ClientError:
            return None
        return json.loads(body)

    def complete_backups(self, newest_first=True, limit=None):
        """Yields ``(id, manifest)`` of complete backups, newest first by default."""
        ids = self.backup_ids()
        found = 0
        for backup_id in reversed(ids) if newest_first else ids:
            manifest = self.manifest(backup_id)
            if manifest is None:
                continue
            yield backup_id, manifest
            found += 1
            if limit and found >= limit:
                return

    def upload(self, path, key, sha256):
        self.call(
            "upload %s" % key,
            self.s3.upload_file,
            Filename=path,
            Bucket=self.bucket,
            Key=key,
            ExtraArgs={"Metadata": {"sha256": sha256}},
        )

    def put_json(self, key, document):
        self.call(
            "write %s" % key,
            self.s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
        )

    def download_verified(self, key, path, sha256, size):
        """Streams one object to ``path`` hashing it on the way; returns the error or None."""
        response = self.call("download %s" % key, self.s3.get_object, Bucket=self.bucket, Key=key)
        digest, length = hashlib.sha256(), 0
        with open(path, "wb") as handle:
            for chunk in response["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                handle.write(chunk)
                length += len(chunk)
        if length != size or digest.hexdigest() != sha256:
            return "%s: sha256 %s size %d, manifest says sha256 %s size %d" % (
                key,
                digest.hexdigest(),
                length,
                sha256,
                size,
            )
        return None

    def delete_backup(self, backup_id):
        """Deletes every object of one backup, the manifest first so it is never half-listed as complete."""
        self.call(
            "delete manifest", self.s3.delete_object, Bucket=self.bucket, Key=self.key(backup_id, MANIFEST)
        )
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = self.call(
            "list %s" % backup_id,
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self.key(backup_id) + "/")),
        )
        keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            self.call(
                "delete %s" % backup_id,
                self.s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": keys[start : start + 1000], "Quiet": True},
            )
        return len(keys) + 1


def store_from(params):
    return Store(**params)


# -- PostgreSQL ------------------------------------------------------------------------------------
def connect(database, dbname=None, autocommit=True):
    """An admin connection; unreachable servers and refused logins become ``Failure``."""
    try:
        return psycopg.connect(
            host=database["host"],
            port=database["port"],
            user=database["user"],
            password=database.get("password") or None,
            dbname=dbname or "postgres",
            sslmode=database.get("sslmode") or "prefer",
            connect_timeout=5,
            autocommit=autocommit,
            application_name="emergency.ops",
        )
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        if "authentication" in text or "password" in text or "does not exist" in text:
            raise Failure(
                "PostgreSQL at %s:%s refused the login: %s" % (database["host"], database["port"], text),
                "invalid",
            ) from exc
        raise Failure(
            "cannot reach PostgreSQL at %s:%s: %s" % (database["host"], database["port"], text), "unreachable"
        ) from exc


def pg_env(database):
    """Environment for pg_dump/pg_restore: the password goes through PGPASSWORD, never argv."""
    env = dict(os.environ)
    env.update(
        PGHOST=database["host"],
        PGPORT=str(database["port"]),
        PGUSER=database["user"],
        PGSSLMODE=database.get("sslmode") or "prefer",
        PGCONNECT_TIMEOUT="5",
    )
    if database.get("password"):
        env["PGPASSWORD"] = database["password"]
    return env


def user_tables(conn):
    """Ordinary tables outside the system schemas, as ``schema.table``."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
        "AND c.relpersistence <> 't' ORDER BY 1, 2"
    ).fetchall()
    return [tuple(row) for row in rows]


def row_counts(conn):
    counts = {}
    for schema, table in user_tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts["%s.%s" % (schema, table)] = conn.execute(query).fetchone()[0]
    return counts


def databases(conn):
    """Every non-template database: name, owner, size, whether it accepts connections, its marker."""
    rows = conn.execute(
        "SELECT d.datname, pg_get_userbyid(d.datdba), pg_database_size(d.oid), d.datallowconn, "
        "shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE NOT d.datistemplate ORDER BY 1"
    ).fetchall()
    result = {}
    for name, owner, size, allow, comment in rows:
        result[name] = dict(
            name=name,
            owner=owner,
            size=size,
            allow_connections=allow,
            marker=read_marker(comment),
            comment=comment,
        )
    return result


def read_marker(comment):
    if not comment:
        return None
    try:
        document = json.loads(comment)
    except ValueError:
        return None
    return document.get(MARKER_KEY) if isinstance(document, dict) else None


def set_marker(conn, name, marker):
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(json.dumps({MARKER_KEY: marker}, sort_keys=True))
        )
    )


def terminate(conn, names):
    """Terminates every other session on the named databases; returns who was connected."""
    rows = conn.execute(
        "SELECT pid, datname, usename, application_name, client_addr::text FROM pg_stat_activity "
        "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
        (list(names),),
    ).fetchall()
    for pid, _datname, _user, _app, _addr in rows:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return [dict(database=d, user=u, application_name=a, client=c) for _p, d, u, a, c in rows]


def allow_connections(conn, name, allow):
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")
        )
    )


def fail(module, exc, **extra):
    outcome = getattr(exc, "outcome", "failed")
    module.fail_json(msg=str(exc), outcome=outcome, **extra)


PG_DUMP = os.environ.get("EMERGENCY_PG_DUMP", "pg_dump")


def client(program, client_bin=None):
    """pg_dump or pg_restore: the EMERGENCY_PG_* override (a test's stand-in) first, then the one in
    ``client_bin`` (the inventory's folder for the server's version), then the one on PATH (Debian's
    wrapper runs the newest installed, which reads and writes older servers)."""
    override = os.environ.get("EMERGENCY_%s" % program.upper())
    if override:
        return override
    return os.path.join(client_bin, program) if client_bin else program


def process_tree(root):
    """The pid of pg_dump and of its worker processes."""
    pids, parents = {root}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in pids and pid not in pids:
                pids.add(pid)
                grew = True
    return pids


def open_files(pids):
    paths = set()
    for pid in pids:
        folder = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(folder):
                try:
                    paths.add(os.readlink(os.path.join(folder, fd)))
                except OSError:
                    continue
        except OSError:
            continue
    return paths


class Pipeline:
    """Uploads each file pg_dump has finished (closed by every pg_dump process) and deletes it."""

    def __init__(self, store, backup_id, folder):
        self.store, self.backup_id, self.folder = store, backup_id, folder
        self.objects, self.peak = {}, 0

    def ship(self, name):
        path = os.path.join(self.folder, name)
        size = os.path.getsize(path)
        digest = sha256_file(path)
        self.store.upload(path, self.store.key(self.backup_id, "dump", name), digest)
        self.objects["dump/" + name] = {"sha256": digest, "size": size}
        os.unlink(path)

    def pending(self):
        return sorted(n for n in os.listdir(self.folder) if "dump/" + n not in self.objects)

    def run(self, proc):
        while proc.poll() is None:
            names = self.pending()
            if names:
                self.peak = max(self.peak, sum(os.path.getsize(os.path.join(self.folder, n)) for n in names))
                busy = open_files(process_tree(proc.pid))
                for name in names:
                    # toc.dat is written when pg_dump finishes; it is shipped once pg_dump has exited.
                    if name != "toc.dat" and os.path.join(self.folder, name) not in busy:
                        self.ship(name)
            time.sleep(0.2)
        if proc.returncode == 0:
            for name in self.pending():
                self.ship(name)


def count_rows(conn, counts, problems):
    try:
        counts.update(row_counts(conn))
    except Exception as exc:  # reported by the caller once pg_dump is done
        problems.append(exc)


def dump(conn, snapshot, created, database, store, incident, jobs, compression, workdir, client_bin=None):
    """Dumps the database as of ``snapshot`` (exported by ``conn``, whose transaction stays open) to the
    store; returns ``(backup_id, manifest, peak_local_bytes)``."""
    backup_id = new_backup_id(created)
    version = conn.execute("SHOW server_version").fetchone()[0]
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    staging = tempfile.mkdtemp(prefix="emergency-backup-", dir=workdir)
    os.chmod(staging, 0o700)
    folder = os.path.join(staging, "dump")
    try:
        argv = [
            client("pg_dump", client_bin),
            "--format=directory",
            "--jobs=%d" % jobs,
            "--compress=%d" % compression,
            "--snapshot=%s" % snapshot,
            "--file=%s" % folder,
            "--dbname=%s" % database["name"],
            "--no-password",
        ]
        # pg_dump runs as a child so its files can be shipped while it writes the next ones.
        errors = open(os.path.join(staging, "pg_dump.err"), "w+")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(argv, env=pg_env(database), stdout=subprocess.DEVNULL, stderr=errors)
        while not os.path.isdir(folder) and proc.poll() is None:
            time.sleep(0.05)
        # The counts come from the exported snapshot: exactly the rows pg_dump dumps. They are
        # taken while the pipeline ships files, so the dump does not pile up on local disk.
        counts, problems = {}, []
        counter = threading.Thread(target=count_rows, args=(conn, counts, problems))
        counter.start()
        pipeline = Pipeline(store, backup_id, folder)
        if os.path.isdir(folder):
            pipeline.run(proc)
        proc.wait()
        counter.join()
        conn.rollback()
        if problems:
            raise Failure("counting the rows in the dump's snapshot failed: %s" % problems[0])
        if proc.returncode != 0:
            errors.seek(0)
            raise Failure("pg_dump failed (exit %d): %s" % (proc.returncode, errors.read()[-1500:]))
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "id": backup_id,
            "database": database["name"],
            "server_version": version,
            "created_at": iso(created),
            "incident": incident,
            "format": "pg_dump directory",
            "jobs": jobs,
            "database_bytes": size,
            "objects": pipeline.objects,
            "row_counts": counts,
        }
        # Written last: a backup without its manifest is incomplete and never restored.
        store.put_json(store.key(backup_id, MANIFEST), manifest)
    finally:
        if "errors" in locals():
            errors.close()
        shutil.rmtree(staging, ignore_errors=True)
    return backup_id, manifest, pipeline.peak


# -- restore: resolve, fetch and verify, restore beside, swap -----------------------------------
def describe(backup_id, manifest):
    return {
        "id": backup_id,
        "database": manifest.get("database"),
        "created_at": manifest.get("created_at"),
        "server_version": manifest.get("server_version"),
        "incident": manifest.get("incident"),
        "objects": len(manifest.get("objects", {})),
        "bytes": sum(o["size"] for o in manifest.get("objects", {}).values()),
        "row_counts": manifest.get("row_counts", {}),
    }


def resolve(store, backup, before):
    newest = [i for i, _m in store.complete_backups(limit=5)]
    if before:
        moment = parse_when(before)
        for backup_id, manifest in store.complete_backups():
            if backup_time(backup_id) < moment:
                return describe(backup_id, manifest), newest
        raise Failure(
            "no complete backup made before %s; newest: %s"
            % (moment.isoformat(), ", ".join(newest) or "none"),
            "invalid",
        )
    if backup in (None, "", "latest"):
        if not newest:
            raise Failure("the backup store holds no complete backup", "invalid")
        return describe(newest[0], store.manifest(newest[0])), newest
    if not ID_PATTERN.match(backup):
        raise Failure(
            "%r is not a backup id (like 20261123T081512.123456Z); newest: %s"
            % (backup[:40], ", ".join(newest) or "none"),
            "invalid",
        )
    manifest = store.manifest(backup)
    if manifest is None:
        raise Failure(
            "no complete backup %s in the store; newest: %s" % (backup, ", ".join(newest) or "none"),
            "invalid",
        )
    return describe(backup, manifest), newest


def fetch(store, backup_id, dest, check_mode):
    manifest = store.manifest(backup_id)
    if manifest is None:
        raise Failure("no complete backup %s in the store" % backup_id, "invalid")
    if check_mode:
        return describe(backup_id, manifest)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    jobs = []
    for name, meta in sorted(manifest["objects"].items()):
        path = os.path.join(dest, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        jobs.append((store.key(backup_id, name), path, meta["sha256"], meta["size"]))
    # Each object is hashed while it streams in (one pass); several stream at once.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(lambda job: store.download_verified(*job), jobs) if p]
    if problems:
        raise Failure(
            "backup %s failed its checksum verification; no database was touched: %s"
            % (backup_id, "; ".join(problems[:5])),
            "refused",
        )
    return describe(backup_id, manifest)


def count_side(database, side, jobs):
    """Counts every table of the side database, on several connections at once."""
    with connect(database, side) as conn:
        tables = user_tables(conn)

    def count(batch):
        result = {}
        with connect(database, side) as conn:
            for schema, table in batch:
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                result["%s.%s" % (schema, table)] = conn.execute(query).fetchone()[0]
        return result

    batches = [tables[i::jobs] for i in range(jobs) if tables[i::jobs]]
    counts = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(batches))) as pool:
        for part in pool.map(count, batches):
            counts.update(part)
    return counts


def compare(expected, actual):
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append("%s: missing (manifest %d rows)" % (table, expected[table]))
        elif table not in expected:
            problems.append("%s: not in the manifest" % table)
        elif expected[table] != actual[table]:
            problems.append("%s: %d rows, manifest %d" % (table, actual[table], expected[table]))
    return problems


class Mismatch(Failure):
    """The restored rows differ from the manifest's counts."""

    def __init__(self, message, mismatches, counts):
        super(Mismatch, self).__init__(message)
        self.mismatches, self.counts = mismatches, counts


def side_state(present, side, backup_id, live):
    """Whether ``side`` already holds ``backup_id`` verified; refuses a database no restore made."""
    if side == live:
        raise Failure("the side database cannot be the live database", "invalid")
    existing = present.get(side)
    marker = (existing or {}).get("marker") or {}
    if existing and marker.get("role") != "side":
        raise Failure(
            "database %s exists and was not created by a restore; refusing to replace it" % side, "refused"
        )
    return bool(marker.get("role") == "side" and marker.get("backup") == backup_id and marker.get("verified"))


def restore_side(
    conn, database, present, side, backup, source, incident, jobs, owner=None, timings=None, client_bin=None
):
    """Creates ``side`` (owner, encoding and collation of the live database), restores the verified
    directory-format dump in ``source/dump`` into it with ``pg_restore --jobs``, and counts every table
    on ``jobs`` connections against the manifest. A side database already verified for the same backup
    is not restored again; one left unverified by an interrupted run is dropped and restored again.
    Returns ``(changed, row_counts)``; raises ``Mismatch`` when the counts differ from the manifest's.
    ``timings``, when given, gets the seconds pg_restore and the counts took."""
    timings = {} if timings is None else timings
    live = database["name"]
    done = side_state(present, side, backup["id"], live)
    marker = {"role": "side", "incident": incident, "backup": backup["id"], "verified": False}
    if not done:
        if side in present:  # left unverified by an interrupted run: start again
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(side)))
        template = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            (live,),
        ).fetchone() or ("UTF8", None, None)
        owner = present[live]["owner"] if live in present else (owner or database["user"])
        create = sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {}").format(
            sql.Identifier(side), sql.Identifier(owner), sql.Literal(template[0])
        )
        if template[1]:
            create += sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
                sql.Literal(template[1]), sql.Literal(template[2])
            )
        conn.execute(create)
        set_marker(conn, side, dict(marker, at=iso(utcnow())))
        # pg_restore is run directly: community.postgresql.postgresql_db restores on one core only
        # (its issue 594) and chooses pg_restore only for a .pgc file.
        argv = [
            client("pg_restore", client_bin),
            "--format=directory",
            "--jobs=%d" % jobs,
            "--exit-on-error",
            "--no-password",
            "--dbname=%s" % side,
            os.path.join(source, "dump"),
        ]
        started = time.monotonic()
        proc = subprocess.run(argv, env=pg_env(database), capture_output=True, text=True, check=False)
        timings["pg_restore"] = round(time.monotonic() - started, 2)
        if proc.returncode != 0:
            raise Failure(
                "pg_restore into %s failed (exit %d): %s"
                % (side, proc.returncode, proc.stderr.strip()[-1500:])
            )
    started = time.monotonic()
    counts = count_side(database, side, jobs)
    timings["count"] = round(time.monotonic() - started, 2)
    problems = compare(backup.get("row_counts") or {}, counts)
    if problems:
        raise Mismatch(
            "the restored rows differ from the backup's manifest: %s" % "; ".join(problems[:10]),
            problems,
            counts,
        )
    if not done:
        set_marker(conn, side, dict(marker, verified=True, at=iso(utcnow())))
    return not done, counts


def smoke(database, side, queries):
    """Runs each query on ``side``: it must return exactly one row whose first column is true."""
    passed = []
    with connect(database, side) as conn:
        for query in queries:
            try:
                rows = conn.execute(query["sql"]).fetchall()
            except psycopg.Error as exc:
                raise Failure("smoke query %r failed on %s: %s" % (query["name"], side, exc)) from exc
            if len(rows) != 1 or not rows[0] or not rows[0][0]:
                raise Failure(
                    "smoke query %r did not return true on %s: %r" % (query["name"], side, rows[:2])
                )
            passed.append(query["name"])
    return passed


def live_swap(present, live):
    """The swap marker on the live database (which incident swapped it in, how), or {}."""
    return ((present.get(live) or {}).get("marker") or {}).get("swap") or {}


def rename(conn, old, new):
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


class SwapFailed(Failure):
    """The swap failed; ``rolled_back`` says whether the old live database is confirmed back."""

    def __init__(self, message, rolled_back, terminated):
        super(SwapFailed, self).__init__(message)
        self.rolled_back, self.terminated = rolled_back, terminated


def swap_databases(conn, present, live, replacement, keep_as, action, kept_role, incident, details):
    """Closes both databases to new connections, terminates their sessions, then in one transaction
    renames ``live`` to ``keep_as`` and ``replacement`` to ``live`` (PostgreSQL renames databases
    transactionally) with markers saying what happened, and opens the new live database again.
    Returns ``(terminated sessions, seconds the live database was closed)``. On failure the old live
    database is put back in service under its name before ``SwapFailed`` is raised."""
    if replacement not in present:
        raise Failure("nothing to swap in: database %s does not exist" % replacement, "refused")
    if keep_as in present:
        raise Failure("database %s already exists; refusing to overwrite it" % keep_as, "refused")
    now = iso(utcnow())
    closed = time.monotonic()
    terminated = []
    try:
        names = [n for n in (live, replacement) if n in present]
        for name in names:
            allow_connections(conn, name, False)
        terminated = terminate(conn, names)
        with conn.transaction():
            if live in present:
                rename(conn, live, keep_as)
                kept = {"incident": incident, "role": kept_role, "was": live, "at": now, "action": action}
                set_marker(conn, keep_as, {"kept": kept})
            rename(conn, replacement, live)
            marker = {
                "swap": {
                    "incident": incident,
                    "action": action,
                    "at": now,
                    "kept_as": keep_as if live in present else None,
                }
            }
            marker["swap"].update(details or {})
            set_marker(conn, live, marker)
            allow_connections(conn, live, True)
        if live in present:
            allow_connections(conn, keep_as, True)
    except Exception as exc:  # put the old live database back in service before reporting
        try:
            now_present = databases(conn)
            if live not in now_present and keep_as in now_present:
                rename(conn, keep_as, live)
            for name in (live, replacement):
                if name in databases(conn):
                    allow_connections(conn, name, True)
            rolled_back = live in databases(conn) or live not in present
        except Exception as again:  # the server itself is gone; the transaction was not committed
            raise SwapFailed(
                "swap failed (%s) and the server could not be checked: %s" % (exc, again), False, terminated
            ) from exc
        raise SwapFailed(
            "swap failed, the previous database is live again: %s" % exc, rolled_back, terminated
        ) from exc
    return terminated, round(time.monotonic() - closed, 3)
