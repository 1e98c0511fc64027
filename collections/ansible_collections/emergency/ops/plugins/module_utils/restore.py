# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Restoring beside the live database: the side database restored with ``pg_restore --jobs`` from a
verified dump, its rows counted against the manifest, and the smoke queries run on it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import os
import subprocess
import time

try:
    import psycopg
    from psycopg import sql

    HAS_PSYCOPG = True
except ImportError:  # reported by the module
    HAS_PSYCOPG = False

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.postgres import (
    client,
    connect,
    pg_env,
    set_marker,
    user_tables,
)
from ansible_collections.emergency.ops.plugins.module_utils.times import iso, utcnow


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
