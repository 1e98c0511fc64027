"""The incident desk: the shared record, the severity policy and the channels, as the commands
``incident``, ``notify``, ``silence`` and ``unsilence`` and the procedure runs use them.

Nothing here changes the platform, so these commands run in the driver's process, without a playbook:
an ``incident open`` reaches every channel within a second. The wire formats live in the collection's
module_utils (``incident_record``, ``channels``, ``silences``) so that the playbooks can use them too.

Every step that tells people (open, each status update, resolve, an escalation, a procedure's start
and end, a message sent by hand) has a name; its delivery to each channel is claimed in the record
before it is sent, so re-running a step, from any machine, sends nothing new. A channel that fails is
reported and put on the timeline; it never fails the command or the procedure that asked for it.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver import ROOT
from driver.argspec import validated_platform_option
from driver.incident import iso, utcnow
from driver.validate import InputError

SHIPPED_TEMPLATES = ROOT / "driver" / "templates"
LEVELS = ("P0", "P1", "P2", "P3")


def import_wire_formats():
    """Imports every module_utils of the collection the driver uses, as plain packages. Once part of
    the collection is imported this way, Ansible's collection loader (which templating the inventory
    installs) refuses to import the rest, so it is all imported here, first."""
    from ansible_collections.emergency.ops.plugins.module_utils import credentials, kube, lease  # noqa: F401

    return _utils()


def _utils():
    from ansible_collections.emergency.ops.plugins.module_utils import channels, incident_record, silences

    return channels, incident_record, silences


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Policy:
    """``platform_incident`` of the inventory, checked against the platform role's argument spec."""

    platform_name: str
    record: dict[str, Any]
    severities: dict[str, dict[str, Any]]
    aliases: dict[str, str]
    escalation: list[dict[str, Any]]
    channels: dict[str, dict[str, Any]]
    templates_dir: str
    procedures: dict[str, Any]
    alertmanager_url: str
    drill_targets: dict[str, Any]
    services: list[str] = field(default_factory=list)
    kube: dict[str, Any] = field(default_factory=dict)

    def level(self, given: str) -> str:
        """P0..P3, or one of the inventory's aliases (``Severity 1``)."""
        if given in LEVELS:
            return given
        for alias, level in self.aliases.items():
            if given.strip().lower() == str(alias).lower():
                return level
        names = ", ".join([*LEVELS, *map(str, self.aliases)])
        raise InputError(f"--severity {given[:40]!r}: choose from {names}")

    def told_on(self, severity: str | None, event: str) -> list[str]:
        return list((self.severities.get(severity or "") or {}).get(f"on_{event}") or [])


def load_policy(platform) -> Policy:
    """The policy of a loaded inventory (driver.inventory.Platform); InputError when it has none or it
    does not match the spec."""
    raw = platform.variables.get("platform_incident")
    if not raw:
        raise InputError(
            f"inventory {platform.inventory} has no platform_incident (see docs/procedures/incident.md)"
        )
    try:
        incident = platform.templated("platform_incident")
        backup = platform.templated("platform_backup") if platform.variables.get("platform_backup") else {}
    except Exception as exc:  # an undefined variable, a missing endpoints file
        raise InputError(f"inventory {platform.inventory}: platform_incident: {exc}") from None
    incident = validated_platform_option("platform_incident", incident)
    from ansible_collections.emergency.ops.plugins.module_utils.credentials import record_settings

    record = record_settings(incident.get("record"), backup)
    if not record.get("bucket"):
        raise InputError(
            "platform_incident.record.bucket: no bucket (and no platform_backup to take it from)"
        )
    kube = {
        "kubeconfig": platform.templated("platform_kubeconfig") or None,
        "context": platform.templated("platform_context") or None,
        "namespace": platform.namespace,
    }
    channels = {c["name"]: c for c in incident.get("channels") or []}
    severities = {s["level"]: s for s in incident.get("severities") or []}
    for where, names in [
        *(
            (f"severities[{lvl}].on_{e}", s.get(f"on_{e}") or [])
            for lvl, s in severities.items()
            for e in ("open", "update", "resolve")
        ),
        *((f"escalation[{r['name']}].channels", r["channels"]) for r in incident.get("escalation") or []),
        ("procedures.channels", (incident.get("procedures") or {}).get("channels") or []),
    ]:
        unknown = [n for n in names if n not in channels]
        if unknown:
            raise InputError(f"platform_incident.{where}: unknown channel(s) {', '.join(unknown)}")
    for alias, level in (incident.get("severity_aliases") or {}).items():
        if level not in LEVELS:
            raise InputError(
                f"platform_incident.severity_aliases[{alias}]: {level!r} is not one of {', '.join(LEVELS)}"
            )
    return Policy(
        platform_name=str(platform.variables.get("platform_name") or "platform"),
        record=record,
        severities=severities,
        aliases=dict(incident.get("severity_aliases") or {}),
        escalation=list(incident.get("escalation") or []),
        channels=channels,
        templates_dir=incident.get("templates_dir") or "",
        procedures=dict(incident.get("procedures") or {}),
        alertmanager_url=incident.get("alertmanager_url") or "",
        drill_targets=dict(incident.get("drill_targets") or {}),
        services=platform.all_service_names,
        kube=kube,
    )


def resolve_credential(ref: Any, kube: dict[str, Any]) -> str:
    """A credential reference's value (module_utils/credentials.py); ValueError names the reference."""
    from ansible_collections.emergency.ops.plugins.module_utils import credentials
    from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube

    needs_cluster = isinstance(ref, dict) and ref.get("source") == "secret"
    return credentials.resolve(ref, Kube(**kube) if needs_cluster else None)


class Desk:
    """One operator's view of the incidents of one inventory."""

    def __init__(self, policy: Policy, operator: str, cache_dir: Path):
        _, incident_record, _ = _utils()
        record = dict(policy.record)
        try:
            record["secret_key"] = resolve_credential(record.get("secret_key"), policy.kube) or None
        except ValueError as exc:
            raise InputError(f"platform_incident.record.secret_key: {exc}") from None
        self.policy = policy
        self.operator = operator
        self.cache_dir = cache_dir
        self.record = incident_record.Record.connect(record)
        self.fold = incident_record.fold

    # -- reading ---------------------------------------------------------------------------------
    def entries(self, incident_id: str) -> list[dict[str, Any]]:
        entries = self.record.entries(incident_id)
        self._cache(incident_id, entries)
        return entries

    def state(self, incident_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        entries = self.entries(incident_id)
        return self.fold(entries), entries

    def _cache(self, incident_id: str, entries: list[dict[str, Any]]) -> None:
        """The local copy of the record (incidents/<ID>/record.json), read when the bucket is down."""
        folder = self.cache_dir / incident_id
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = folder / "record.json"
        fresh = path.with_name("record.json.tmp")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {"source": self.record.where, "fetched_at": iso(utcnow()), "entries": entries},
                handle,
                indent=1,
            )
        os.replace(fresh, path)

    def cached(self, incident_id: str) -> list[dict[str, Any]] | None:
        path = self.cache_dir / incident_id / "record.json"
        try:
            return json.loads(path.read_text())["entries"]
        except (OSError, ValueError, KeyError):
            return None

    # -- writing ---------------------------------------------------------------------------------
    def append(self, incident_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("host", socket.gethostname())
        return self.record.append(incident_id, kind, fields, by=self.operator)

    # -- telling people --------------------------------------------------------------------------
    def tell(
        self,
        incident_id: str,
        state: dict[str, Any],
        step: str,
        channel_names: list[str],
        template: str,
        context: dict[str, Any] | None = None,
        check_mode: bool = False,
    ) -> list[dict[str, Any]]:
        """Sends ``step`` to each channel once (all at the same time); returns one outcome per channel
        (sent, failed, already-sent or would-send) and puts every new delivery on the timeline."""
        names = [n for n in dict.fromkeys(channel_names) if n in self.policy.channels]
        if not names:
            return []
        chosen = {name: self._template_for(name, template) for name in names}
        texts = {t: self.render(t, state, context) for t in set(chosen.values())}
        summary_text = texts.get(template) or self.render(template, state, context)
        summary = (
            summary_text.strip().splitlines()[0]
            if summary_text.strip()
            else (state.get("title") or incident_id)
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [
                pool.submit(
                    self._tell_safely,
                    incident_id,
                    state,
                    step,
                    name,
                    chosen[name],
                    texts[chosen[name]],
                    summary,
                    check_mode,
                )
                for name in names
            ]
            return [f.result() for f in futures]

    def _tell_safely(
        self, incident_id, state, step, name, template, text, summary, check_mode
    ) -> dict[str, Any]:
        """A record that cannot be written stops the delivery (it could not be claimed) but not the caller."""
        from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure

        try:
            return self._tell_one(incident_id, state, step, name, template, text, summary, check_mode)
        except Failure as exc:
            return {
                "channel": name,
                "step": step,
                "template": template,
                "status": "failed",
                "error": f"record: {exc}",
            }

    def _template_for(self, channel: str, template: str) -> str:
        """The public status page gets its own wording for the incident's own steps."""
        own_steps = ("opened", "update", "resolved")
        return (
            "status_page"
            if self.policy.channels[channel]["kind"] == "statuspage" and template in own_steps
            else template
        )

    def _tell_one(
        self, incident_id, state, step, name, template, text, summary, check_mode
    ) -> dict[str, Any]:
        channels, _, _ = _utils()
        channel = dict(self.policy.channels[name])
        kind = channel["kind"]
        event = step.split(":", 1)[0]
        action = {"opened": "trigger", "resolved": "resolve"}.get(event, "acknowledge")
        # PagerDuty gets one trigger, one acknowledge and one resolve per incident; any other step of
        # the same kind is the same delivery.
        delivery = (
            {"trigger": "trigger", "acknowledge": "acknowledge", "resolve": "resolve"}[action]
            if kind == "pagerduty"
            else step
        )
        if kind == "pagerduty" and event not in ("opened", "update", "resolved"):
            return {"channel": name, "step": step, "status": "not-applicable"}
        outcome: dict[str, Any] = {"channel": name, "channel_kind": kind, "step": step, "template": template}
        if check_mode:
            return dict(outcome, status="would-send")
        claimed, earlier = self.record.claim(incident_id, name, _safe(delivery), by=self.operator)
        if not claimed:
            return dict(
                outcome, status="already-sent" if (earlier or {}).get("status") == "sent" else "being-sent"
            )
        message = {
            "incident": incident_id,
            "step": event,
            "text": text,
            "summary": summary,
            "severity": state.get("severity"),
            "status": state.get("status"),
            "title": state.get("title"),
            "services": state.get("services") or [],
            "source": self.policy.platform_name,
            "action": action,
        }
        if kind == "statuspage" and (event != "opened" or earlier):  # an earlier attempt may have made it
            message["external_id"] = self.record.external_id(incident_id, name)
        try:
            for field_name in ("url", "routing_key", "api_key", "token"):
                channel[field_name] = resolve_credential(channel.get(field_name), self.policy.kube)
            result = channels.deliver(channel, message)
        except ValueError as exc:
            result = {"status": "failed", "attempts": 0, "http_status": None, "error": f"credential: {exc}"}
        outcome.update(
            {
                k: v
                for k, v in result.items()
                if k in ("status", "attempts", "http_status", "error", "external_id")
            }
        )
        if outcome.get("external_id") and not message.get("external_id"):
            self.record.keep_external_id(incident_id, name, outcome["external_id"])
        self.record.settle(incident_id, name, _safe(delivery), dict(outcome))
        self.append(incident_id, "notified", **{k: v for k, v in outcome.items() if v is not None})
        return outcome

    def render(self, template: str, state: dict[str, Any], context: dict[str, Any] | None = None) -> str:
        import jinja2
        import jinja2.sandbox

        folders = [p for p in (self.policy.templates_dir, str(SHIPPED_TEMPLATES)) if p]
        env = jinja2.sandbox.SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(folders),
            undefined=jinja2.ChainableUndefined,
            keep_trailing_newline=True,
        )
        try:
            loaded = env.get_template(f"{template}.j2")
        except jinja2.TemplateNotFound:
            raise InputError(f"template {template!r}: no {template}.j2 in {' or '.join(folders)}") from None
        now = utcnow()
        opened = _parse_time(state.get("opened_at"))
        ended = _parse_time(state.get("resolved_at")) or now
        level = state.get("severity")
        variables = dict(
            state,
            incident=state.get("id"),
            platform=self.policy.platform_name,
            severity_name=(self.policy.severities.get(level or "") or {}).get("name") or "",
            started=state.get("opened_at") or "",
            duration=_duration(ended - opened) if opened else "",
            now=iso(now),
            services_text=", ".join(state.get("services") or []) or self.policy.platform_name,
        )
        variables.update(context or {})
        return loaded.render(**variables)

    # -- escalation ------------------------------------------------------------------------------
    def escalations_due(
        self, state: dict[str, Any], now: datetime.datetime | None = None
    ) -> list[dict[str, Any]]:
        """The escalation steps whose time has come for an unresolved incident."""
        opened = _parse_time(state.get("opened_at"))
        if not opened or state.get("status") == "resolved":
            return []
        minutes = ((now or utcnow()) - opened).total_seconds() / 60
        return [
            rule
            for rule in self.policy.escalation
            if state.get("severity") in (rule.get("severities") or LEVELS)
            and minutes >= rule["after_minutes"]
        ]

    def escalated(self, entries: list[dict[str, Any]]) -> set[str]:
        return {e.get("rule") for e in entries if e.get("kind") == "escalated"}


def _safe(step: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in step)


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(span: datetime.timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class RunRecorder:
    """A procedure run on the shared record: a ``procedure`` entry when it starts and one when it ends
    (status, what changed, the prior state, the services), the evidence bundles it captured, and, when
    the inventory asks for it, its start and end told to ``platform_incident.procedures.channels``.

    Nothing here may fail or hold up the run: the start is written (and told) in the background while
    the playbook runs, and any failure of the record or a channel becomes a warning of the result."""

    def __init__(
        self, platform, operator: str, cache_dir: Path, incident_id: str, procedure, check_mode: bool
    ):
        self.incident_id = incident_id
        self.procedure = procedure
        self.check_mode = check_mode
        self.warnings: list[str] = []
        self.desk: Desk | None = None
        self.channels: list[str] = []
        self._background = None
        # The step names of this run's start and end: the run's ident is only unique on one machine.
        self.run_key = f"{procedure.name}-{utcnow().strftime('%Y%m%dT%H%M%S%f')}-{socket.gethostname()}"
        if not platform.variables.get("platform_incident"):
            return  # this inventory keeps no shared record
        try:
            self.desk = Desk(load_policy(platform), operator, cache_dir)
        except InputError as exc:
            self.warnings.append(f"the incident record is not written: {exc}")
            return
        told = self.desk.policy.procedures
        if told.get("channels") and not check_mode and (procedure.destructive or told.get("which") == "all"):
            self.channels = list(told["channels"])

    def started(self, run: str, inputs: dict[str, Any], reason: str) -> None:
        if not self.desk:
            return
        import threading

        fields = {
            "event": "started",
            "procedure": self.procedure.name,
            "run": run,
            "check_mode": self.check_mode,
            "inputs": inputs,
            "reason": reason,
        }
        self._background = threading.Thread(
            target=self._guarded, args=(self._start, fields, run, reason), daemon=True
        )
        self._background.start()

    def _start(self, fields: dict[str, Any], run: str, reason: str) -> None:
        self.desk.append(self.incident_id, "procedure", **fields)
        self._tell("started", {"reason": reason})

    def finished(self, run: str | None, result: dict[str, Any], services: list[str]) -> list[str]:
        """Returns the warnings to add to the result."""
        if not self.desk:
            return self.warnings
        if self._background:
            self._background.join(timeout=60)
        outputs = result.get("outputs") or {}
        fields = {
            "event": "finished",
            "procedure": self.procedure.name,
            "run": run,
            "check_mode": self.check_mode,
            "status": result.get("status"),
            "exit_code": result.get("exit_code"),
            "changed": result.get("changed"),
            "services": services,
            "duration_seconds": result.get("duration_seconds"),
            "prior_state": result.get("prior_state") or {},
            "outputs": {k: v for k, v in outputs.items() if k != "timeline"},
            "errors": [e.get("message", "")[:300] for e in result.get("errors") or []],
            # The steps that did something (changed or failed), as the result lists them.
            "steps": [
                {k: step.get(k) for k in ("name", "host", "status", "duration")}
                for step in result.get("steps") or []
                if step.get("status") in ("changed", "failed", "unreachable")
            ][:100],
        }
        self._guarded(self.desk.append, self.incident_id, "procedure", **fields)
        error = fields["errors"][0] if fields["errors"] else ""
        context = {
            "procedure_status": fields["status"],
            "procedure_changed": fields["changed"],
            "procedure_error": error,
        }
        self._guarded(self._tell, "finished", context)
        return self.warnings

    def evidence(self, entry: dict[str, Any]) -> None:
        if self.desk:
            fields = {k: v for k, v in entry.items() if k not in ("event", "at")}
            self._guarded(self.desk.append, self.incident_id, "evidence", **fields)

    def _tell(self, event: str, context: dict[str, Any]) -> None:
        if not self.channels:
            return
        state = self.desk.fold(self.desk.record.entries(self.incident_id))
        context = dict(context, procedure=self.procedure.name, operator=self.desk.operator)
        outcomes = self.desk.tell(
            self.incident_id,
            dict(state, id=self.incident_id),
            f"procedure-{event}:{_safe(self.run_key)}",
            self.channels,
            f"procedure_{event}",
            context,
        )
        self.warnings += [
            f"{o['channel']} was not told of the {event} of {self.procedure.name}: {o.get('error')}"
            for o in outcomes
            if o["status"] == "failed"
        ]

    def _guarded(self, function, *args, **kwargs) -> None:
        from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure

        try:
            function(*args, **kwargs)
        except (Failure, InputError, OSError, ValueError) as exc:
            self.warnings.append(f"the incident record {self.desk.record.where} was not updated: {exc}")
