"""The post-mortem draft of an incident, from its shared record: ``postmortem.md`` and one self-contained
``postmortem.html`` (inline CSS and an inline SVG timeline chart; nothing loaded from anywhere).

Everything in it is derived from the record's entries (see ``incident_record.fold``): the summary, the
response times, the timeline, what each procedure changed, the evidence bundles and which items of the
runbooks' checklists the record shows done. What the record cannot show is marked "to check".
"""

from __future__ import annotations

import datetime
import html
import io
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from ansible_collections.emergency.ops.plugins.module_utils.incident_record import fold

UTC = datetime.UTC
CHANNEL_KINDS = ("slack", "pagerduty", "statuspage", "webhook")
DONE, NOT_DONE, TO_CHECK = "done", "not done", "to check (not in the record)"
MARKS = {DONE: "[x]", NOT_DONE: "[ ]", TO_CHECK: "[?]"}
PHASE_COLOURS = {
    "investigating": "#f28e2b",
    "identified": "#edc948",
    "monitoring": "#4e79a7",
    "resolved": "#59a14f",
}
RUN_COLOURS = {
    "succeeded": "#2e8b57",
    "failed": "#d62728",
    "refused": "#e377c2",
    "invalid": "#9467bd",
    "unreachable": "#7f7f7f",
    "cancelled": "#bcbd22",
    "running": "#17becf",
}
SEVERITY_COLOURS = {"P0": "#7b1010", "P1": "#c62828", "P2": "#ef6c00", "P3": "#9e8600"}
MAX_LINES, MAX_ITEMS, MAX_TEXT = 40, 12, 160


# -- reading the record ----------------------------------------------------------------------------
def _when(text: Any) -> datetime.datetime | None:
    """An entry's ``at`` (ISO 8601, ``Z`` or an offset) as an aware UTC datetime; None if unreadable."""
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _span(delta: datetime.timedelta) -> str:
    """A duration as an operator says it: ``45 s``, ``4 min 30 s``, ``2 h 05 min``."""
    seconds = max(0, round(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _offset(delta: datetime.timedelta) -> str:
    """Time since the incident opened, ``+04:30`` or ``+1:02:03``."""
    seconds = round(delta.total_seconds())
    sign, seconds = ("-" if seconds < 0 else "+"), abs(seconds)
    hours, rest = divmod(seconds, 3600)
    return (
        f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{sign}{rest // 60:02d}:{rest % 60:02d}"
    )


def _is_notification(entry: dict) -> bool:
    """A delivery on the timeline: kind ``notified``, or (as a delivery's own ``kind`` field may
    overwrite the entry's) the channel kind itself with a channel and a step."""
    kind = entry.get("kind")
    return kind == "notified" or (kind in CHANNEL_KINDS and "channel" in entry and "step" in entry)


def _channel_kind(entry: dict) -> str:
    kind = entry.get("channel_kind") or entry.get("kind")
    if kind in CHANNEL_KINDS:
        return kind
    return "statuspage" if entry.get("template") == "status_page" else ""


def _runs(entries: list[dict]) -> list[dict]:
    """Each procedure run with its ``started`` and ``finished`` entries (either may be missing)."""
    runs: list[dict] = []
    running: dict[str, dict] = {}
    for entry in entries:
        if entry.get("kind") != "procedure" or _when(entry.get("at")) is None:
            continue
        key = entry.get("run") or entry.get("procedure") or ""
        if entry.get("event") == "started":
            running[key] = {"started": entry, "finished": None}
            runs.append(running[key])
        elif entry.get("event") == "finished":
            run = running.pop(key, None)
            if run is None:
                runs.append({"started": None, "finished": entry})
            else:
                run["finished"] = entry
    return runs


def _phases(
    entries: list[dict], end: datetime.datetime
) -> list[tuple[str, datetime.datetime, datetime.datetime]]:
    """The incident's status over time: (status, from, to), one per change of status."""
    changes: list[tuple[str, datetime.datetime]] = []
    timed = sorted((e for e in entries if _when(e.get("at"))), key=lambda e: _when(e["at"]))
    for entry in timed:
        moment, kind = _when(entry["at"]), entry.get("kind")
        status = {"opened": "investigating", "resolved": "resolved"}.get(kind) or (
            entry.get("status") if kind == "status" else None
        )
        if status is None or (kind == "opened" and changes):
            continue
        if changes and changes[-1][0] == status:
            continue
        changes.append((status, moment))
    bounds = [moment for _, moment in changes[1:]] + [max(end, changes[-1][1])] if changes else []
    return [(status, start, stop) for (status, start), stop in zip(changes, bounds, strict=True)]


# -- describing entries ----------------------------------------------------------------------------
def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A value on one line, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} chars)"


def _matchers(matchers: list[dict] | None) -> str:
    ops = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
    return ", ".join(
        f"{m.get('name')}{ops[(bool(m.get('isRegex')), m.get('isEqual', True) is not False)]}{m.get('value')}"
        for m in matchers or []
    )


def _describe_procedure(entry: dict) -> str:
    name, run = entry.get("procedure") or "procedure", entry.get("run")
    details = [f"run {run}" if run else "", "check mode" if entry.get("check_mode") else ""]
    if entry.get("event") == "started":
        where = f" ({', '.join(d for d in details if d)})" if any(details) else ""
        inputs = ", ".join(f"{k}={_text(v, 60)}" for k, v in (entry.get("inputs") or {}).items())
        reason = f": {_text(entry['reason'])}" if entry.get("reason") else ""
        return f"started {name}{where}{reason}" + (f" [inputs: {inputs}]" if inputs else "")
    verb = "would have changed" if entry.get("check_mode") else "changed"
    changed = f"{verb} the platform" if entry.get("changed") else "changed nothing"
    details.append(f"exit {entry['exit_code']}" if entry.get("exit_code") is not None else "")
    if entry.get("duration_seconds") is not None:
        details.append(_span(datetime.timedelta(seconds=float(entry["duration_seconds"]))))
    where = f" ({', '.join(d for d in details if d)})" if any(details) else ""
    errors = [e.get("message", e) if isinstance(e, dict) else e for e in entry.get("errors") or []]
    text = f"{name} {entry.get('status') or 'finished'}, {changed}{where}"
    return text + (f"; errors: {_text('; '.join(map(str, errors)))}" if errors else "")


def _describe_notification(entry: dict) -> str:
    kind = _channel_kind(entry)
    channel = (
        f"{entry.get('channel')} ({kind})" if kind and kind != entry.get("channel") else entry.get("channel")
    )
    outcome = entry.get("status") or "unknown"
    if outcome != "sent":
        details = [f"{entry['attempts']} attempts" if entry.get("attempts") else ""]
        details.append(f"HTTP {entry['http_status']}" if entry.get("http_status") else "")
        details.append(_text(entry["error"]) if entry.get("error") else "")
        outcome += f" ({', '.join(d for d in details if d)})" if any(details) else ""
    return f"notified {channel} of {entry.get('step')}: {outcome}"


def describe(entry: dict) -> str:
    """One readable line for one entry of the record."""
    kind = entry.get("kind")
    if kind == "opened":
        services = ", ".join(entry.get("services") or []) or "no service named"
        text = f"opened {entry.get('severity')} “{_text(entry.get('title'))}” on {services}"
        return text + (f": {_text(entry['message'])}" if entry.get("message") else "")
    if kind == "status":
        text = f"status {entry.get('status')}" + (
            f", severity {entry['severity']}" if entry.get("severity") else ""
        )
        return text + (f": {_text(entry['message'])}" if entry.get("message") else "")
    if kind == "resolved":
        text = f"resolved: {_text(entry.get('message') or '')}".rstrip(": ")
        return text + (f" (root cause: {_text(entry['root_cause'])})" if entry.get("root_cause") else "")
    if kind == "procedure":
        return _describe_procedure(entry)
    if kind == "evidence":
        return (
            f"evidence bundle {entry.get('bundle')} saved (sha256 {str(entry.get('manifest_sha256'))[:16]}…)"
        )
    if _is_notification(entry):
        return _describe_notification(entry)
    if kind == "silence":
        until = f" until {_stamp(_when(entry['ends_at']))}" if _when(entry.get("ends_at")) else ""
        matchers = _matchers(entry.get("matchers"))
        text = f"silence {entry.get('silence_id')} {entry.get('action')}: {matchers}{until}"
        return text + (f" — {_text(entry['comment'])}" if entry.get("comment") else "")
    if kind == "escalated":
        channels = ", ".join(entry.get("channels") or [])
        return f"escalated ({entry.get('rule')}) to {entry.get('who')}" + (
            f" via {channels}" if channels else ""
        )
    skip = {"schema", "incident", "at", "kind", "by", "host", "key"}
    return f"{kind}: {_text({k: v for k, v in entry.items() if k not in skip})}"


def _stamp(moment: datetime.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "not yet"


# -- what changed ----------------------------------------------------------------------------------
def outline(value: Any, depth: int = 0) -> list[str]:
    """Nested dicts and lists as indented ``key: value`` lines; long lists and texts are cut."""
    pad = "  " * depth
    if depth > 6:
        return [pad + _text(value, 80)]
    if isinstance(value, dict) and value:
        lines: list[str] = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines += [f"{pad}{key}:", *outline(item, depth + 1)]
            else:
                lines.append(f"{pad}{key}: {_text(item)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value[:MAX_ITEMS]:
            nested = outline(item, depth + 1) if isinstance(item, dict | list) and item else []
            lines += [f"{pad}-", *nested] if nested else [f"{pad}- {_text(item)}"]
        return lines + ([f"{pad}… {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else [])
    return [pad + _text(value)]


def _capped(lines: list[str]) -> list[str]:
    return (
        lines if len(lines) <= MAX_LINES else [*lines[:MAX_LINES], f"… {len(lines) - MAX_LINES} more lines"]
    )


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(_leaves(item, f"{path}.{key}" if path else str(key)))
        return found
    return {path: value}


def changes(runs: list[dict]) -> list[dict]:
    """Per finished, non-check-mode run: its prior state, its outputs and the values that moved."""
    found = []
    for run in runs:
        done = run["finished"]
        if not done or done.get("check_mode"):
            continue
        prior, outputs = done.get("prior_state") or {}, done.get("outputs") or {}
        # Outputs are published under the procedure's name; its prior state is not.
        after = outputs.get(done.get("procedure")) if len(outputs) == 1 else None
        before_leaves, after_leaves = _leaves(prior), _leaves(after if isinstance(after, dict) else outputs)
        moved = [
            f"{path}: {_text(before_leaves[path], 60)} -> {_text(after_leaves[path], 60)}"
            for path in before_leaves
            if path and path in after_leaves and before_leaves[path] != after_leaves[path]
        ]
        found.append(
            {
                "entry": done,
                "title": describe(done),
                "before": _capped(outline(prior)) if prior else ["(nothing recorded)"],
                "after": _capped(outline(outputs)) if outputs else ["(nothing reported)"],
                "moved": moved,
            }
        )
    return found


# -- the checklists --------------------------------------------------------------------------------
def _sent(notifications: list[dict], step: str, kind: str | None = None) -> list[dict]:
    return [
        n
        for n in notifications
        if n.get("status") == "sent"
        and (step == "*" or n.get("step") == step)
        and (kind is None or _channel_kind(n) == kind)
    ]


def _by(entry: dict, clock) -> str:
    return f"{entry.get('by') or 'someone'} at {clock(_when(entry.get('at')))}"


def checklists(facts: dict) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """The runbooks' post-incident checklists, each item (label, state, why) as the record shows it."""
    state, clock, notes = facts["state"], facts["clock"], facts["notifications"]
    resolved = [e for e in facts["entries"] if e.get("kind") == "resolved"]
    finished = [r["finished"] for r in facts["runs"] if r["finished"] and not r["finished"].get("check_mode")]
    if state["status"] != "resolved":
        restored = (NOT_DONE, f"the incident is {state['status'] or 'not opened'}")
    elif not finished:
        restored = (TO_CHECK, "resolved, but no procedure on the record")
    elif finished[-1].get("status") == "succeeded":
        last = finished[-1]
        restored = (DONE, f"{last.get('procedure')} succeeded ({_by(last, clock)}), then resolved")
    else:
        restored = (
            NOT_DONE,
            f"the last procedure, {finished[-1].get('procedure')}, {finished[-1].get('status')}",
        )
    status_page = _sent(notes, "resolved", "statuspage")
    told = _sent(notes, "resolved")
    users = _sent(notes, "*", "statuspage")
    marked_resolved = (
        (DONE, f"resolved by {_by(resolved[-1], clock)}")
        if state["status"] == "resolved" and resolved
        else (NOT_DONE, f"status is {state['status']}")
    )
    documented = (DONE, f"this draft, from {len(facts['entries'])} entries of the record")
    cause = (
        (DONE, f"root cause recorded ({_by(resolved[-1], clock)}): {_text(state['root_cause'], 80)}")
        if state["root_cause"] and resolved
        else (NOT_DONE, "no root cause on the record")
    )
    evidence = state["evidence"]
    kept = (
        (DONE, ", ".join(f"{e.get('bundle')} ({_by(e, clock)})" for e in evidence))
        if evidence
        else (NOT_DONE, "no evidence bundle on the record")
    )
    active = [s.get("silence_id") for s in state["silences"]]
    alerts = (TO_CHECK, f"silences still active: {', '.join(map(str, active))}" if active else "")

    def told_by(sent: list[dict], missing: str) -> tuple[str, str]:
        if sent:
            return DONE, "; ".join(f"sent to {n.get('channel')} ({_by(n, clock)})" for n in sent)
        return NOT_DONE, missing

    page = told_by(status_page, "no status page notification of 'resolved' was sent")
    stakeholders = told_by(told, "no notification of 'resolved' was sent")
    return [
        (
            "000",
            "Post-Emergency Checklist",
            [
                ("All services restored and healthy", *restored),
                ("Metrics showing normal operation", TO_CHECK, ""),
                ("No alerts firing", *alerts),
                ("Status page updated to resolved", *page),
                ("Stakeholders notified", *stakeholders),
                ("Incident documented", *documented),
                ("Post-mortem scheduled", TO_CHECK, ""),
                ("Evidence preserved for analysis", *kept),
            ],
        ),
        (
            "001",
            "Post-Incident Checklist",
            [
                ("Incident timeline documented", *documented),
                ("Root cause identified", *cause),
                ("Fix verified in production", TO_CHECK, ""),
                ("Monitoring alerts updated", TO_CHECK, ""),
                ("Runbook updated with lessons learned", TO_CHECK, ""),
                ("Post-mortem scheduled (within 48 hours)", TO_CHECK, ""),
                ("User communication sent", *told_by(users, "nothing was sent to a status page")),
                ("Compensation plan executed (if applicable)", TO_CHECK, ""),
                ("Prevention measures implemented", TO_CHECK, ""),
                ("Team debrief completed", TO_CHECK, ""),
            ],
        ),
        (
            "003",
            "Immediate Post-Recovery",
            [
                ("Verify all systems operational", *restored),
                ("Update incident status to resolved", *marked_resolved),
                ("Notify stakeholders of resolution", *stakeholders),
                ("Document timeline and actions taken", *documented),
                ("Schedule post-incident review", TO_CHECK, ""),
            ],
        ),
    ]


# -- the facts both formats show -------------------------------------------------------------------
def _response_target(
    opened: datetime.datetime, acked: datetime.datetime | None, minutes: int | None, now: datetime.datetime
) -> str | None:
    """Whether the acknowledgement met the response target (``met: ...``, ``missed: ...``)."""
    if minutes is None:
        return None
    limit = datetime.timedelta(minutes=minutes)
    if acked is None:
        passed = "has passed" if now - opened > limit else "has not passed yet"
        return f"not yet acknowledged; the {minutes} min response target {passed}"
    if acked - opened <= limit:
        return f"met: acknowledged in {_span(acked - opened)}, within the {minutes} min target"
    late = _span(acked - opened - limit)
    return f"missed: acknowledged in {_span(acked - opened)}, {late} over the {minutes} min target"


def gather(entries: list[dict], platform: str, response_minutes: int | None, now: datetime.datetime) -> dict:
    """Everything the report shows, derived once from the record."""
    state = fold(entries)
    opened = _when(state["opened_at"]) or (_when(entries[0].get("at")) if entries else None) or now
    resolved = _when(state["resolved_at"])
    times = [t for t in (_when(e.get("at")) for e in entries) if t]
    end = resolved or now
    single_day = all(t.date() == opened.date() for t in [*times, end])

    def clock(moment: datetime.datetime | None) -> str:
        if moment is None:
            return "not yet"
        return moment.strftime("%H:%M:%S" if single_day else "%Y-%m-%d %H:%M:%S")

    measures = {}
    for name, key in (
        ("acknowledge", "acknowledged_at"),
        ("mitigate", "mitigated_at"),
        ("resolve", "resolved_at"),
    ):
        moment = _when(state[key])
        measures[name] = (_span(moment - opened) if moment else "not yet", moment)
    target = _response_target(opened, _when(state["acknowledged_at"]), response_minutes, now)
    runs = _runs(entries)
    facts = {
        "state": state,
        "entries": entries,
        "platform": platform,
        "name": state["id"] or "incident",
        "now": now,
        "opened": opened,
        "end": end,
        "last": max([*times, end]),
        "clock": clock,
        "date": opened.strftime("%Y-%m-%d"),
        "single_day": single_day,
        "duration": _span(end - opened) + ("" if resolved else " so far"),
        "span": _span(end - opened),
        "measures": measures,
        "target": target,
        "runs": runs,
        "phases": _phases(entries, end),
        "notifications": [e for e in entries if _is_notification(e)],
        "changes": changes(runs),
        "timeline": [
            (clock(_when(e.get("at"))), _offset(_when(e.get("at")) - opened) if _when(e.get("at")) else "", e)
            for e in entries
        ],
    }
    facts["checklists"] = checklists(facts)
    return facts


def _summary_rows(facts: dict) -> list[tuple[str, str]]:
    state = facts["state"]
    resolved = [e for e in facts["entries"] if e.get("kind") == "resolved" and e.get("by")]
    return [
        ("Incident", state["id"] or "?"),
        ("Title", state["title"] or "?"),
        ("Severity", state["severity"] or "?"),
        ("Services", ", ".join(state["services"]) or facts["platform"]),
        ("Status", state["status"] or "?"),
        ("Opened", f"{_stamp(facts['opened'])} by {state['opened_by'] or '?'}"),
        (
            "Resolved",
            _stamp(_when(state["resolved_at"])) + (f" by {resolved[-1].get('by')}" if resolved else ""),
        ),
        ("Duration", facts["duration"]),
        ("Root cause", state["root_cause"] or "not on the record yet"),
        ("Resolution", state["resolution"] or "not resolved yet"),
        ("Operators", ", ".join(state["operators"]) or "?"),
    ]


def _impact_rows(facts: dict) -> list[tuple[str, str]]:
    state = facts["state"]
    return [
        ("Services affected", ", ".join(state["services"]) or f"{facts['platform']} (no service named)"),
        ("Severity", state["severity"] or "?"),
        ("Duration", facts["duration"]),
        ("Last said", state["last_message"] or "(nothing)"),
    ]


def _measure_rows(facts: dict) -> list[tuple[str, str, str]]:
    names = {"acknowledge": "Time to acknowledge (TTA)", "mitigate": "Time to mitigate (TTM)"}
    names["resolve"] = "Time to resolve (TTR)"
    return [(names[key], span, facts["clock"](moment)) for key, (span, moment) in facts["measures"].items()]


# -- Markdown --------------------------------------------------------------------------------------
def _md(text: Any) -> str:
    """Text for a Markdown table cell or line: one line, pipes and angle brackets escaped."""
    return " ".join(str(text).split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<")


def render_markdown(facts: dict) -> str:
    state = facts["state"]
    out = [f"# Post-mortem (draft): {_md(state['title'] or facts['name'])}", ""]
    out += [
        f"{_md(facts['name'])} on {_md(facts['platform'])}; drafted {_stamp(facts['now'])} from the record.",
        "",
    ]
    out += ["## Summary", "", "| | |", "|---|---|"]
    out += [f"| {name} | {_md(value)} |" for name, value in _summary_rows(facts)]
    out += ["", "## Impact", ""] + [f"- **{name}:** {_md(value)}" for name, value in _impact_rows(facts)]
    out += ["", "## Response times", "", "| Measure | Since opened | At |", "|---|---|---|"]
    out += [f"| {name} | {span} | {at} |" for name, span, at in _measure_rows(facts)]
    if facts["target"]:
        out += ["", f"Response target: {facts['target']}."]
    zone = f"UTC, {facts['date']}" if facts["single_day"] else "UTC"
    out += ["", f"## Timeline ({zone})", "", "| Time | T+ | Who | What |", "|---|---|---|---|"]
    out += [
        f"| {at} | {offset} | {_md(e.get('by') or '')} | {_md(describe(e))} |"
        for at, offset, e in facts["timeline"]
    ]
    out += ["", "## What changed", ""]
    if not facts["changes"]:
        out += ["No procedure changed the platform (none finished outside check mode).", ""]
    for change in facts["changes"]:
        done = change["entry"]
        at = facts["clock"](_when(done["at"]))
        out += [f"### {_md(done.get('procedure'))} ({_md(done.get('run') or '')}), {at}"]
        out += ["", _md(change["title"]), ""]
        out += [f"- {_md(line)}" for line in change["moved"]] + ([""] if change["moved"] else [])
        out += ["Prior state:", ""] + [f"    {line}" for line in change["before"]]
        out += ["", "New state (outputs):", ""] + [f"    {line}" for line in change["after"]] + [""]
    out += ["## Evidence", ""]
    evidence = facts["state"]["evidence"]
    if evidence:
        out += ["| Bundle | Manifest sha256 | Saved | Path |", "|---|---|---|---|"]
        out += [
            f"| {_md(e.get('bundle'))} | `{_md(e.get('manifest_sha256'))}` | {_md(_by(e, facts['clock']))} "
            f"| {_md(e.get('path') or '')} |"
            for e in evidence
        ]
    else:
        out += ["No evidence bundle on the record."]
    out += ["", "## Checklists", "", "[x] done, [ ] not done, [?] to check: the record cannot show it.", ""]
    for number, title, items in facts["checklists"]:
        out += [f"### Runbook {number}: {title}", ""]
        for label, status, why in items:
            out.append(f"- {MARKS[status]} {label}: {status}" + (f" ({_md(why)})" if why else ""))
        out.append("")
    return "\n".join(out)


# -- the chart -------------------------------------------------------------------------------------
def _label(text: Any, limit: int = 30) -> str:
    """Record text for a matplotlib label: short, and no ``$`` read as mathtext."""
    text = _text(text, limit)
    return text.replace("$", r"\$")


MARKERS = {"silence": ("v", "#8c564b"), "evidence": ("D", "#1f77b4"), "escalated": ("^", "#d62728")}
MILESTONES = (
    ("acknowledge", ":", "acknowledged"),
    ("mitigate", "--", "mitigated"),
    ("resolve", "-", "resolved"),
)
OTHER_ROWS = (("silence", "Silences"), ("evidence", "Evidence"), ("escalated", "Escalations"))


def _chart_rows(facts: dict) -> list[str]:
    """The chart's rows, top to bottom: status, one per procedure run, one per channel, then the rest."""
    rows = ["Status"]
    rows += [
        _label(f"{(r['started'] or r['finished']).get('procedure')} {_run_name(r)}") for r in facts["runs"]
    ]
    rows += list(dict.fromkeys(_label(f"notify {n.get('channel')}") for n in facts["notifications"]))
    kinds = {e.get("kind") for e in facts["entries"]}
    return rows + [name for kind, name in OTHER_ROWS if kind in kinds]


def _draw_phases(axes, phases: list, right: float, width: float) -> None:
    """The status row, and each phase as a light band behind every row; the last lasts until the end."""
    from matplotlib.dates import date2num

    for index, (status, begin, end) in enumerate(phases):
        colour = PHASE_COLOURS.get(status, "#bbbbbb")
        x0, x1 = date2num(begin), right if index == len(phases) - 1 else date2num(end)
        axes.axvspan(x0, x1, color=colour, alpha=0.10, lw=0, zorder=0)
        axes.broken_barh([(x0, x1 - x0)], (-0.35, 0.7), facecolors=colour, zorder=2)
        if x1 - x0 > width * 0.07:
            ink = "#1b1b1b" if status == "identified" else "white"
            axes.text((x0 + x1) / 2, 0, status, ha="center", va="center", fontsize=9, color=ink, zorder=3)


def _draw_runs(axes, runs: list[dict], end: datetime.datetime, left: float, width: float) -> set[str]:
    """Each procedure run as a bar from its start to its finish (hatched in check mode), with a note;
    returns the statuses drawn."""
    from matplotlib.dates import date2num

    used = set()
    for index, run in enumerate(runs, start=1):
        began, done = run["started"], run["finished"]
        status = (done or {}).get("status") or "running"
        used.add(status)
        x0 = date2num(_when((began or done)["at"]))
        x1 = max(date2num(_when(done["at"]) if done else end), x0 + width * 0.004)
        check = bool((began or done).get("check_mode"))
        axes.broken_barh(
            [(x0, x1 - x0)],
            (index - 0.3, 0.6),
            facecolors=RUN_COLOURS.get(status, "#999999"),
            alpha=0.55 if check else 1.0,
            hatch="///" if check else None,
            edgecolor="#333333" if check else "none",
            zorder=3,
        )
        note = status + ((", would change" if check else ", changed") if (done or {}).get("changed") else "")
        note += ", check mode" if check else ""
        note += f" · {_span(_when(done['at']) - _when(began['at']))}" if began and done else ""
        at_right = x1 < left + width * 0.8
        x = x1 + width * 0.006 if at_right else x0 - width * 0.006
        axes.text(
            x, index, note, fontsize=8.5, va="center", ha="left" if at_right else "right", color="#333333"
        )
    return used


def _draw_markers(axes, facts: dict, row: dict[str, int]) -> None:
    """Notifications (sent or failed) on their channel's row; silences (with their active span),
    evidence and escalations on rows of their own."""
    from matplotlib.dates import date2num

    for note in (n for n in facts["notifications"] if _when(n.get("at"))):
        sent = note.get("status") == "sent"
        y = row[_label(f"notify {note.get('channel')}")]
        axes.plot(
            date2num(_when(note["at"])),
            y,
            marker="o" if sent else "X",
            markersize=7 if sent else 9,
            color="#2e8b57" if sent else "#d62728",
            markeredgecolor="white",
            linestyle="none",
            zorder=5,
        )
    for begin, end in _silence_spans(facts["entries"], facts["last"]):
        axes.hlines(row["Silences"], date2num(begin), date2num(end), color="#8c564b", linewidth=4, alpha=0.35)
    for kind, name in OTHER_ROWS:
        marker, colour = MARKERS[kind]
        for entry in (e for e in facts["entries"] if e.get("kind") == kind and _when(e.get("at"))):
            faded = kind == "silence" and entry.get("action") == "expired"
            axes.plot(
                date2num(_when(entry["at"])),
                row[name],
                marker=marker,
                markersize=8,
                color=colour,
                alpha=0.45 if faded else 1,
                linestyle="none",
                zorder=5,
            )
    for key, style, _ in MILESTONES:
        moment = facts["measures"][key][1]
        if moment:
            axes.axvline(date2num(moment), color="#444444", linestyle=style, linewidth=1, zorder=1)


def _legend_handles(facts: dict, used: set[str], rows: list[str]) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def dot(marker: str, colour: str, label: str) -> Line2D:
        return Line2D([], [], marker=marker, color=colour, linestyle="none", label=label)

    handles = [Patch(color=colour, label=status) for status, colour in PHASE_COLOURS.items()]
    handles += [Patch(color=RUN_COLOURS[s], label=f"procedure {s}") for s in RUN_COLOURS if s in used]
    if facts["notifications"]:
        handles += [dot("o", "#2e8b57", "notification sent"), dot("X", "#d62728", "notification failed")]
    handles += [dot(*MARKERS[kind], kind) for kind, name in OTHER_ROWS if name in rows]
    return handles + [Line2D([], [], color="#444444", linestyle=s, label=label) for _, s, label in MILESTONES]


def draw_chart(facts: dict) -> str:
    """The incident's timeline as an SVG element (no prologue): phases as bands, procedure runs as
    bars, notifications, silences, evidence and escalations as markers on rows of their own."""
    import matplotlib
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    start = facts["opened"]
    stop = max(facts["last"], start + datetime.timedelta(minutes=1))
    pad = (stop - start) * 0.03
    left, right = mdates.date2num(start - pad), mdates.date2num(stop + pad)
    rows = _chart_rows(facts)
    settings = {
        "svg.fonttype": "path",
        "svg.hashsalt": "postmortem",
        "font.size": 10,
        "font.family": "DejaVu Sans",
    }
    with matplotlib.rc_context(settings):
        figure = Figure(figsize=(12, 1.5 + 0.4 * len(rows)), layout="constrained")
        axes = figure.add_subplot()
        _draw_phases(axes, facts["phases"], right, right - left)
        used = _draw_runs(axes, facts["runs"], facts["end"], left, right - left)
        _draw_markers(axes, facts, {name: index for index, name in enumerate(rows)})
        axes.set_xlim(left, right)
        axes.set_ylim(len(rows) - 0.5, -0.5)
        axes.set_yticks(range(len(rows)), rows)
        axes.xaxis.set_major_formatter(
            mdates.DateFormatter("%H:%M" if facts["single_day"] else "%m-%d %H:%M", tz=UTC)
        )
        axes.set_xlabel(f"UTC, {facts['date']}" if facts["single_day"] else "UTC")
        axes.grid(axis="x", color="#dddddd", linewidth=0.6, zorder=0)
        for side in ("top", "right", "left"):
            axes.spines[side].set_visible(False)
        axes.tick_params(axis="y", length=0)
        handles = _legend_handles(facts, used, rows)
        figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return re.sub(r"<!--.*?-->", "", svg, flags=re.S)


def _silence_spans(
    entries: list[dict], last: datetime.datetime
) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """When each silence was active: from its creation to its expiry (or its end, or the chart's end)."""
    spans, created = [], {}
    for entry in (e for e in entries if e.get("kind") == "silence" and _when(e.get("at"))):
        key, moment = entry.get("silence_id"), _when(entry["at"])
        if entry.get("action") == "created":
            created[key] = (moment, entry)
        elif entry.get("action") == "expired" and key in created:
            spans.append((created.pop(key)[0], moment))
    for begin, entry in created.values():
        ends = _when(entry.get("ends_at"))
        spans.append((begin, min(ends, last) if ends else last))
    return spans


def _run_name(run: dict) -> str:
    entry = run["started"] or run["finished"]
    name = entry.get("run") or ""
    return name.split("-", 1)[0] if name.endswith(str(entry.get("procedure"))) else name


# -- HTML ------------------------------------------------------------------------------------------
CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #e3e6ec; --bg: #f5f6f8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 48px; }
header h1 { font-size: 26px; margin: 0 0 4px; }
header .sub { color: var(--muted); margin: 0 0 18px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr)); gap: 12px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.tile .k { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
.tile .v { font-size: 20px; font-weight: 700; margin-top: 2px; white-space: nowrap; }
.pair { display: grid; grid-template-columns: 3fr 2fr; gap: 18px; align-items: start; }
.pair > section, .pair > div > section:first-child { margin-top: 18px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px;
  margin-top: 18px; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
table { width: 100%; border-collapse: collapse; }
table.fixed { table-layout: fixed; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
table.kv th { width: 170px; text-transform: none; font-size: 14px; letter-spacing: 0; color: var(--ink); }
td.t, td.who { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.who .muted { font-size: 12px; }
td.muted, .muted { color: var(--muted); }
tr.bad td { background: #fdecec; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600;
  background: #e9ecf2; color: #333; white-space: nowrap; }
.badge.ok { background: #dff3e4; color: #1e6b36; } .badge.no { background: #fbe0e0; color: #9b1c1c; }
.badge.check { background: #fff3cd; color: #7a5a00; }
.chart svg { width: 100%; height: auto; display: block; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
pre { background: #f7f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
  margin: 4px 0 0; font: 13px/1.4 "DejaVu Sans Mono", monospace; white-space: pre-wrap;
  word-break: break-word; }
code { font: 13px "DejaVu Sans Mono", monospace; word-break: break-all; }
ul.moved { margin: 6px 0 4px; padding-left: 20px; }
ul.moved li { font-family: "DejaVu Sans Mono", monospace; font-size: 13px; }
td.mark { width: 34px; text-align: center; font-size: 17px; font-weight: 700; }
.mark.ok { color: #1e8a43; } .mark.no { color: #c62828; } .mark.check { color: #b58900; }
"""
KIND_BADGES = {"opened": "no", "resolved": "ok", "status": "check"}
MARK_STYLES = {DONE: ("ok", "✓"), NOT_DONE: ("no", "✗"), TO_CHECK: ("check", "?")}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _td(content: str, cls: str = "") -> str:
    """A table cell around HTML that is already escaped."""
    return f'<td class="{cls}">{content}</td>' if cls else f"<td>{content}</td>"


def _tr(cells: list[str], cls: str = "") -> str:
    return f'<tr class="{cls}">{"".join(cells)}</tr>' if cls else f"<tr>{''.join(cells)}</tr>"


def _table(headings: list[str], rows: list[str], cls: str = "", columns: str = "") -> str:
    head = _tr([f"<th>{_e(h)}</th>" for h in headings]) if headings else ""
    return f'<table class="{cls}">{columns}{head}{"".join(rows)}</table>'


def _badge(text: str, cls: str = "") -> str:
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _tile(key: str, value: str, colour: str | None = None) -> str:
    style = f' style="color:{colour}"' if colour else ""
    return f'<div class="tile"><div class="k">{_e(key)}</div><div class="v"{style}>{_e(value)}</div></div>'


def _kv_table(rows: list[tuple[str, str]]) -> str:
    return _table([], [_tr([f"<th>{_e(k)}</th>", _td(_e(v))]) for k, v in rows], "kv")


def _timeline_html(facts: dict) -> str:
    rows = []
    for at, offset, entry in facts["timeline"]:
        kind = "notified" if _is_notification(entry) else str(entry.get("kind"))
        finished = kind == "procedure" and entry.get("event") == "finished"
        bad = (kind == "notified" and entry.get("status") != "sent") or (
            finished and entry.get("status") != "succeeded"
        )
        host = f'<br><span class="muted">{_e(entry["host"])}</span>' if entry.get("host") else ""
        label = f"{kind} {entry.get('event')}" if kind == "procedure" else kind
        cells = [_td(_e(at), "t"), _td(_e(offset), "t muted"), _td(_e(entry.get("by") or "") + host, "who")]
        cells += [_td(_badge(label, KIND_BADGES.get(kind, ""))), _td(_e(describe(entry)))]
        rows.append(_tr(cells, "bad" if bad else ""))
    return _table(["Time", "T+", "Who", "Kind", "What"], rows)


def _changes_html(facts: dict) -> str:
    if not facts["changes"]:
        return '<p class="muted">No procedure changed the platform (none finished outside check mode).</p>'
    parts = []
    for change in facts["changes"]:
        done = change["entry"]
        title = f"{done.get('procedure')} · {done.get('run') or ''} · {facts['clock'](_when(done['at']))}"
        moved = "".join(f"<li>{_e(line.replace(' -> ', ' → '))}</li>" for line in change["moved"])
        before, after = (_e("\n".join(change[side])) for side in ("before", "after"))
        parts.append(
            f"<h3>{_e(title)}</h3><p>{_e(change['title'])}</p>"
            + (f'<ul class="moved">{moved}</ul>' if moved else "")
            + f'<div class="cols"><div><div class="muted">Prior state</div><pre>{before}</pre></div>'
            + f'<div><div class="muted">New state (outputs)</div><pre>{after}</pre></div></div>'
        )
    return "".join(parts)


def _evidence_html(facts: dict) -> str:
    evidence = facts["state"]["evidence"]
    if not evidence:
        return '<p class="muted">No evidence bundle on the record.</p>'
    rows = [
        _tr(
            [
                _td(_e(e.get("bundle"))),
                _td(f"<code>{_e(e.get('manifest_sha256'))}</code>"),
                _td(_e(_by(e, facts["clock"]))),
                _td(f"<code>{_e(e.get('path') or '')}</code>"),
            ]
        )
        for e in evidence
    ]
    return _table(["Bundle", "Manifest sha256", "Saved", "Path"], rows)


def _checklists_html(facts: dict) -> str:
    widths = ("40px", "36%", "200px", "auto")
    columns = "<colgroup>" + "".join(f'<col style="width:{w}">' for w in widths) + "</colgroup>"
    parts = []
    for number, title, items in facts["checklists"]:
        rows = []
        for label, status, why in items:
            style, mark = MARK_STYLES[status]
            cells = [
                _td(mark, f"mark {style}"),
                _td(_e(label)),
                _td(_badge(status, style)),
                _td(_e(why), "muted"),
            ]
            rows.append(_tr(cells))
        parts.append(f"<h3>Runbook {_e(number)}: {_e(title)}</h3>" + _table([], rows, "fixed", columns))
    return "".join(parts)


def _section(name: str, content: str) -> str:
    return f"<section><h2>{_e(name)}</h2>{content}</section>"


def render_html(facts: dict, chart: str) -> str:
    state = facts["state"]
    title = state["title"] or facts["name"]
    spans = facts["measures"]
    tiles = [
        _tile("Severity", state["severity"] or "?", SEVERITY_COLOURS.get(state["severity"] or "")),
        _tile("Status", state["status"] or "?", PHASE_COLOURS.get(state["status"] or "")),
        _tile("Duration" if state["resolved_at"] else "Duration so far", facts["span"]),
        _tile("Time to acknowledge", spans["acknowledge"][0]),
        _tile("Time to mitigate", spans["mitigate"][0]),
        _tile("Time to resolve", spans["resolve"][0]),
    ]
    if facts["target"]:
        met = facts["target"].startswith("met")
        tiles.append(_tile("Response target", facts["target"].split(":")[0], "#1e8a43" if met else "#c62828"))
    measures = [_tr([_td(_e(n)), _td(_e(s)), _td(_e(a))]) for n, s, a in _measure_rows(facts)]
    target = f"<p>Response target: {_e(facts['target'])}.</p>" if facts["target"] else ""
    response = _table(["Measure", "Since opened", "At"], measures) + target
    zone = f"UTC, {facts['date']}" if facts["single_day"] else "UTC"
    side = _section("Impact", _kv_table(_impact_rows(facts))) + _section("Response times", response)
    body = (
        _section("Timeline chart", f'<div class="chart">{chart}</div>')
        + f'<div class="pair">{_section("Summary", _kv_table(_summary_rows(facts)))}<div>{side}</div></div>'
        + _section(f"Timeline ({zone})", _timeline_html(facts))
        + _section("What changed", _changes_html(facts))
        + _section("Evidence", _evidence_html(facts))
        + _section("Checklists", _checklists_html(facts))
    )
    sub = (
        f"{facts['name']} on {facts['platform']} · post-mortem draft from the record, {_stamp(facts['now'])}"
    )
    header = f'<h1>{_e(title)}</h1><p class="sub">{_e(sub)}</p><div class="tiles">{"".join(tiles)}</div>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Post-mortem: {_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main><header>{header}</header>{body}</main></body></html>\n"
    )


# -- writing ---------------------------------------------------------------------------------------
def _write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` (mode 0600) through a fresh file renamed over it."""
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh, path)
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise


def write_report(
    entries: list[dict], out_dir: Path, platform: str = "platform", response_minutes: int | None = None
) -> dict:
    """Writes ``out_dir/postmortem.md`` and ``out_dir/postmortem.html`` from the incident's record
    entries (oldest first); returns their paths as ``{"markdown": ..., "html": ...}``."""
    out_dir = Path(out_dir)
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    facts = gather(entries, platform, response_minutes, datetime.datetime.now(UTC))
    paths = {"markdown": out_dir / "postmortem.md", "html": out_dir / "postmortem.html"}
    _write_private(paths["markdown"], render_markdown(facts))
    _write_private(paths["html"], render_html(facts, draw_chart(facts)))
    return paths
