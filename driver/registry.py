"""The procedures: which playbook, which arguments (mapped to role variables), whether destructive.

Each family of procedures declares its entries in a module of ``driver.procedures``; adding a
procedure is one entry there, a playbook and a role with its argument spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driver import argspec


@dataclass(frozen=True)
class Argument:
    flag: str  # command-line flag, e.g. --service
    var: str  # the role variable it sets, e.g. restart_services
    kind: str = "str"  # str, list (repeatable), bool, int
    names: str | None = None  # "service": each value must be a service of the inventory
    metavar: str | None = None


@dataclass(frozen=True)
class Procedure:
    name: str
    role: str
    runbooks: tuple[str, ...]
    arguments: tuple[Argument, ...] = ()
    destructive: bool = False
    one_of: tuple[str, ...] = ()  # exactly one of these flags must be given
    force_var: str | None = None  # role variable that receives --force
    timeout_var: str | None = None  # role variable that receives --timeout
    summarize: Callable[[dict[str, Any]], list[str]] | None = None  # outputs -> lines for the operator
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def playbook(self) -> str:
        return f"{self.name}.yml"

    @property
    def description(self) -> str:
        return argspec.summary(self.role)

    def help_for(self, argument: Argument) -> str:
        return argspec.description(self.role, argument.var)


def _collect() -> dict[str, Procedure]:
    from driver.procedures import database, restart, service

    procedures: dict[str, Procedure] = {}
    for family in (restart, service, database):
        for procedure in family.PROCEDURES:
            procedures[procedure.name] = procedure
    return procedures


PROCEDURES: dict[str, Procedure] = _collect()
