"""``incident open|update|resolve|show|list|escalate|report``, ``notify``, ``silence``, ``unsilence``.

Input is checked before anything is written or sent (exit 2); an unreachable record exits 4 having
changed nothing; a channel that fails is reported, recorded and does not change the exit code of
the incident's own steps (``notify`` by hand exits 1 when a channel it was asked to tell failed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from driver import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, ROOT
from driver.desk import Desk, digest, load_policy
from driver.validate import InputError

STATUSES = ("investigating", "identified", "monitoring")
MAX_TEXT = 2000


def add_commands(commands: argparse._SubParsersAction) -> None:
    incident = commands.add_parser(
        "incident", help="open, update, resolve, show, list, escalate or report an incident"
    )
    actions = incident.add_subparsers(dest="action", metavar="ACTION", required=True)

    opened = _action(actions, "open", "open an incident and tell the channels of its severity")
    opened.add_argument("--title", required=True, metavar="TEXT", help="what is wrong, in one line")
    opened.add_argument(
        "--severity", required=True, metavar="LEVEL", help="P0..P3, or an alias of the inventory (Severity 1)"
    )
    opened.add_argument(
        "--service", dest="services", action="append", default=[], metavar="NAME", help="an affected service"
    )
    opened.add_argument(
        "--message", default="", metavar="TEXT", help="the impact, as the first message says it"
    )
    opened.add_argument(
        "--id",
        dest="incident",
        default=os.environ.get("EMERGENCY_INCIDENT"),
        metavar="ID",
        help="the incident id (default: EMERGENCY_INCIDENT, else a new INC-YYYYMMDD-HHMMSS)",
    )

    update = _action(actions, "update", "change the incident's status and tell the channels")
    update.add_argument("--status", required=True, choices=STATUSES)
    update.add_argument("--message", required=True, metavar="TEXT")
    update.add_argument("--severity", metavar="LEVEL", help="a new severity")
    _incident_option(update)

    resolve = _action(actions, "resolve", "resolve the incident, expire its silences and tell the channels")
    resolve.add_argument("--message", required=True, metavar="TEXT")
    resolve.add_argument("--root-cause", default="", metavar="TEXT")
    _incident_option(resolve)

    for name, text in (
        ("show", "the incident's state and timeline, from the shared record"),
        ("escalate", "tell whoever the escalation policy says is due now (once each)"),
        ("report", "write the post-mortem draft (Markdown and HTML)"),
    ):
        sub = _action(actions, name, text)
        sub.add_argument(
            "id", nargs="?", metavar="ID", help="the incident (default: --incident, or the one open)"
        )
        _incident_option(sub)
        if name == "report":
            sub.add_argument(
                "--out", metavar="DIR", help="where to write it (default: the incident's folder)"
            )
    _action(actions, "list", "the incidents of the shared record")

    notify = _action(
        commands, "notify", "send one message to channels by hand (once per incident and message)"
    )
    notify.add_argument("--channel", dest="channels", action="append", required=True, metavar="NAME")
    notify.add_argument(
        "--template",
        required=True,
        metavar="NAME",
        help="a template (opened, update, resolved, user_maintenance, ...)",
    )
    notify.add_argument("--message", default="", metavar="TEXT", help="available to the template as message")
    _incident_option(notify)

    silence = _action(
        commands, "silence", "silence alerts in Alertmanager for the incident (extends its own silence)"
    )
    silence.add_argument("--matcher", dest="matchers", action="append", required=True, metavar="NAME=VALUE")
    silence.add_argument("--duration", required=True, metavar="DURATION", help="e.g. 30m, 1h, 2h30m")
    silence.add_argument("--comment", required=True, metavar="TEXT")
    _incident_option(silence)

    unsilence = _action(commands, "unsilence", "expire the incident's silences")
    _incident_option(unsilence)


def _action(parent, name: str, text: str) -> argparse.ArgumentParser:
    sub = parent.add_parser(name, help=text, description=text)
    sub.add_argument(
        "--inventory", default=os.environ.get("EMERGENCY_INVENTORY") or str(ROOT / "inventories" / "sandbox")
    )
    sub.add_argument("--operator", default=os.environ.get("EMERGENCY_OPERATOR"))
    sub.add_argument(
        "--incidents-dir", default=os.environ.get("EMERGENCY_INCIDENTS_DIR") or "incidents", metavar="PATH"
    )
    sub.add_argument(
        "--check", action="store_true", help="show what would be written and sent; write and send nothing"
    )
    sub.add_argument("--json", action="store_true", help="print the outcome as JSON")
    return sub


def _incident_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--incident", default=os.environ.get("EMERGENCY_INCIDENT"), metavar="ID")


def run(args: argparse.Namespace) -> int:
    from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
    from driver.desk import import_wire_formats
    from driver.settings import _operator

    import_wire_formats()  # before Ansible's collection loader is set up by the inventory's templating
    command = args.command if args.command != "incident" else f"incident {args.action}"
    try:
        _check_text(args)
        from driver.inventory import load

        desk = Desk(load_policy(load(args.inventory)), args.operator or _operator(), Path(args.incidents_dir))
        handler = HANDLERS[command]
        code, output = handler(desk, args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Failure as exc:
        unreachable = exc.outcome == "unreachable"
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if unreachable else EXIT_FAILED
    if args.json:
        print(json.dumps(output, indent=2, default=str))
    else:
        for line in output.get("lines", []):
            print(line)
    return code


class Refused(Exception):
    """The incident is not in a state the command acts on (resolved already, say)."""


def _check_text(args: argparse.Namespace) -> None:
    for name in ("title", "message", "root_cause", "comment"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "title" and not value.strip():
            raise InputError("--title: say what is wrong")
        if len(value) > MAX_TEXT:
            raise InputError(f"--{name.replace('_', '-')}: at most {MAX_TEXT} characters")


def _incident_id(desk: Desk, args: argparse.Namespace) -> str:
    """The incident named, else the one incident of the record that is not resolved."""
    from ansible_collections.emergency.ops.plugins.module_utils.incident_record import valid_id

    chosen = getattr(args, "id", None) or args.incident
    if chosen:
        if not valid_id(chosen):
            raise InputError(f"incident id {chosen[:70]!r}: letters, digits, '.', '_' and '-' only")
        return chosen
    open_ones = [
        i
        for i in desk.record.incident_ids()
        if desk.fold(desk.record.entries(i)).get("status") not in ("resolved", None)
    ]
    if len(open_ones) == 1:
        return open_ones[0]
    if not open_ones:
        raise InputError("no incident is open: give --incident ID")
    raise InputError(f"{len(open_ones)} incidents are open ({', '.join(open_ones)}): give --incident ID")


def _existing(desk: Desk, incident_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    state, entries = desk.state(incident_id)
    if not entries:
        raise InputError(f"incident {incident_id} is not in the record {desk.record.where}")
    return state, entries


def _delivery_lines(outcomes: list[dict[str, Any]]) -> list[str]:
    lines = []
    for o in outcomes:
        status = o["status"]
        detail = ""
        if status == "sent":
            detail = f" ({o.get('attempts', 1)} attempt{'s' if o.get('attempts', 1) != 1 else ''})"
        elif status == "failed":
            detail = f" ({o.get('error')}, {o.get('attempts')} attempts) - recorded on the timeline"
        lines.append(f"  {o['channel']}: {status}{detail}")
    return lines


def _warnings(outcomes: list[dict[str, Any]]) -> list[str]:
    return [f"{o['channel']} was not told: {o.get('error')}" for o in outcomes if o["status"] == "failed"]


# -- the commands ----------------------------------------------------------------------------------
def cmd_open(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    from ansible_collections.emergency.ops.plugins.module_utils.incident_record import valid_id
    from driver.incident import new_id

    severity = desk.policy.level(args.severity)
    services = list(dict.fromkeys(args.services))
    known = desk.policy.services
    unknown = [s for s in services if s not in known]
    if unknown:
        raise InputError(
            f"--service {', '.join(unknown)}: not a service of the inventory ({', '.join(known)})"
        )
    incident_id = args.incident or new_id(Path(args.incidents_dir))
    if not valid_id(incident_id):
        raise InputError(f"--id {incident_id[:70]!r}: letters, digits, '.', '_' and '-' only")
    state, entries = desk.state(incident_id)
    lines = []
    if state.get("status") == "resolved" and state.get("title") != args.title:
        raise Refused(f"incident {incident_id} was resolved at {state['resolved_at']}; open a new one")
    if state.get("opened_at"):
        lines.append(
            f"incident {incident_id} is open already (since {state['opened_at']}): nothing new written"
        )
    elif args.check:
        state = dict(
            state,
            id=incident_id,
            title=args.title,
            severity=severity,
            services=services,
            status="investigating",
        )
        lines.append(f"would open {incident_id} · {severity} · {args.title}")
    else:
        entries.append(
            desk.append(
                incident_id,
                "opened",
                title=args.title,
                severity=severity,
                services=services,
                message=args.message,
            )
        )
        state = desk.fold(entries)
        lines.append(
            f"incident {incident_id} opened · {severity} {_level_name(desk, severity)} · {args.title}"
        )
    response = (desk.policy.severities.get(severity) or {}).get("response_minutes")
    if response is not None:
        lines.append(f"  respond within {response} min")
    return _tell_step(desk, args, incident_id, state, "opened", "open", lines)


def cmd_update(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    incident_id = _incident_id(desk, args)
    state, entries = _existing(desk, incident_id)
    severity = desk.policy.level(args.severity) if args.severity else None
    step = f"update:{digest(args.status, args.message, severity)}"
    lines = []
    done = any(e.get("kind") == "status" and e.get("step") == step for e in entries)
    if not done and state.get("status") == "resolved":
        raise Refused(f"incident {incident_id} is resolved; open a new one")
    if done:
        lines.append(f"{incident_id}: this update is on the record already: nothing new written")
    elif args.check:
        state = dict(
            state, status=args.status, last_message=args.message, severity=severity or state["severity"]
        )
        lines.append(f"would set {incident_id} to {args.status}")
    else:
        entries.append(
            desk.append(
                incident_id, "status", status=args.status, message=args.message, severity=severity, step=step
            )
        )
        state = desk.fold(entries)
        lines.append(f"{incident_id}: {args.status} · {args.message}")
    return _tell_step(desk, args, incident_id, state, step, "update", lines)


def cmd_resolve(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    incident_id = _incident_id(desk, args)
    state, entries = _existing(desk, incident_id)
    lines = []
    if state.get("status") == "resolved":
        lines.append(f"{incident_id} was resolved at {state['resolved_at']}: nothing new written")
    elif args.check:
        state = dict(state, status="resolved", resolution=args.message, root_cause=args.root_cause or None)
        lines.append(f"would resolve {incident_id}")
    else:
        entries.append(
            desk.append(incident_id, "resolved", message=args.message, root_cause=args.root_cause or None)
        )
        state = desk.fold(entries)
        lines.append(f"{incident_id} resolved · {state.get('title')}")
    expired, warnings = _expire_silences(desk, incident_id, args.check)
    lines += [f"  silence {s} expired" for s in expired]
    lines += [f"warning: {w}" for w in warnings]
    return _tell_step(
        desk, args, incident_id, state, "resolved", "resolve", lines, warnings, silences_expired=expired
    )


# The template of each of the incident's own events.
EVENT_TEMPLATES = {"open": "opened", "update": "update", "resolve": "resolved"}


def _tell_step(desk, args, incident_id, state, step, event, lines, warnings=(), **extra):
    """Tells the severity's channels of one of the incident's events; the command's outcome."""
    outcomes = desk.tell(
        incident_id,
        state,
        step,
        desk.policy.told_on(state["severity"], event),
        EVENT_TEMPLATES[event],
        check_mode=args.check,
    )
    return EXIT_OK, {
        "incident": incident_id,
        "state": state,
        "deliveries": outcomes,
        "warnings": [*warnings, *_warnings(outcomes)],
        "lines": lines + _delivery_lines(outcomes),
        **extra,
    }


def cmd_show(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure

    incident_id = _incident_id(desk, args)
    warnings = []
    try:
        state, entries = _existing(desk, incident_id)
    except Failure as exc:
        cached = desk.cached(incident_id)
        if cached is None:
            raise
        warnings.append(f"the record is unreachable ({exc}); showing the local copy")
        entries, state = cached, desk.fold(cached)
    due = [r for r in desk.escalations_due(state) if r["name"] not in desk.escalated(entries)]
    lines = [f"warning: {w}" for w in warnings] + describe(desk, state, entries, due)
    return EXIT_OK, {
        "incident": incident_id,
        "state": state,
        "entries": entries,
        "escalations_due": due,
        "warnings": warnings,
        "lines": lines,
    }


def cmd_list(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    rows = []
    for incident_id in desk.record.incident_ids():
        state = desk.fold(desk.record.entries(incident_id))
        rows.append(
            {k: state.get(k) for k in ("id", "severity", "status", "opened_at", "resolved_at", "title")}
            | {"id": incident_id}
        )
    lines = [
        f"{r['id']:<26} {r['severity'] or '-':<3} {r['status'] or 'procedures only':<16} "
        f"{r['opened_at'] or '':<25} {r['title'] or ''}"
        for r in rows
    ] or ["no incident in the record"]
    return EXIT_OK, {"incidents": rows, "lines": lines}


def cmd_escalate(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    incident_id = _incident_id(desk, args)
    state, entries = _existing(desk, incident_id)
    lines, outcomes = [], []
    due = desk.escalations_due(state)
    if not due:
        lines.append(f"{incident_id}: no escalation is due")
    for rule in due:
        step = f"escalation:{rule['name']}"
        told = desk.tell(
            incident_id, state, step, rule["channels"], "escalation", {"who": rule["who"]}, args.check
        )
        outcomes += told
        if rule["name"] not in desk.escalated(entries) and not args.check:
            desk.append(
                incident_id, "escalated", rule=rule["name"], who=rule["who"], channels=rule["channels"]
            )
        lines.append(
            f"{incident_id}: escalation to {rule['who']} ({rule['name']}, after {rule['after_minutes']} min)"
        )
        lines += _delivery_lines(told)
    return EXIT_OK, {
        "incident": incident_id,
        "due": due,
        "deliveries": outcomes,
        "warnings": _warnings(outcomes),
        "lines": lines,
    }


def cmd_report(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    from driver import postmortem

    incident_id = _incident_id(desk, args)
    state, entries = _existing(desk, incident_id)
    out = Path(args.out) if args.out else Path(args.incidents_dir) / incident_id / "report"
    response = (desk.policy.severities.get(state.get("severity") or "") or {}).get("response_minutes")
    if args.check:
        return EXIT_OK, {"incident": incident_id, "lines": [f"would write the post-mortem draft into {out}"]}
    paths = postmortem.write_report(
        entries, out, platform=desk.policy.platform_name, response_minutes=response
    )
    lines = [f"post-mortem draft of {incident_id}:", f"  {paths['markdown']}", f"  {paths['html']}"]
    return EXIT_OK, {"incident": incident_id, "paths": {k: str(v) for k, v in paths.items()}, "lines": lines}


def cmd_notify(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    incident_id = _incident_id(desk, args)
    unknown = [c for c in args.channels if c not in desk.policy.channels]
    if unknown:
        raise InputError(
            f"--channel {', '.join(unknown)}: not a channel of the inventory "
            f"({', '.join(desk.policy.channels)})"
        )
    desk.render(
        args.template, {}, {"message": args.message}
    )  # an unknown template is refused before anything is sent
    state, _entries = _existing(desk, incident_id)
    step = f"manual:{args.template}:{digest(args.template, args.message)}"
    outcomes = desk.tell(
        incident_id, state, step, args.channels, args.template, {"message": args.message}, args.check
    )
    lines = [f"{incident_id}: {args.template}", *_delivery_lines(outcomes)]
    code = EXIT_FAILED if any(o["status"] == "failed" for o in outcomes) else EXIT_OK
    return code, {
        "incident": incident_id,
        "deliveries": outcomes,
        "warnings": _warnings(outcomes),
        "lines": lines,
    }


def cmd_silence(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    from ansible_collections.emergency.ops.plugins.module_utils.silences import parse_duration, parse_matcher

    try:
        matchers = [parse_matcher(m) for m in args.matchers]
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    alertmanager = _alertmanager(desk)
    incident_id = _incident_id(desk, args)
    state, _ = _existing(desk, incident_id)
    if state.get("status") == "resolved":
        raise Refused(f"incident {incident_id} is resolved; its silences were expired")
    action, silence = alertmanager.silence(
        incident_id, matchers, duration, args.comment, desk.operator, args.check
    )
    if action != "unchanged" and not args.check:
        desk.append(
            incident_id,
            "silence",
            action=action,
            silence_id=silence["id"],
            matchers=matchers,
            ends_at=silence["endsAt"],
            comment=args.comment,
        )
    verb = {"created": "created", "extended": "extended", "unchanged": "already lasts as long"}[action]
    if args.check:
        verb = f"would be {action}"
    shown = ", ".join(_matcher_text(m) for m in matchers)
    lines = [f"{incident_id}: silence {silence.get('id') or ''} {verb} · {shown} · until {silence['endsAt']}"]
    return EXIT_OK, {"incident": incident_id, "action": action, "silence": silence, "lines": lines}


def cmd_unsilence(desk: Desk, args) -> tuple[int, dict[str, Any]]:
    incident_id = _incident_id(desk, args)
    _existing(desk, incident_id)
    expired, _ = _expire_silences(desk, incident_id, args.check, strict=True)
    lines = [f"{incident_id}: silence {s} {'would be ' if args.check else ''}expired" for s in expired] or [
        f"{incident_id}: no active silence"
    ]
    return EXIT_OK, {"incident": incident_id, "expired": expired, "lines": lines}


def _alertmanager(desk: Desk):
    from ansible_collections.emergency.ops.plugins.module_utils.silences import Alertmanager

    if not desk.policy.alertmanager_url:
        raise InputError("platform_incident.alertmanager_url is not set in the inventory")
    return Alertmanager(desk.policy.alertmanager_url)


def _expire_silences(
    desk: Desk, incident_id: str, check: bool, strict: bool = False
) -> tuple[list[str], list[str]]:
    """Expires the incident's active silences; when Alertmanager is down, says so (and raises when
    ``strict``: unsilence exists only for this)."""
    from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure

    if not desk.policy.alertmanager_url:
        return [], []
    alertmanager = _alertmanager(desk)
    try:
        found = alertmanager.incident_silences(incident_id)
        for silence in found:
            if not check:
                alertmanager.expire(silence["id"])
                desk.append(
                    incident_id,
                    "silence",
                    action="expired",
                    silence_id=silence["id"],
                    matchers=silence["matchers"],
                )
        return [s["id"] for s in found], []
    except Failure as exc:
        if strict:
            raise
        return [], [f"the incident's silences were not expired: {exc}"]


def _matcher_text(m: dict[str, Any]) -> str:
    op = ("=" if m["isEqual"] else "!=") if not m["isRegex"] else ("=~" if m["isEqual"] else "!~")
    return f"{m['name']}{op}{m['value']}"


def _level_name(desk: Desk, level: str) -> str:
    return (desk.policy.severities.get(level) or {}).get("name") or ""


def describe(
    desk: Desk, state: dict[str, Any], entries: list[dict[str, Any]], due: list[dict[str, Any]]
) -> list[str]:
    """The incident as an operator reads it at a terminal."""
    level = state.get("severity")
    lines = [
        f"{state.get('id')} · {level or '-'} {_level_name(desk, level or '')} · "
        f"{state.get('status') or 'procedures only'} · {state.get('title') or ''}",
        f"  opened {state.get('opened_at') or '-'} by {state.get('opened_by') or '-'}"
        + (f" · resolved {state['resolved_at']}" if state.get("resolved_at") else ""),
    ]
    if state.get("services"):
        lines.append(f"  services: {', '.join(state['services'])}")
    response = (desk.policy.severities.get(level or "") or {}).get("response_minutes")
    if response is not None and state.get("opened_at"):
        lines.append(
            f"  acknowledged {state['acknowledged_at']}"
            if state.get("acknowledged_at")
            else f"  not acknowledged yet (respond within {response} min)"
        )
    for rule in due:
        lines.append(
            f"  escalation due: {rule['who']} ({rule['name']}); run `incident escalate` to tell them"
        )
    for silence in state.get("silences") or []:
        lines.append(f"  silence {silence.get('silence_id')} until {silence.get('ends_at')}")
    lines.append("  timeline:")
    lines += [f"    {e.get('at')}  {e.get('by') or '-':<10} {timeline_text(e)}" for e in entries]
    return lines


def timeline_text(e: dict[str, Any]) -> str:
    kind = e.get("kind")
    if kind == "opened":
        return f"opened {e.get('severity')} {e.get('title')!r}" + (
            f" ({', '.join(e['services'])})" if e.get("services") else ""
        )
    if kind == "status":
        return f"status {e.get('status')}: {e.get('message')}"
    if kind == "resolved":
        return f"resolved: {e.get('message')}" + (
            f" (root cause: {e['root_cause']})" if e.get("root_cause") else ""
        )
    if kind == "procedure":
        if e.get("event") == "started":
            mode = " (check mode)" if e.get("check_mode") else ""
            return f"{e.get('procedure')} started{mode} [{e.get('run')}]"
        changed = "" if "changed" not in e else ", changed" if e["changed"] else ", nothing changed"
        return f"{e.get('procedure')} {e.get('status')}{changed} [{e.get('run')}]"
    if kind == "notified":
        extra = f" ({e.get('error')})" if e.get("status") == "failed" else ""
        return f"told {e.get('channel')} ({e.get('step')}): {e.get('status')}{extra}"
    if kind == "silence":
        return f"silence {e.get('silence_id')} {e.get('action')}" + (
            f" until {e['ends_at']}" if e.get("ends_at") else ""
        )
    if kind == "escalated":
        return f"escalated to {e.get('who')} ({e.get('rule')})"
    if kind == "evidence":
        return f"evidence bundle {e.get('bundle')} manifest sha256 {e.get('manifest_sha256')}"
    return kind or "?"


HANDLERS = {
    "incident open": cmd_open,
    "incident update": cmd_update,
    "incident resolve": cmd_resolve,
    "incident show": cmd_show,
    "incident list": cmd_list,
    "incident escalate": cmd_escalate,
    "incident report": cmd_report,
    "notify": cmd_notify,
    "silence": cmd_silence,
    "unsilence": cmd_unsilence,
}
