"""The versioned result of a run (schema documented in docs/results.md) and the steps it is built
from. The driver fills it from ansible-runner events and ``set_stats`` data, never from stdout."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "emergency-procedures/result/v1"
STATUSES = ("succeeded", "failed", "refused", "invalid")


@dataclass
class Step:
    name: str
    host: str
    status: str  # ok, changed, failed, skipped, unreachable
    changed: bool
    duration: float
    message: str = ""


@dataclass
class Result:
    procedure: str
    incident: dict[str, Any]
    inputs: dict[str, Any]
    settings: dict[str, Any]
    check_mode: bool
    started_at: str
    status: str = "failed"
    exit_code: int = 1
    changed: bool = False
    finished_at: str | None = None
    duration_seconds: float | None = None
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    prior_state: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {"schema": SCHEMA}
        data.update(asdict(self))
        return data


def from_stats(stats: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(outputs, prior_state)`` from the ``set_stats`` data of the ``playbook_on_stats`` event.

    A role that runs over many hosts (a fleet: one host per namespace) publishes under ``hosts``, keyed
    by host, because ``per_host: false`` merges what every host publishes and replaces lists. Each host
    is kept as published, in ``outputs.hosts.<host>`` (with its ``namespace``) and
    ``prior_state.hosts.<host>``. With one host its data is also where a single-host run has always
    had it (``outputs.restart.services``, ``prior_state.replicas``); with several, every list a
    procedure published (e.g. ``outputs.shutdown.services``) holds the entries of all hosts, each with
    its ``host`` and ``namespace``, and the rest stays per host only (prior states would collide on
    services of the same name).
    """
    outputs = {k: v for k, v in stats.items() if k not in ("prior_state", "hosts")}
    prior = dict(stats.get("prior_state") or {})
    hosts = stats.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        return outputs, prior
    ordered = sorted(hosts.items())
    outputs["hosts"] = {h: {k: v for k, v in d.items() if k != "prior_state"} for h, d in ordered}
    prior["hosts"] = {h: d.get("prior_state") or {} for h, d in ordered}
    if len(hosts) == 1:
        [data] = hosts.values()
        outputs.update({k: v for k, v in data.items() if k not in ("prior_state", "namespace")})
        prior.update(data.get("prior_state") or {})
        return outputs, prior
    for host, data in ordered:
        for key, value in data.items():
            if key in ("prior_state", "namespace") or not isinstance(value, dict):
                continue
            merged = outputs.setdefault(key, {})
            for name, item in value.items():
                if isinstance(item, list):
                    merged.setdefault(name, []).extend(
                        {**entry, "host": host, "namespace": data.get("namespace")}
                        if isinstance(entry, dict)
                        else entry
                        for entry in item
                    )
    return outputs, prior
