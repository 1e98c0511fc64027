"""Security incidents (runbook 004 "System State Preservation"; the evidence that 000, 002 and 003
never capture before they scale a compromised service down)."""

from __future__ import annotations

import re
from typing import Any

from driver.procedure import Argument, Procedure
from driver.validate import InputError

DURATION = re.compile(r"^[0-9]{1,6}[smhd]?$")


def check_evidence(values: dict[str, Any], platform) -> None:
    since = values.get("evidence_since")
    if since not in (None, "") and not DURATION.match(since):
        raise InputError(f"--since {since[:40]!r}: give a duration such as 30m, 24h or 7d")


def summarize_evidence(outputs: dict[str, Any]) -> list[str]:
    evidence = outputs.get("evidence", {})
    bundle, summary = evidence.get("bundle") or {}, evidence.get("summary") or {}
    if not bundle:
        return [f"would capture {', '.join(summary.get('services', []))} (check mode: nothing written)"]
    lines = [
        f"bundle {bundle['name']}: {bundle['files']} files, {bundle['bytes']} bytes -> {bundle['path']}",
        f"manifest sha256 {bundle['manifest_sha256']} (on the incident's timeline)",
        f"{len(summary.get('pods', []))} pods, {summary.get('logs', 0)} logs, "
        f"{summary.get('events', 0)} events, "
        f"{summary.get('suspicious_lines', 0)} log lines about authentication or errors (auth.json)",
    ]
    if bundle.get("uploaded_to"):
        lock = "with Object Lock" if bundle.get("object_lock") else "no Object Lock on the bucket"
        lines.append(f"uploaded to {bundle['uploaded_to']} ({lock})")
    return lines


def summarize_verify(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for bundle in (outputs.get("evidence_verify") or {}).get("verified", []):
        state = "intact" if not bundle.get("problems") else f"{len(bundle['problems'])} problems"
        where = f", and its copy {bundle['uploaded_to']}" if bundle.get("uploaded_to") else ""
        lines.append(f"bundle {bundle['name']}: {state}{where}")
        lines += [f"  {problem}" for problem in bundle.get("problems", [])]
    return lines


PROCEDURES = (
    Procedure(
        name="evidence",
        role="evidence",
        runbooks=("004 System State Preservation", "000/002/003 before containment"),
        arguments=(
            Argument("--service", "evidence_services", names="service", metavar="NAME"),
            Argument("--all", "evidence_all"),
            Argument("--since", "evidence_since", metavar="DURATION"),
            Argument("--no-data", "evidence_no_data"),
            Argument("--upload", "evidence_upload"),
        ),
        one_of=("--service", "--all"),
        summarize=summarize_evidence,
        check=check_evidence,
    ),
    # `python -m driver evidence verify` (driver/cli.py maps the two words to this name).
    Procedure(
        name="evidence-verify",
        role="evidence_verify",
        runbooks=("004 System State Preservation (chain of custody)",),
        summarize=summarize_verify,
    ),
)
