"""The options every procedure takes, each declared once: flag, environment variable, default.

The result records where each value came from (command line, environment or default), so an
incident review can tell what the operator chose from what was assumed.
"""

from __future__ import annotations

import argparse
import getpass
import os
from dataclasses import dataclass
from typing import Any

from driver import ROOT
from driver.validate import InputError

SEVERITIES = ("P0", "P1", "P2", "P3")


@dataclass(frozen=True)
class Setting:
    name: str
    flag: str
    help: str
    default: Any = None
    env: str | None = None
    kind: str = "str"  # str, int, bool
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "inventory",
        "--inventory",
        "inventory describing the platform",
        str(ROOT / "inventories" / "sandbox"),
        "EMERGENCY_INVENTORY",
        metavar="PATH",
    ),
    Setting(
        "incident",
        "--incident",
        "incident id (default: a new one such as INC-20261122-093112)",
        None,
        "EMERGENCY_INCIDENT",
        metavar="ID",
    ),
    Setting("severity", "--severity", "incident severity", "P2", "EMERGENCY_SEVERITY", choices=SEVERITIES),
    Setting("reason", "--reason", "why this is being run, for the incident record", "", metavar="TEXT"),
    Setting("operator", "--operator", "who runs it, for the incident record", None, "EMERGENCY_OPERATOR"),
    Setting("check", "--check", "show what would change and change nothing", False, kind="bool"),
    Setting("yes", "--yes", "confirm a destructive procedure without the prompt", False, kind="bool"),
    Setting(
        "force", "--force", "act even on a target in a state the procedure would refuse", False, kind="bool"
    ),
    Setting(
        "timeout",
        "--timeout",
        "seconds a step may wait for the platform",
        300,
        "EMERGENCY_TIMEOUT",
        kind="int",
        metavar="SECONDS",
    ),
    Setting("json", "--json", "print the result as JSON instead of progress lines", False, kind="bool"),
    Setting("verbose", "--verbose", "show each task's full result", False, kind="bool"),
    Setting(
        "pass_env",
        "--pass-env",
        "more of your environment variables the playbooks need (names or NAME* patterns, comma-separated); "
        "passed to the run without being recorded",
        "",
        "EMERGENCY_PASS_ENV",
        metavar="NAMES",
    ),
    Setting(
        "incidents_dir",
        "--incidents-dir",
        "where incident folders are written",
        "incidents",
        "EMERGENCY_INCIDENTS_DIR",
        metavar="PATH",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("options every procedure takes")
    for s in SETTINGS:
        if s.kind == "bool":
            group.add_argument(s.flag, dest=s.name, action="store_true", default=None, help=s.help)
        else:
            help_text = s.help + (f" (env {s.env})" if s.env else "")
            group.add_argument(
                s.flag,
                dest=s.name,
                default=None,
                choices=s.choices,
                metavar=s.metavar,
                type=int if s.kind == "int" else str,
                help=help_text,
            )


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Returns the values and, for each, its source: ``cli``, ``env:NAME`` or ``default``."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        given = getattr(args, s.name, None)
        if given is not None:
            values[s.name], sources[s.name] = given, "cli"
        elif s.env and os.environ.get(s.env) not in (None, ""):
            raw = os.environ[s.env]
            values[s.name], sources[s.name] = _convert(s, raw), f"env:{s.env}"
        else:
            values[s.name], sources[s.name] = s.default, "default"
    if values["operator"] is None:
        values["operator"] = _operator()
    return values, sources


def _convert(s: Setting, raw: str) -> Any:
    if s.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"{s.env}={raw!r} is not a whole number") from None
    if s.kind == "bool":
        return raw.lower() in ("1", "true", "yes")
    if s.choices and raw not in s.choices:
        raise InputError(f"{s.env}={raw!r}: choose from {', '.join(s.choices)}")
    return raw
