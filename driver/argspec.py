"""Reads the roles' ``meta/argument_specs.yml``: the one place a procedure's options are declared.

Each option's type, whether it is required, its choices, default and description come from here; the
CLI's flags and ``--help``, the driver's checks and the AWX surveys are derived from them, so they
cannot drift from what Ansible itself validates when the role starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from driver import ROOT

# The parser describes every procedure, so every spec is read on each run: libyaml's loader does it in
# a tenth of the pure-Python one's time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Ansible's documentation markup: C(code), I(italic), B(bold), M(module), U(url), L(text,url),
# O(option), V(value), E(env var), P(plugin#type), R(text,anchor).
_MARKUP = re.compile(r"\b([CIBMUOVEP]|L|R)\(((?:[^()\\]|\\.)*)\)")


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # str, int, bool, list, dict, ...
    elements: str | None
    required: bool
    choices: tuple[Any, ...]
    default: Any
    description: str  # plain text, markup rendered

    @property
    def has_default(self) -> bool:
        return self.default not in (None, "", [], {})


@cache
def entry_point(role: str, entry: str = "main") -> dict[str, Any]:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    with path.open() as handle:
        return yaml.load(handle, Loader=_LOADER)["argument_specs"][entry]


def plain(text: str | list[str]) -> str:
    """The markup rendered as a reader of a terminal or a form reads it: C(latest) -> latest,
    L(docs,https://x) -> docs (https://x), U(https://x) -> https://x."""
    text = " ".join(text) if isinstance(text, list) else str(text or "")

    def render(match: re.Match) -> str:
        kind, inner = match.group(1), match.group(2).replace("\\", "")
        if kind in ("L", "R"):
            label, _, target = inner.partition(",")
            return f"{label.strip()} ({target.strip()})" if kind == "L" else label.strip()
        if kind == "P":
            return inner.partition("#")[0]
        return inner

    return _MARKUP.sub(render, text)


def option(role: str, var: str) -> Option:
    raw = entry_point(role)["options"][var]
    return Option(
        name=var,
        type=raw.get("type", "str"),
        elements=raw.get("elements"),
        required=bool(raw.get("required")),
        choices=tuple(raw.get("choices") or ()),
        default=raw.get("default"),
        description=plain(raw.get("description", "")),
    )


def summary(role: str) -> str:
    return plain(entry_point(role).get("short_description", ""))


def validated_platform_option(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """An inventory variable the driver reads itself (``platform_incident``, ``platform_watch``), checked
    with Ansible's own validator against the spec the platform role declares, defaults filled in."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from driver.validate import InputError

    spec = entry_point("platform")["options"][name]["options"]
    result = ArgumentSpecValidator(spec).validate(value)
    if result.error_messages:
        raise InputError(f"{name}: " + "; ".join(result.error_messages))
    return result.validated_parameters
