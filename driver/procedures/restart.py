"""Service restart (runbook 000 "Restart Single Service", "Restart All Services (ordered)";
001 "Quick Restart"; the restart steps of 002 and 003)."""

from __future__ import annotations

from typing import Any

from driver.procedure import Argument, Procedure


def label(service: dict[str, Any]) -> str:
    """``name``, or ``namespace/name`` for an entry of a fleet (many hosts)."""
    return f"{service['namespace']}/{service['name']}" if service.get("namespace") else service["name"]


def summarize_restart(outputs: dict[str, Any]) -> list[str]:
    restart = outputs.get("restart", {})
    lines = []
    for s in restart.get("services", []):
        name = label(s)
        if s.get("new_revision") is None:
            lines.append(f"{name}: would restart (now at revision {s['previous_revision']})")
        elif s.get("restarted"):
            ready = f", ready in {s['seconds_to_ready']}s" if s.get("seconds_to_ready") is not None else ""
            lines.append(f"{name}: revision {s['previous_revision']} -> {s['new_revision']}{ready}")
        else:
            lines.append(f"{name}: already restarted for this incident (revision {s['new_revision']})")
    hosts = outputs.get("hosts") or {}
    if len(hosts) > 1:  # a fleet: each host's failure is under its own entry
        failures = []
        for host in hosts.values():
            failed = (host.get("restart") or {}).get("failed_service")
            if failed:
                failures.append({**failed, "name": f"{host.get('namespace')}/{failed['name']}"})
    else:
        failures = [restart["failed_service"]] if restart.get("failed_service") else []
    for failed in failures:
        lines.append(f"{failed['name']} NOT READY: {failed.get('reason', '')}")
        lines += [f"  pod {pod}" for pod in failed.get("pods_not_ready", [])]
        lines += [f"  event {event}" for event in failed.get("recent_events", [])]
    return lines


PROCEDURES = (
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
            Argument("--service", "restart_services", names="service", metavar="NAME"),
            Argument("--all", "restart_all"),
        ),
        one_of=("--service", "--all"),
        force_var="restart_force",
        timeout_var="restart_timeout",
        summarize=summarize_restart,
    ),
)
