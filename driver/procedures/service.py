"""Service recovery on Kubernetes: rollback, failed-deployment recovery, emergency shutdown and resume,
scale, unhealthy pods, environment changes, node drain and database pod recovery (runbooks 000, 002
and 003)."""

from __future__ import annotations

import re
from typing import Any

from driver.procedure import Argument, Procedure
from driver.validate import InputError

IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
# Values of variables with such names are shown as "(redacted)" in results.
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|DSN|URL|AUTH", re.IGNORECASE)


def _one_service(values: dict[str, Any], var: str, flags: str) -> None:
    if len(values.get(var) or []) != 1:
        raise InputError(f"{flags} applies to exactly one --service")


# -- per-procedure input checks (exit 2, nothing runs) ------------------------------------------------
def check_rollback(values: dict[str, Any], platform) -> None:
    if values.get("rollback_to_revision") is not None and values.get("rollback_image") is not None:
        raise InputError("rollback: give --to-revision or --image, not both")
    if values.get("rollback_to_revision") is not None or values.get("rollback_image") is not None:
        _one_service(values, "rollback_services", "--to-revision/--image")
    revision = values.get("rollback_to_revision")
    if revision is not None and revision <= 0:
        raise InputError(f"--to-revision must be a revision number above 0, got {revision}")
    tag = values.get("rollback_image")
    if tag is not None and not IMAGE_TAG.match(tag):
        raise InputError(f"--image {tag[:40]!r} is not an image tag (letters, digits, '_', '.', '-')")


def check_recover(values: dict[str, Any], platform) -> None:
    seconds = values.get("recover_deployment_not_ready_seconds")
    if seconds is not None and not 0 < seconds <= 86400:
        raise InputError(f"--not-ready-seconds must be above 0 and at most 86400, got {seconds}")


def check_scale(values: dict[str, Any], platform) -> None:
    replicas, resources = values.get("scale_replicas"), values.get("scale_resources")
    if replicas is None and not resources:
        raise InputError("scale: give --replicas N, --resources cpu=...,memory=..., or both")
    names = values.get("scale_services") or []
    _one_service(values, "scale_services", "scale")
    service = next(s for s in platform.all_services if s["name"] == names[0])
    if replicas is not None:
        if replicas < 1:
            raise InputError("--replicas must be at least 1 (use shutdown to scale to zero)")
        ceiling = service.get("max_replicas", service.get("replicas"))
        if ceiling is not None and replicas > ceiling:
            raise InputError(
                f"--replicas {replicas} is above the ceiling of {names[0]} ({ceiling}, max_replicas "
                "in the inventory)"
            )
    if resources:
        values["scale_resources"] = parse_resources(resources)


def parse_resources(text: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in ("cpu", "memory") or not QUANTITY.match(value) or key in parsed:
            raise InputError(
                f"--resources {text[:60]!r}: expected cpu=QUANTITY,memory=QUANTITY (e.g. cpu=1,memory=1Gi)"
            )
        parsed[key] = value
    return parsed


def check_set_env(values: dict[str, Any], platform) -> None:
    _one_service(values, "set_env_services", "set-env")
    pairs = values.get("set_env_vars") or []
    if not pairs:
        raise InputError("set-env: give at least one KEY=VALUE")
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not ENV_NAME.match(key):
            raise InputError(f"set-env: {pair[:40]!r} is not KEY=VALUE with a valid variable name")
        if any(ord(c) < 32 for c in value) or len(value) > 4096:
            raise InputError(f"set-env: the value of {key} has control characters or is too long")
        env[key] = value
    values["set_env_vars"] = env


def check_unset_env(values: dict[str, Any], platform) -> None:
    _one_service(values, "unset_env_services", "unset-env")
    keys = values.get("unset_env_vars") or []
    if not keys:
        raise InputError("unset-env: give at least one KEY")
    for key in keys:
        if not ENV_NAME.match(key):
            raise InputError(f"unset-env: {key[:40]!r} is not a valid variable name")


def check_node(var: str):
    def check(values: dict[str, Any], platform) -> None:
        from driver import validate

        validate.dns_label(values.get(var) or "", "node")

    return check


# -- lines for the operator -----------------------------------------------------------------------------
def summarize_rollback(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("rollback", "recover_deployment"):
        for s in outputs.get(key, {}).get("services", []):
            if key == "recover_deployment" and not s.get("failing"):
                lines.append(f"{s['name']}: rollout healthy, left alone")
                continue
            why = f" ({s['reason']})" if s.get("reason") else ""
            target = s.get("target_revision")
            to = f"revision {target}" if target is not None else f"images {s.get('images')}"
            if s.get("rolled_back") and s.get("new_revision") is None:
                lines.append(
                    f"{s['name']}{why}: would roll back from revision {s['previous_revision']} to {to}"
                )
            elif s.get("rolled_back"):
                lines.append(
                    f"{s['name']}{why}: rolled back to {to}, now revision {s['new_revision']}, ready"
                )
            else:
                lines.append(f"{s['name']}: nothing to roll back (revision {s['previous_revision']})")
        failed = outputs.get(key, {}).get("failed_service")
        if failed:
            lines.append(f"{failed['name']} NOT READY: {failed.get('reason', '')}")
            lines += [f"  pod {pod}" for pod in failed.get("pods_not_ready", [])]
    return lines


def summarize_scaled(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("shutdown", "resume", "scale"):
        for s in outputs.get(key, {}).get("services", []):
            verb = "scaled" if s.get("changed") else "unchanged"
            name = f"{s['namespace']}/{s['name']}" if s.get("namespace") else s["name"]
            lines.append(f"{name}: {verb}, replicas {s['previous_replicas']} -> {s['replicas']}")
    return lines


def summarize_env(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("set_env", "unset_env"):
        for s in outputs.get(key, {}).get("services", []):
            verb = "changed" if s.get("changed") else "already so"
            lines.append(f"{s['name']} ({s['container']}): {verb}; previous values {s.get('previous_env')}")
        failed = outputs.get(key, {}).get("failed_service")
        if failed:
            lines.append(f"{failed['name']} NOT READY: {failed.get('reason', '')}")
    return lines


def summarize_pods(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("restart_unhealthy", "db_pod_recover"):
        out = outputs.get(key, {})
        for s in out.get("services", []):
            deleted = ", ".join(s.get("deleted") or []) or "none"
            lines.append(f"{s['name']}: pods deleted: {deleted}; ready again in {s.get('seconds_to_ready')}s")
        for w in out.get("writers", []):
            lines.append(f"writer {w['name']}: {w['ready_replicas']} replicas ready")
        if out.get("connection", {}).get("server_version"):
            lines.append(f"PostgreSQL {out['connection']['server_version']} accepts the writers' credentials")
        if out.get("failed_service"):
            lines.append(
                f"{out['failed_service']['name']} NOT READY: {out['failed_service'].get('reason', '')}"
            )
    return lines


def check_min_age(values: dict[str, Any], platform) -> None:
    age = values.get("restart_unhealthy_min_age")
    if age is not None and not 0 <= age <= 3600:
        raise InputError(f"--min-age must be between 0 and 3600 seconds, got {age}")


def summarize_node(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("drain", "uncordon"):
        out = outputs.get(key)
        if not out:
            continue
        node = out.get("node", {})
        state = "unschedulable" if node.get("unschedulable") else "schedulable"
        lines.append(
            f"node {node.get('name')}: {state} (before: unschedulable={node.get('unschedulable_before')})"
        )
        lines += [f"  evicted {pod}" for pod in out.get("evicted", [])]
        for w in out.get("rescheduled", []):
            lines.append(
                f"  {w['namespace']}/{w['name']}: {w['ready_elsewhere']}/{w['replicas']} ready on "
                f"{', '.join(w['nodes'])}"
            )
    return lines


PROCEDURES = (
    Procedure(
        name="rollback",
        role="rollback",
        runbooks=(
            "000 Rollback Procedures",
            "000 Docker Image Rollback",
            "002 rollback",
            "003 P0 outage (rollback)",
        ),
        arguments=(
            Argument("--service", "rollback_services", names="deployment", metavar="NAME"),
            Argument("--to-revision", "rollback_to_revision", metavar="N"),
            Argument("--image", "rollback_image", metavar="TAG"),
        ),
        timeout_var="rollback_timeout",
        summarize=summarize_rollback,
        check=check_rollback,
    ),
    Procedure(
        name="recover-deployment",
        role="recover_deployment",
        runbooks=("002 Failed Deployment Recovery", "003 P0 outage (rollback)"),
        arguments=(
            Argument("--service", "recover_deployment_services", names="deployment", metavar="NAME"),
            Argument("--all", "recover_deployment_all"),
            Argument("--not-ready-seconds", "recover_deployment_not_ready_seconds", metavar="N"),
        ),
        one_of=("--service", "--all"),
        timeout_var="recover_deployment_timeout",
        summarize=summarize_rollback,
        check=check_recover,
    ),
    Procedure(
        name="shutdown",
        role="shutdown",
        runbooks=("000 Emergency Service Shutdown", "002 breach isolation (scale 0)"),
        arguments=(
            Argument("--service", "shutdown_services", names="service", metavar="NAME"),
            Argument("--all", "shutdown_all"),
        ),
        destructive=True,
        one_of=("--service", "--all"),
        timeout_var="shutdown_timeout",
        summarize=summarize_scaled,
    ),
    Procedure(
        name="resume",
        role="resume",
        runbooks=("000 Emergency Service Shutdown (scale back up)",),
        arguments=(
            Argument("--service", "resume_services", names="service", metavar="NAME"),
            Argument("--all", "resume_all"),
        ),
        one_of=("--service", "--all"),
        timeout_var="resume_timeout",
        summarize=summarize_scaled,
    ),
    Procedure(
        name="scale",
        role="scale",
        runbooks=("002 scale", "003 Performance Degradation", "003 Worker Queue Backlog"),
        arguments=(
            Argument("--service", "scale_services", names="service", metavar="NAME"),
            Argument("--replicas", "scale_replicas", metavar="N"),
            Argument("--resources", "scale_resources", metavar="cpu=Q,memory=Q"),
        ),
        force_var="scale_force",
        timeout_var="scale_timeout",
        summarize=summarize_scaled,
        check=check_scale,
    ),
    Procedure(
        name="set-env",
        role="set_env",
        runbooks=("003 Performance Degradation (debug logging)", "003 Database Connectivity Loss"),
        arguments=(
            Argument("--service", "set_env_services", names="service", metavar="NAME"),
            Argument("env", "set_env_vars", metavar="KEY=VALUE"),
        ),
        timeout_var="set_env_timeout",
        summarize=summarize_env,
        check=check_set_env,
    ),
    Procedure(
        name="unset-env",
        role="unset_env",
        runbooks=("003 Performance Degradation (debug logging off)", "003 Database Connectivity Loss"),
        arguments=(
            Argument("--service", "unset_env_services", names="service", metavar="NAME"),
            Argument("env", "unset_env_vars", metavar="KEY"),
        ),
        timeout_var="unset_env_timeout",
        summarize=summarize_env,
        check=check_unset_env,
    ),
    Procedure(
        name="restart-unhealthy",
        role="restart_unhealthy",
        runbooks=("003 Performance Degradation (restart pods not running)", "002 restart"),
        arguments=(
            Argument("--service", "restart_unhealthy_services", names="service", metavar="NAME"),
            Argument("--min-age", "restart_unhealthy_min_age", metavar="SECONDS"),
        ),
        timeout_var="restart_unhealthy_timeout",
        summarize=summarize_pods,
        check=check_min_age,
    ),
    Procedure(
        name="db-pod-recover",
        role="db_pod_recover",
        runbooks=("003 Database Connectivity Loss (database pod recovery)",),
        destructive=True,
        timeout_var="db_pod_recover_timeout",
        summarize=summarize_pods,
    ),
    Procedure(
        name="drain",
        role="drain",
        runbooks=("000 Kubernetes Cluster Issues (cordon, drain)",),
        arguments=(Argument("--node", "drain_node", metavar="NODE"),),
        destructive=True,
        timeout_var="drain_timeout",
        summarize=summarize_node,
        check=check_node("drain_node"),
    ),
    Procedure(
        name="uncordon",
        role="uncordon",
        runbooks=("000 Kubernetes Cluster Issues (uncordon)",),
        arguments=(Argument("--node", "uncordon_node", metavar="NODE"),),
        timeout_var="uncordon_timeout",
        summarize=summarize_node,
        check=check_node("uncordon_node"),
    ),
)
