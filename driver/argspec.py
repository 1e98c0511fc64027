"""Reads the roles' ``meta/argument_specs.yml``: the one place a procedure's arguments are described.

The CLI's ``--help`` and the AWX surveys take their descriptions from here, so they cannot drift
from what Ansible itself validates when the role starts.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from driver import ROOT

# The parser describes every procedure, so every spec is read on each run: libyaml's loader does it in
# a tenth of the pure-Python one's time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def entry_point(role: str, entry: str = "main") -> dict[str, Any]:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    with path.open() as handle:
        return yaml.load(handle, Loader=_LOADER)["argument_specs"][entry]


def option(role: str, var: str) -> dict[str, Any]:
    return entry_point(role)["options"][var]


def description(role: str, var: str) -> str:
    text = option(role, var).get("description", "")
    return " ".join(text) if isinstance(text, list) else text


def summary(role: str) -> str:
    return entry_point(role).get("short_description", "")
