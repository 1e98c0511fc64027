"""The same triggers as ``watch``, for teams that already run Alertmanager and AWX/EDA: Prometheus
alerting rules (``for:`` = period x consecutive measurements) and an Event-Driven Ansible rulebook
that runs the rollback job template when one of them fires.

    python -m driver watch --service api --rules api-rules.yml --rulebook api-rulebook.yml

The rules are what ``promtool check rules`` accepts; the rulebook listens with
``ansible.eda.alertmanager`` (Alertmanager's webhook) and launches the job template by name."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def seconds(duration: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``) in seconds; ValueError for anything else."""
    parts = DURATION.findall(duration or "")
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a Prometheus duration (5m, 1h30m)")
    return sum(int(n) * UNITS[u] for n, u in parts)


def prometheus_duration(total: float) -> str:
    total = int(total)
    out = ""
    for unit in ("h", "m", "s"):
        size = UNITS[unit]
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out or "0s"


def alert_name(service: str, trigger: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", f"emergency watch {service} {trigger}")
    return "".join(w[:1].upper() + w[1:] for w in words if w)


def rules(service: str, namespace: str, triggers: list, severity: str) -> dict[str, Any]:
    """A Prometheus rule file: one alert per trigger."""
    alerts = []
    for t in triggers:
        value = f"({t.fill(t.query, service, namespace)})"
        if t.above is not None:
            expr = f"{value} > {t.above:g}"
        elif t.below is not None:
            expr = f"{value} < {t.below:g}"
        else:
            baseline = (
                f"({t.fill(t.baseline_query, service, namespace)})" if t.baseline_query else f"{t.baseline:g}"
            )
            expr = f"{value} < {t.below_baseline:g} * {baseline}"
        if t.min_traffic_query and t.min_traffic is not None:
            expr += f" and on() ({t.fill(t.min_traffic_query, service, namespace)}) >= {t.min_traffic:g}"
        summary = f"{service}: {t.name} {t.threshold_text(t.baseline)} for {t.consecutive} x {t.period}"
        alerts.append(
            {
                "alert": alert_name(service, t.name),
                "expr": expr,
                "for": prometheus_duration(seconds(t.period) * t.consecutive),
                "labels": {
                    "severity": {"P0": "critical", "P1": "critical"}.get(severity, "warning"),
                    "service": service,
                    "namespace": namespace,
                    "trigger": t.name,
                    "emergency_ops_action": "rollback",
                },
                "annotations": {
                    "summary": summary,
                    "runbook": f"python -m driver rollback --service {service} --incident <ID>",
                },
            }
        )
    return {"groups": [{"name": f"emergency-watch-{service}", "rules": alerts}]}


def rulebook(service: str, triggers: list, job_template: str, organization: str) -> list[dict[str, Any]]:
    """An EDA rulebook: Alertmanager's webhook in, the rollback job template out, once per alert."""
    names = [alert_name(service, t.name) for t in triggers]
    condition = " or ".join(f'event.alert.labels.alertname == "{n}"' for n in names)
    return [
        {
            "name": f"Roll {service} back when its watch triggers fire",
            "hosts": "all",
            "sources": [
                {"ansible.eda.alertmanager": {"host": "0.0.0.0", "port": 5050, "data_alerts_path": "alerts"}}
            ],
            "rules": [
                {
                    "name": f"{service}: automatic rollback",
                    "condition": f'event.alert.status == "firing" and ({condition})',
                    "throttle": {
                        "once_within": "1 hour",
                        "group_by_attributes": ["event.alert.labels.alertname"],
                    },
                    "action": {
                        "run_job_template": {
                            "name": job_template,
                            "organization": organization,
                            "job_args": {
                                "extra_vars": {
                                    "incident_id": "ALERT-{{ event.alert.fingerprint }}",
                                    "rollback_services": [service],
                                }
                            },
                        }
                    },
                }
            ],
        }
    ]


def dump(document: Any) -> str:
    # The inventory's values are Ansible's str subclasses, which safe_dump refuses: a JSON round trip
    # makes them plain strings.
    return yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False, width=1000)
