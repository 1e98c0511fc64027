"""A procedure's input, checked before anything runs: settings, the inventory, each option as its spec
declares it, the procedure's own check, and the confirmation of a destructive one. Bad input raises
InputError (exit 2, one line)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from driver import runenv, settings, validate
from driver.incident import Incident, new_id
from driver.procedure import Argument, Procedure
from driver.validate import InputError


class Inputs:
    def __init__(self, procedure: Procedure, args: argparse.Namespace):
        self.procedure = procedure
        self.args = args
        self.values, self.sources = settings.resolve(args)

    def inputs(self) -> dict[str, Any]:
        return {a.flag.lstrip("-"): getattr(self.args, a.var) for a in self.procedure.arguments}

    def validate(self) -> tuple[Incident, dict[str, Any]]:
        from driver import inventory

        values = self.values
        base = Path(values["incidents_dir"])
        incident_id = validate.incident_id(values["incident"]) if values["incident"] else new_id(base)
        validate.free_text(values["reason"], "--reason")
        validate.positive(values["timeout"], "--timeout", maximum=86400)
        validate.env_names(runenv.parse_names(values["pass_env"]), "--pass-env")
        self.platform = inventory.load(values["inventory"])
        given = [
            a.flag for a in self.procedure.arguments if getattr(self.args, a.var) not in (None, False, [])
        ]
        if self.procedure.one_of and len(set(given) & set(self.procedure.one_of)) != 1:
            raise InputError(
                f"{self.procedure.name}: give exactly one of {' or '.join(self.procedure.one_of)}"
            )
        extravars: dict[str, Any] = {}
        for argument in self.procedure.arguments:
            value = getattr(self.args, argument.var)
            self.check_option(argument, value)
            if value is not None:
                extravars[argument.var] = value
        if self.procedure.check:  # the procedure's own checks; it may normalise values (KEY=VALUE -> map)
            self.procedure.check(extravars, self.platform)
        if self.procedure.force_var:
            extravars[self.procedure.force_var] = bool(values["force"])
        if self.procedure.timeout_var:
            extravars[self.procedure.timeout_var] = values["timeout"]
        return Incident(base, incident_id), extravars

    def check_option(self, argument: Argument, value: Any) -> None:
        """What the spec requires of one option, and the inventory's names for those that name one."""
        procedure, option = self.procedure, self.procedure.option(argument)
        label = argument.flag if argument.flag.startswith("-") else (argument.metavar or argument.var)
        if procedure.required(argument) and value in (None, False, []):
            raise InputError(f"{procedure.name}: {label} is required")
        values = value if isinstance(value, list) else [] if value is None else [value]
        if option.choices and option.type != "bool":
            for item in values:
                if item not in option.choices:
                    valid = ", ".join(map(str, option.choices))
                    raise InputError(f"{procedure.name}: {label} {str(item)[:40]!r} is not one of: {valid}")
        if argument.names:
            for name in values:
                validate.dns_label(name, "service", self.platform.all_service_names)
        if argument.names == "deployment":
            others = [n for n in values if n not in self.platform.deployment_names]
            if others:
                raise InputError(f"only Deployments keep revisions to roll back to; not: {', '.join(others)}")

    def confirm(self) -> bool:
        """Destructive procedures need --yes or the target's name typed at a prompt."""
        if not self.procedure.destructive or self.values["yes"] or self.values["check"]:
            return True
        if not sys.stdin.isatty():
            return False
        target = self.platform.namespace
        answer = input(f"{self.procedure.name} is destructive. Type the namespace '{target}' to go on: ")
        return answer.strip() == target
