"""The procedures: which playbook, which arguments (mapped to role variables), whether destructive.

Adding a procedure is one entry here, a playbook and a role with its argument spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driver import argspec


@dataclass(frozen=True)
class Argument:
    flag: str  # command-line flag, e.g. --service
    var: str  # the role variable it sets, e.g. restart_services
    kind: str = "str"  # str, list (repeatable), bool, int
    names: str | None = None  # "service": each value must be a service of the inventory
    metavar: str | None = None


@dataclass(frozen=True)
class Procedure:
    name: str
    role: str
    runbooks: tuple[str, ...]
    arguments: tuple[Argument, ...] = ()
    destructive: bool = False
    one_of: tuple[str, ...] = ()  # exactly one of these flags must be given
    force_var: str | None = None  # role variable that receives --force
    timeout_var: str | None = None  # role variable that receives --timeout
    summarize: Callable[[dict[str, Any]], list[str]] | None = None  # outputs -> lines for the operator
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def playbook(self) -> str:
        return f"{self.name}.yml"

    @property
    def description(self) -> str:
        return argspec.summary(self.role)

    def help_for(self, argument: Argument) -> str:
        return argspec.description(self.role, argument.var)


def summarize_restart(outputs: dict[str, Any]) -> list[str]:
    restart = outputs.get("restart", {})
    lines = []
    for s in restart.get("services", []):
        if s.get("new_revision") is None:
            lines.append(f"{s['name']}: would restart (now at revision {s['previous_revision']})")
        elif s.get("restarted"):
            ready = f", ready in {s['seconds_to_ready']}s" if s.get("seconds_to_ready") is not None else ""
            lines.append(f"{s['name']}: revision {s['previous_revision']} -> {s['new_revision']}{ready}")
        else:
            lines.append(f"{s['name']}: already restarted for this incident (revision {s['new_revision']})")
    failed = restart.get("failed_service")
    if failed:
        lines.append(f"{failed['name']} NOT READY: {failed.get('reason', '')}")
        lines += [f"  pod {pod}" for pod in failed.get("pods_not_ready", [])]
        lines += [f"  event {event}" for event in failed.get("recent_events", [])]
    return lines


PROCEDURES: dict[str, Procedure] = {
    p.name: p
    for p in (
        Procedure(
            name="restart",
            role="restart",
            runbooks=(
                "000 Restart Single Service",
                "000 Restart All Services (ordered)",
                "001 Quick Restart",
                "002/003 restart steps",
            ),
            arguments=(
                Argument("--service", "restart_services", kind="list", names="service", metavar="NAME"),
                Argument("--all", "restart_all", kind="bool"),
            ),
            one_of=("--service", "--all"),
            force_var="restart_force",
            timeout_var="restart_timeout",
            summarize=summarize_restart,
        ),
    )
}
