"""``python -m driver watch --service NAME``: runbook 004's automatic rollback, against Prometheus.

Every interval each trigger of the inventory (``platform_watch.triggers``) is measured with one
instant query of Prometheus's HTTP API. A measurement is a *breach*, *ok*, *idle* (the service has
less traffic than the trigger's minimum: noise, not a signal) or *inconclusive* (no data: an empty
result, NaN, Prometheus unreachable or refusing the query). Only breaches in a row count:

- an ok or idle measurement resets the trigger's count;
- an inconclusive one neither counts nor resets; after ``inconclusive_after`` of them in a row the
  count is reset and the operator is told that the watch is blind (it never acts on missing data).

On a trigger's N-th consecutive breach the watch runs 004's sequence once for the revision being
served: validate (measure again; the Deployment's revision is newer than the one it started on and
has an older one to go back to), execute (``python -m driver rollback`` for the incident, with the
lock, the record and the result every procedure has), confirm (the trigger back within its
threshold for a measurement, every replica ready), then record and notify on the incident (opened
when none is given). ``--dry-run`` says what it would do and does nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver import EXIT_FAILED, EXIT_INVALID, EXIT_OK, ROOT
from driver.argspec import validated_platform_option
from driver.validate import InputError

BREACH, OK, IDLE, INCONCLUSIVE = "breach", "ok", "idle", "inconclusive"


@dataclass
class Trigger:
    """One of 004's triggers: a PromQL query (``{service}``, ``{namespace}`` and ``{period}`` are filled
    in), its threshold and how many breaching measurements in a row make it fire."""

    name: str
    query: str
    period: str
    consecutive: int
    above: float | None = None
    below: float | None = None
    # A baseline (a number, or a query over an earlier window) and the fraction of it below which the
    # value breaches: 004's "25 % below a baseline of 37,303 rows/s" is below_baseline 0.75.
    baseline: float | None = None
    baseline_query: str | None = None
    below_baseline: float | None = None
    min_traffic_query: str | None = None
    min_traffic: float | None = None

    def fill(self, query: str, service: str, namespace: str) -> str:
        # str.replace, not format: PromQL is full of braces.
        return (
            query.replace("{service}", service)
            .replace("{namespace}", namespace)
            .replace("{period}", self.period)
        )

    def threshold_text(self, baseline: float | None) -> str:
        if self.above is not None:
            return f"> {self.above:g}"
        if self.below is not None:
            return f"< {self.below:g}"
        return f"< {self.below_baseline:g} x baseline {baseline:g}" if baseline is not None else "< baseline"


@dataclass
class Measurement:
    trigger: str
    verdict: str
    value: float | None
    threshold: str
    count: int
    needed: int
    detail: str = ""
    at: str = ""


@dataclass
class Counter:
    """The consecutive-breach count of one trigger, with 004's rules for ok, idle and no data."""

    needed: int
    inconclusive_after: int
    breaches: int = 0
    blind: int = 0  # inconclusive measurements in a row

    def add(self, verdict: str) -> bool:
        """Counts one measurement; True when the trigger fires."""
        if verdict == BREACH:
            self.breaches, self.blind = self.breaches + 1, 0
        elif verdict == INCONCLUSIVE:
            self.blind += 1
            if self.blind >= self.inconclusive_after:
                self.breaches = 0
        else:  # ok or idle
            self.breaches, self.blind = 0, 0
        return self.breaches >= self.needed


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def value(self, query: str) -> tuple[float | None, str]:
        """The query's single value now, or ``(None, why)`` when there is none to judge by."""
        data = urllib.parse.urlencode({"query": query}).encode()
        request = urllib.request.Request(self.url + "/api/v1/query", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return None, f"Prometheus answered {exc.code}"
        except (OSError, ValueError) as exc:
            return None, f"Prometheus unreachable ({type(exc).__name__})"
        result = (body.get("data") or {}).get("result")
        if body.get("status") != "success" or not result:
            return None, "no data"
        kind = body["data"].get("resultType")
        if kind == "vector" and len(result) != 1:
            return None, f"{len(result)} series (the query must return one)"
        try:
            value = float(result[1] if kind == "scalar" else result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return None, "no value"
        if math.isnan(value) or math.isinf(value):
            return None, "NaN"
        return value, ""


def measure(
    prom: Prometheus, trigger: Trigger, service: str, namespace: str
) -> tuple[str, float | None, str, str]:
    """``(verdict, value, threshold text, detail)`` of one measurement."""
    baseline = trigger.baseline
    if trigger.baseline_query:
        baseline, why = prom.value(trigger.fill(trigger.baseline_query, service, namespace))
        if baseline is None:
            return INCONCLUSIVE, None, trigger.threshold_text(None), f"baseline: {why}"
    threshold = trigger.threshold_text(baseline)
    if trigger.min_traffic_query and trigger.min_traffic is not None:
        traffic, why = prom.value(trigger.fill(trigger.min_traffic_query, service, namespace))
        if traffic is None:
            return INCONCLUSIVE, None, threshold, f"traffic: {why}"
        if traffic < trigger.min_traffic:
            return IDLE, None, threshold, f"traffic {traffic:.3g} below {trigger.min_traffic:g}"
    value, why = prom.value(trigger.fill(trigger.query, service, namespace))
    if value is None:
        return INCONCLUSIVE, None, threshold, why
    if trigger.above is not None:
        breached = value > trigger.above
    elif trigger.below is not None:
        breached = value < trigger.below
    else:
        breached = value < (trigger.below_baseline or 1.0) * (baseline or 0.0)
    return (BREACH if breached else OK), value, threshold, ""


def triggers_from(spec: list[dict[str, Any]]) -> list[Trigger]:
    out = []
    for raw in spec:
        trigger = Trigger(**{k: v for k, v in raw.items() if k in Trigger.__dataclass_fields__})
        kinds = [k for k in ("above", "below", "below_baseline") if getattr(trigger, k) is not None]
        if len(kinds) != 1:
            raise InputError(f"trigger {trigger.name}: give exactly one of above, below or below_baseline")
        if trigger.below_baseline is not None and trigger.baseline is None and not trigger.baseline_query:
            raise InputError(f"trigger {trigger.name}: below_baseline needs a baseline or a baseline_query")
        if trigger.consecutive < 1:
            raise InputError(f"trigger {trigger.name}: consecutive must be at least 1")
        out.append(trigger)
    if not out:
        raise InputError("no trigger: platform_watch.triggers (or --triggers FILE) is empty")
    return out


@dataclass
class Watch:
    service: str
    namespace: str
    prom: Prometheus
    triggers: list[Trigger]
    interval: float
    inconclusive_after: int
    incident: str | None
    inventory: str
    incidents_dir: str
    dry_run: bool
    severity: str
    confirm_timeout: float
    kube: Any  # module_utils.kube.Kube of the namespace
    say: Any = print
    stop: threading.Event = field(default_factory=threading.Event)
    counters: dict[str, Counter] = field(default_factory=dict)
    acted_on: set[str] = field(default_factory=set)  # revisions rolled back (or that would be)

    def __post_init__(self) -> None:
        self.counters = {t.name: Counter(t.consecutive, self.inconclusive_after) for t in self.triggers}

    def round(self) -> list[Measurement]:
        """One measurement of every trigger; runs the rollback sequence for the first that fires."""
        out = []
        for trigger in self.triggers:
            verdict, value, threshold, detail = measure(self.prom, trigger, self.service, self.namespace)
            counter = self.counters[trigger.name]
            fired = counter.add(verdict)
            m = Measurement(
                trigger.name,
                verdict,
                value,
                threshold,
                counter.breaches,
                trigger.consecutive,
                detail,
                datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S"),
            )
            out.append(m)
            self.say(_line(m))
            if counter.blind == self.inconclusive_after:
                self.say(
                    f"{m.at} {trigger.name}: {counter.blind} measurements without data; the breach count is "
                    "reset and nothing is rolled back on missing data; still watching"
                )
            if fired:
                self.fire(trigger)
                counter.breaches = 0
                break
        return out

    def run(self, once: bool) -> int:
        while not self.stop.is_set():
            self.round()
            if once:
                break
            self.stop.wait(self.interval)
        return EXIT_OK

    # -- 004's sequence --------------------------------------------------------------------------
    def fire(self, trigger: Trigger) -> None:
        """Validate, execute, confirm, record and notify: once per revision."""
        deployment = self.kube.get("Deployment", self.service)
        revision = ((deployment.get("metadata") or {}).get("annotations") or {}).get(
            "deployment.kubernetes.io/revision"
        )
        if revision in self.acted_on:
            self.say(f"{self.service}: revision {revision} was rolled back already by this watch; not again")
            return
        verdict, value, _, detail = measure(self.prom, trigger, self.service, self.namespace)
        if verdict != BREACH:
            self.say(
                f"validate: {trigger.name} measured again is {verdict} ({detail or value}); not rolling back"
            )
            return
        if not revision or int(revision) <= 1:
            self.say(f"validate: {self.service} has no earlier revision to go back to; not rolling back")
            return
        self.acted_on.add(revision)
        reason = f"watch: {trigger.name} breached {trigger.consecutive} times in a row (last {value:.4g})"
        if self.dry_run:
            self.say(f"dry run: would roll {self.service} back from revision {revision} ({reason})")
            return
        incident = self.incident or self.open_incident(trigger, reason)
        self.say(f"execute: rolling {self.service} back from revision {revision} for {incident}")
        rollback = [
            "rollback",
            "--service",
            self.service,
            "--yes",
            "--incident",
            incident,
            "--reason",
            reason,
        ]
        run = self._driver([*rollback, "--json", "--severity", self.severity])
        result = json.loads(run.stdout) if run.stdout.strip().startswith("{") else {}
        if run.returncode != 0:
            errors = "; ".join(e.get("message", "") for e in result.get("errors", []))
            self.say(f"execute: rollback exited {run.returncode}: {errors}")
            self.record(incident, trigger, revision, "rollback-failed", value)
            return
        confirmed = self.confirm(trigger)
        self.record(incident, trigger, revision, "confirmed" if confirmed else "not-confirmed", value)

    def confirm(self, trigger: Trigger) -> bool:
        """The trigger within its threshold for one measurement and every replica ready."""
        deadline = time.monotonic() + self.confirm_timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            verdict, value, threshold, _ = measure(self.prom, trigger, self.service, self.namespace)
            status = self.kube.get("Deployment", self.service).get("status") or {}
            ready = status.get("readyReplicas", 0) >= (status.get("replicas") or 0) and not status.get(
                "unavailableReplicas"
            )
            replicas = "" if ready else ", replicas not all ready"
            self.say(f"confirm: {trigger.name} {verdict} ({_value(value)} {threshold}){replicas}")
            if verdict == OK and ready:
                return True
            self.stop.wait(min(self.interval, 5))
        return False

    def open_incident(self, trigger: Trigger, reason: str) -> str:
        from driver.incident import new_id

        incident = new_id(Path(self.incidents_dir))
        self._driver(
            [
                "incident",
                "open",
                "--title",
                f"{self.service}: {trigger.name} triggered an automatic rollback",
                "--severity",
                self.severity,
                "--service",
                self.service,
                "--id",
                incident,
                "--message",
                reason,
            ]
        )
        return incident

    def record(
        self, incident: str, trigger: Trigger, revision: str, outcome: str, value: float | None
    ) -> None:
        self.say(
            f"{self.service}: automatic rollback of revision {revision}: {outcome} (incident {incident})"
        )
        status = "monitoring" if outcome == "confirmed" else "identified"
        self._driver(
            [
                "incident",
                "update",
                "--incident",
                incident,
                "--status",
                status,
                "--message",
                f"automatic rollback of {self.service} revision {revision} ({trigger.name}): {outcome}",
            ]
        )

    def _driver(self, argv: list[str]) -> subprocess.CompletedProcess:
        """A command of the driver for the same inventory and incidents folder."""
        where = ["--inventory", self.inventory, "--incidents-dir", self.incidents_dir]
        return subprocess.run(
            [sys.executable, "-m", "driver", *argv, *where],
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _line(m: Measurement) -> str:
    extra = f" ({m.detail})" if m.detail else ""
    return f"{m.at} {m.trigger}: {_value(m.value)} {m.threshold} {m.verdict} {m.count}/{m.needed}{extra}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m driver watch", description=__doc__.splitlines()[0])
    parser.add_argument("--service", required=True, metavar="NAME")
    parser.add_argument(
        "--triggers", metavar="FILE", help="a YAML list of triggers instead of the inventory's"
    )
    parser.add_argument("--once", action="store_true", help="measure once and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be rolled back; roll nothing back"
    )
    parser.add_argument("--interval", type=float, metavar="SECONDS", help="seconds between measurements")
    parser.add_argument("--incident", default=os.environ.get("EMERGENCY_INCIDENT"), metavar="ID")
    parser.add_argument(
        "--inventory", default=os.environ.get("EMERGENCY_INVENTORY") or str(ROOT / "inventories" / "sandbox")
    )
    parser.add_argument("--incidents-dir", default=os.environ.get("EMERGENCY_INCIDENTS_DIR") or "incidents")
    parser.add_argument(
        "--rules", metavar="FILE", help="write the triggers as Prometheus alerting rules and exit"
    )
    parser.add_argument(
        "--rulebook",
        metavar="FILE",
        help="write an Event-Driven Ansible rulebook that runs the rollback and exit",
    )
    parser.add_argument("--job-template", default="Emergency | rollback", help="the rulebook's job template")
    parser.add_argument("--organization", default="Default", help="the job template's AWX organization")
    args = parser.parse_args(argv)
    try:
        watch = build(args)
        if args.rules or args.rulebook:
            return write_rules(watch, args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    watch.say = lambda line: print(line, flush=True)  # an on-call terminal, or a pod's log
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: watch.stop.set())
    print(
        f"watching {watch.service} in {watch.namespace} every {watch.interval:g}s: "
        + ", ".join(f"{t.name} ({t.consecutive} in a row)" for t in watch.triggers),
        flush=True,
    )
    try:
        return watch.run(args.once)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # the API gone mid-sequence: say so, do not dump a trace at 3 a.m.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def write_rules(watch: Watch, args: argparse.Namespace) -> int:
    from driver import watch_rules

    try:
        documents = {}
        if args.rules:
            documents[args.rules] = watch_rules.rules(
                watch.service, watch.namespace, watch.triggers, watch.severity
            )
        if args.rulebook:
            documents[args.rulebook] = watch_rules.rulebook(
                watch.service, watch.triggers, args.job_template, args.organization
            )
    except ValueError as exc:  # a period that is not a Prometheus duration
        raise InputError(str(exc)) from None
    for path, document in documents.items():
        Path(path).write_text(watch_rules.dump(document))
        print(path)
    return EXIT_OK


def build(args: argparse.Namespace) -> Watch:
    import yaml

    from driver.desk import import_wire_formats

    import_wire_formats()
    from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube
    from driver import validate
    from driver.inventory import load

    platform = load(args.inventory)
    validate.dns_label(args.service, "service", platform.deployment_names)
    if args.incident:
        validate.incident_id(args.incident)
    try:
        spec = platform.templated("platform_watch")
    except Exception as exc:
        raise InputError(f"inventory {args.inventory}: platform_watch: {exc}") from None
    if not spec:
        raise InputError(f"inventory {args.inventory} has no platform_watch (see docs/procedures/watch.md)")
    if args.triggers:
        try:
            spec["triggers"] = yaml.safe_load(Path(args.triggers).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"--triggers {args.triggers}: {exc}") from None
    spec = validated_platform_option("platform_watch", spec)
    triggers = triggers_from(spec["triggers"])
    interval = float(spec["interval_seconds"] if args.interval is None else args.interval)
    if interval <= 0:
        raise InputError("--interval must be more than 0")
    return Watch(
        service=args.service,
        namespace=platform.namespace,
        prom=Prometheus(spec["prometheus_url"]),
        triggers=triggers,
        interval=interval,
        inconclusive_after=spec["inconclusive_after"],
        incident=args.incident,
        inventory=args.inventory,
        incidents_dir=args.incidents_dir,
        dry_run=args.dry_run,
        severity=spec["severity"],
        confirm_timeout=float(spec["confirm_seconds"]),
        kube=Kube(
            platform.templated("platform_kubeconfig") or None,
            platform.templated("platform_context") or None,
            platform.namespace,
        ),
    )
