# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Reading the times operators paste (psql, ``date -Is``, logs, ISO 8601). Standard library only, so
the driver can read a time exactly as the modules will before anything runs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(moment):
    """``moment`` (in UTC) to the second, e.g. ``2026-12-02T06:05:16Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_precise(moment):
    """``moment`` in UTC as ISO 8601 with its microseconds, e.g. ``2026-12-02T06:05:16.763209Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# "UTC" after the time, with or without a space, as `date` and some logs print it.
_UTC_SUFFIX = re.compile(r"\s*(?:UTC|GMT)$", re.IGNORECASE)
# What PostgreSQL, logs and `date -Is` print but ISO 8601 parsers may not read: a space before the
# offset, lowercase t/z.
_SPACE_BEFORE_OFFSET = re.compile(r"(\d)\s+([+-]\d{2}(?::?\d{2}){0,2})$")


def parse_when(text):
    """An operator's time, as PostgreSQL prints a ``timestamptz`` (``2026-12-02 06:05:16.763209+00``),
    as ``date -Is`` or a log prints it (``2026-12-02T06:05:16+00:00``, ``...Z``, ``... UTC``,
    ``+0000``), or by hand (``2026-11-20 10:30``); a space or ``T`` between date and time, fractional
    seconds. A time without an offset is UTC. Returns an aware datetime in UTC; raises ``ValueError``
    with the forms it reads for anything else."""
    value = (text or "").strip()
    had_utc = bool(_UTC_SUFFIX.search(value)) if value else False
    value = _UTC_SUFFIX.sub("", value)
    value = _SPACE_BEFORE_OFFSET.sub(r"\1\2", value)
    if len(value) > 10 and value[10] in "tT ":
        value = value[:10] + "T" + value[11:]
    if value[-1:] in ("z", "Z"):
        value = value[:-1] + "+00:00"
    try:
        # Python 3.11's reader takes ISO 8601 and PostgreSQL's forms: any number of fractional digits,
        # offsets as +00, +0000 or +00:00, a space or T between date and time.
        moment = datetime.datetime.fromisoformat(value) if value[:4].isdigit() else None
    except ValueError:
        moment = None
    if moment is None or (had_utc and moment.tzinfo is not None and moment.utcoffset()):
        raise ValueError(
            "cannot read the time %r; use YYYY-MM-DD HH:MM[:SS[.ffffff]] with an optional offset "
            "(+00, +0000, +00:00, Z or UTC; none means UTC), as psql, date -Is or ISO 8601 print it" % text
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)
