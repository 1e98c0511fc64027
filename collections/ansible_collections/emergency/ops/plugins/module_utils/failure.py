# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""How the database-recovery modules fail: ``Failure`` carries the outcome the driver maps to an exit code,
``fail`` reports it, and ``parse_when`` reads an operator's time or fails with outcome ``invalid``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.emergency.ops.plugins.module_utils import times


class Failure(Exception):
    """A failure with the outcome the driver maps to an exit code (invalid, refused, unreachable)."""

    def __init__(self, message, outcome="failed"):
        super(Failure, self).__init__(message)
        self.outcome = outcome


def parse_when(text):
    """An operator's time as psql, ``date -Is``, a log or ISO 8601 prints it (see ``times.parse_when``),
    in UTC; raises ``Failure`` (``invalid``) for anything else."""
    try:
        return times.parse_when(text)
    except ValueError as exc:
        raise Failure(str(exc), "invalid") from None


def fail(module, exc, **extra):
    outcome = getattr(exc, "outcome", "failed")
    module.fail_json(msg=str(exc), outcome=outcome, **extra)
