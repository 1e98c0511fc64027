# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Swapping a replacement database in for the live one by renaming both in one transaction, keeping the
old one, and the marker that says which incident swapped the live database in."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

try:
    from psycopg import sql
except ImportError:  # reported by the module (postgres.HAS_PSYCOPG)
    sql = None

from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.postgres import (
    allow_connections,
    databases,
    set_marker,
    terminate,
)
from ansible_collections.emergency.ops.plugins.module_utils.times import iso, utcnow


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
