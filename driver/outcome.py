"""How a run's end becomes an exit code: the contract between the roles and the driver.

A role tells the driver why it stopped in one of two ways, both checked by tests/unit/test_outcome.py:

- our modules fail with ``outcome``: ``invalid`` (exit 2), ``refused`` (exit 3), ``unreachable`` (exit 4,
  when nothing changed);
- a task of a module we do not own (``ansible.builtin.assert``, amazon.aws, kubernetes.core) that checks
  the live state before anything changes is named ``<Role> | Preflight | ...`` (PREFLIGHT): its failure
  is a refusal (exit 3), or unreachable (exit 4) when its message is a connection failure.

Anything else that fails is exit 1.
"""

from __future__ import annotations

import re

from driver import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from driver.results import Result, Step

PREFLIGHT = "| Preflight |"
OUTCOMES = {"invalid": EXIT_INVALID, "refused": EXIT_REFUSED, "unreachable": EXIT_UNREACHABLE}

# A preflight task of a module we do not own (amazon.aws, kubernetes.core, ...) that failed with one of
# these connection errors could not reach its dependency: exit 4, not "refused". Our own modules say so
# themselves with outcome=unreachable.
CONNECTION_FAILURES = re.compile(
    r"Could not connect to the endpoint URL|Failed to establish a new connection|Connection refused"
    r"|Name or service not known|No route to host|Connect timeout|Read timed out",
    re.IGNORECASE,
)

STATUS_FOR_EXIT = {
    EXIT_OK: "succeeded",
    EXIT_FAILED: "failed",
    EXIT_INVALID: "invalid",
    EXIT_REFUSED: "refused",
    EXIT_UNREACHABLE: "failed",
}


def classify(outcome, result: Result, cancelled: bool) -> int:
    """The exit code of a finished run, with its errors added to the result."""
    if outcome.status == "successful":
        return EXIT_OK
    if outcome.status == "canceled" or cancelled:
        stopped = f"; stopped {len(outcome.stopped)} process(es) it had started" if outcome.stopped else ""
        result.errors.append(
            {"kind": "cancelled", "message": f"cancelled by the operator or a signal{stopped}"}
        )
        return EXIT_FAILED
    if not outcome.failures:
        result.errors.append({"kind": "failed", "message": f"ansible-runner finished {outcome.status}"})
        return EXIT_FAILED
    first = outcome.failures[0]
    step: Step = first["step"]
    kind = first["res"].get("outcome")
    if first["unreachable"]:
        kind = "unreachable"
    elif not kind and PREFLIGHT in step.name:
        kind = "unreachable" if CONNECTION_FAILURES.search(step.message or "") else "refused"
    elif not kind:
        kind = "failed"
    for failure in outcome.failures:
        result.errors.append(
            {
                "kind": kind if failure is first else "failed",
                "step": failure["step"].name,
                "host": failure["step"].host,
                "message": failure["step"].message,
            }
        )
    if kind == "unreachable" and not result.changed:
        return EXIT_UNREACHABLE
    return {"invalid": EXIT_INVALID, "refused": EXIT_REFUSED}.get(kind, EXIT_FAILED)
