"""Security incidents (runbook 004 "System State Preservation"; the evidence that 000, 002 and 003
never capture before they scale a compromised service down)."""

from __future__ import annotations

import re
from typing import Any

from driver.procedure import Argument, Procedure
from driver.validate import InputError

DURATION = re.compile(r"^[0-9]{1,6}[smhd]?$")
# A user's name as applications and PostgreSQL spell them; anything else is refused before a query.
USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}$")


def check_evidence(values: dict[str, Any], platform) -> None:
    since = values.get("evidence_since")
    if since not in (None, "") and not DURATION.match(since):
        raise InputError(f"--since {since[:40]!r}: give a duration such as 30m, 24h or 7d")


def check_isolate(values: dict[str, Any], platform) -> None:
    check_evidence({"evidence_since": values.get("isolate_since")}, platform)


def check_rotate(values: dict[str, Any], platform) -> None:
    known = [s.get("name") for s in platform.variables.get("platform_secrets") or []]
    for name in values.get("rotate_secrets_names") or []:
        if name not in known:
            listed = ", ".join(known) or "none (platform_secrets is empty)"
            raise InputError(
                f"--secret {name[:60]!r} is not a rotatable Secret of the inventory; rotatable: {listed}"
            )


def check_accounts(prefix: str):
    def check(values: dict[str, Any], platform) -> None:
        for user in values.get(f"{prefix}_users") or []:
            if not USER_NAME.match(user):
                raise InputError(
                    f"--user {user[:40]!r}: a user name is letters, digits and _ . @ -, at most 63 characters"
                )
        if values.get("lockdown_end_sessions") and not values.get("lockdown_all"):
            raise InputError("--end-sessions goes with --all (a user's sessions are always ended)")

    return check


def summarize_lockdown(key: str):
    def summarize(outputs: dict[str, Any]) -> list[str]:
        done = outputs.get(key) or {}
        accounts, lines = done.get("accounts") or {}, []
        everyone = accounts.get("all")
        if everyone is not None:
            lines += _summarize_all(key, everyone)
        for user, entry in accounts.items():
            if user != "all" or not done.get("all"):
                lines += _summarize_user(key, user, entry)
        if done.get("wire") is not None:
            lines.append(f"a login attempt through the Ingress now gets: {done['wire']}")
        return lines

    return summarize


def _summarize_all(key: str, entry: dict[str, Any]) -> list[str]:
    if key == "unlock":
        if not entry.get("recorded"):
            return ["logins: no lockdown recorded, nothing to put back"]
        return [
            f"logins: put back as before ({', '.join(entry.get('restarted') or []) or 'nothing'} rolled out)"
        ]
    if entry.get("already"):
        return [f"logins: already disabled (recorded by {entry.get('locked_by')})"]
    if "restarted" not in entry:
        return ["new logins would be disabled (check mode)"]
    ended = entry.get("sessions_ended")
    kept = f"{ended} open sessions ended" if entry.get("end_sessions") else "open sessions kept"
    rolled = ", ".join(entry["restarted"])
    return [f"new logins disabled ({rolled + ' rolled out' if rolled else 'already'}); {kept}"]


def _summarize_user(key: str, user: str, entry: dict[str, Any]) -> list[str]:
    if key == "unlock":
        if not entry.get("recorded"):
            return [f"{user}: no lockdown recorded, nothing to put back"]
        return [f"{user}: put back as recorded by {entry.get('locked_by')} (ended sessions do not come back)"]
    if entry.get("already"):
        return [f"{user}: already locked out"]
    if "sessions_ended" not in entry:
        return [f"{user}: would be locked out (check mode)"]
    database = (
        f", database login disabled, {entry.get('db_backends_terminated', 0)} backends ended"
        if entry["before"].get("db_login")
        else ""
    )
    return [f"{user}: suspended, {entry['sessions_ended']} sessions ended{database}"]


def summarize_rotate(outputs: dict[str, Any]) -> list[str]:
    lines = []
    for r in (outputs.get("rotate_secrets") or {}).get("rotated", []):
        if not r.get("restarted") and r.get("previous_resource_version") == r.get("resource_version"):
            lines.append(f"{r['secret']}: already rotated for this incident (or check mode)")
            continue
        user = f", login {r['previous_user']} -> {r['user']}" if r.get("user") else ""
        lines.append(
            f"{r['secret']}: resourceVersion {r['previous_resource_version']} -> "
            f"{r['resource_version']}{user}; "
            f"restarted {', '.join(r.get('restarted') or []) or 'nothing'}"
        )
        if r.get("old_login_refused"):
            lines.append(
                f"  new login accepted, old one refused, {r.get('sessions_ended', 0)} old sessions ended"
            )
        if r.get("wire"):
            lines.append(f"  through the Ingress: old key {r['wire']['old']}, new key {r['wire']['new']}")
        if r.get("stopped") or r.get("followed_up"):
            follow = "follow-up run" if r.get("followed_up") else "no follow-up"
            lines.append(
                f"  stopped while it changed and back: {', '.join(r.get('stopped') or []) or '-'}; {follow}"
            )
    return lines


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


def summarize_isolate(outputs: dict[str, Any]) -> list[str]:
    isolate = outputs.get("isolate", {})
    record = isolate.get("isolation") or {}
    lines = []
    if isolate.get("evidence_skipped"):
        lines.append("no evidence captured (--no-evidence)")
    elif isolate.get("evidence"):
        lines.append(f"evidence captured first: {isolate['evidence']}")
    if record.get("already"):
        lines.append(f"{isolate.get('service')}: already isolated ({record.get('mode')}) for this incident")
    elif record:
        made = record.get("policy") or ", ".join(record.get("service_selectors") or {}) or "scaled to 0"
        lines.append(f"{isolate.get('service')}: isolated ({record.get('mode')}): {made}")
        if record.get("quarantined"):
            lines.append(f"quarantined pods (still running, unreachable): {', '.join(record['quarantined'])}")
    if isolate.get("wire") is not None:
        lines.append(f"a client through the Ingress now gets: {isolate['wire']}")
    return lines


def summarize_release(outputs: dict[str, Any]) -> list[str]:
    release = outputs.get("release", {})
    record = release.get("isolation") or {}
    if not record.get("released"):
        lines = [f"{release.get('service')}: not isolated, nothing to release"]
    else:
        lines = [f"{release.get('service')}: released ({record.get('mode')}), the recorded state put back"]
    if record.get("quarantined_kept"):
        lines.append(
            "quarantined pods kept (unreachable; --delete-quarantined removes them): "
            + ", ".join(record["quarantined_kept"])
        )
    if release.get("wire") is not None:
        lines.append(f"a client through the Ingress now gets: {release['wire']}")
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
    Procedure(
        name="isolate",
        role="isolate",
        runbooks=(
            "004 Network Isolation",
            "002 Security Breach Response",
            "003 Security Breach Detection and Containment",
            "000 Suspected Breach",
        ),
        arguments=(
            Argument("--service", "isolate_service", names="service", metavar="NAME"),
            Argument("--mode", "isolate_mode", metavar="MODE"),
            Argument("--no-evidence", "isolate_no_evidence"),
            Argument("--allow-dns", "isolate_allow_dns"),
            Argument("--since", "isolate_since", metavar="DURATION"),
        ),
        destructive=True,
        timeout_var="isolate_timeout",
        summarize=summarize_isolate,
        check=check_isolate,
    ),
    Procedure(
        name="release",
        role="release",
        runbooks=("004 Network Isolation (the way back)",),
        arguments=(
            Argument("--service", "release_service", names="service", metavar="NAME"),
            Argument("--delete-quarantined", "release_delete_quarantined"),
        ),
        destructive=True,
        timeout_var="release_timeout",
        summarize=summarize_release,
    ),
    Procedure(
        name="rotate-secrets",
        role="rotate_secrets",
        runbooks=("000 Compromised Credentials", "001 Key Rotation", "004 Credential Reset"),
        arguments=(
            Argument("--secret", "rotate_secrets_names", metavar="NAME"),
            Argument("--all", "rotate_secrets_all"),
        ),
        one_of=("--secret", "--all"),
        destructive=True,
        timeout_var="rotate_secrets_timeout",
        summarize=summarize_rotate,
        check=check_rotate,
    ),
    Procedure(
        name="lockdown",
        role="lockdown",
        runbooks=(
            "004 Compromised Account Response",
            "004 System-wide Lockdown",
            "000 Compromised Credentials",
        ),
        arguments=(
            Argument("--user", "lockdown_users", metavar="NAME"),
            Argument("--all", "lockdown_all"),
            Argument("--end-sessions", "lockdown_end_sessions"),
        ),
        one_of=("--user", "--all"),
        destructive=True,
        timeout_var="lockdown_timeout",
        summarize=summarize_lockdown("lockdown"),
        check=check_accounts("lockdown"),
    ),
    Procedure(
        name="unlock",
        role="unlock",
        runbooks=("004 Compromised Account Response (the way back)",),
        arguments=(
            Argument("--user", "unlock_users", metavar="NAME"),
            Argument("--all", "unlock_all"),
        ),
        one_of=("--user", "--all"),
        destructive=True,
        timeout_var="unlock_timeout",
        summarize=summarize_lockdown("unlock"),
        check=check_accounts("unlock"),
    ),
)
