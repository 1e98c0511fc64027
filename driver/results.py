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
