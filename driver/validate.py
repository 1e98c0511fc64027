"""First layer of validation: what can be checked before anything connects to the platform.

Everything here is fast and local; a failure is an ``InputError`` that the CLI turns into one line
and exit code 2, before any playbook starts.
"""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SHELL_META = re.compile(r"[;&|`$<>(){}\[\]\\'\"*?!#~\s]")


class InputError(Exception):
    """Invalid input or configuration: nothing ran."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:37] + "...")


def dns_label(value: str, what: str, choices: list[str] | None = None) -> str:
    """A Kubernetes object name used as a label: 1-63 lowercase letters, digits and '-'."""
    hint = f"; valid: {', '.join(choices)}" if choices else ""
    if value is None or value == "":
        raise InputError(f"{what} is empty{hint}")
    if SHELL_META.search(value):
        raise InputError(f"{what} {_shown(value)} contains shell metacharacters or spaces{hint}")
    if len(value) > 63:
        raise InputError(f"{what} {_shown(value)} is {len(value)} characters; at most 63{hint}")
    if not DNS1123_LABEL.match(value):
        raise InputError(
            f"{what} {_shown(value)} is not a DNS-1123 label (lowercase letters, digits, '-'){hint}"
        )
    if choices is not None and value not in choices:
        raise InputError(f"unknown {what} {_shown(value)}{hint}")
    return value


def incident_id(value: str) -> str:
    if not INCIDENT_ID.match(value or ""):
        raise InputError(
            f"incident id {_shown(value or '')} must be 1-63 letters, digits, '.', '_' or '-' "
            "(for example INC-20261122-0931)"
        )
    return value


def free_text(value: str, what: str, limit: int = 500) -> str:
    """Free text goes to records only, never to a shell; still, keep it printable and bounded."""
    if len(value) > limit:
        raise InputError(f"{what} is {len(value)} characters; at most {limit}")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise InputError(f"{what} contains control characters")
    return value


def positive(value: int, what: str, maximum: int | None = None) -> int:
    if value is None or value <= 0 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum else ""
        raise InputError(f"{what} must be a whole number above 0{bound}, got {value}")
    return value


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


def env_names(names: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Environment variable names, each optionally ending in ``*`` (a prefix)."""
    for name in names:
        if not ENV_NAME.match(name):
            raise InputError(
                f"{what}: {_shown(name)} is not a variable name (letters, digits, '_', a final '*')"
            )
    return names
