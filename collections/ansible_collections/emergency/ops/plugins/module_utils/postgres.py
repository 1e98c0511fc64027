# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""PostgreSQL access for the database-recovery modules: the admin connection, the environment and the
programs (pg_dump, pg_restore) they run, the server's databases, and the markers on them.

Databases the procedures create or keep carry a JSON marker in their comment
(``COMMENT ON DATABASE``), which is how a re-run for the same incident knows what is already done
and how ``restore-cleanup`` finds the databases it may drop.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import re

try:
    import psycopg
    from psycopg import sql

    HAS_PSYCOPG = True
except ImportError:  # reported by the module
    HAS_PSYCOPG = False

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure

MARKER_KEY = "emergency.ops"
PG_DUMP = os.environ.get("EMERGENCY_PG_DUMP", "pg_dump")


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


def client(program, client_bin=None):
    """pg_dump or pg_restore: the EMERGENCY_PG_* override (a test's stand-in) first, then the one in
    ``client_bin`` (the inventory's folder for the server's version), then the one on PATH (Debian's
    wrapper runs the newest installed, which reads and writes older servers)."""
    override = os.environ.get("EMERGENCY_%s" % program.upper())
    if override:
        return override
    return os.path.join(client_bin, program) if client_bin else program


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
