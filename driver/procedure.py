"""What a procedure declares next to its playbook: the flags of its role's options and what their specs
cannot say. Each option's type, required, choices, default and description are read from the role's
``meta/argument_specs.yml`` (driver.argspec); nothing here restates them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from driver import argspec

# A procedure's own input check: it gets the values about to be passed (it may normalise them, e.g.
# KEY=VALUE words into a map) and the inventory's platform, and raises validate.InputError.
Check = Callable[[dict[str, Any], Any], None]


@dataclass(frozen=True)
class Argument:
    flag: (
        str  # command-line flag, e.g. --service; a word without dashes is positional (set-env's KEY=VALUE...)
    )
    var: str  # the role option it sets, e.g. restart_services
    names: Literal["service", "deployment"] | None = None  # each value names one of the inventory's
    metavar: str | None = None


@dataclass(frozen=True)
class Procedure:
    name: str
    role: str
    runbooks: tuple[str, ...]
    arguments: tuple[Argument, ...] = ()
    destructive: bool = False
    # Alternatives of which exactly one is given (``--service`` or ``--all``); their options are not
    # required on their own. A single required option says so in its spec, not here.
    one_of: tuple[str, ...] = ()
    force_var: str | None = None  # role option that receives --force
    timeout_var: str | None = None  # role option that receives --timeout
    summarize: Callable[[dict[str, Any]], list[str]] | None = None  # outputs -> lines for the operator
    check: Check | None = None

    @property
    def playbook(self) -> str:
        return f"{self.name}.yml"

    @property
    def description(self) -> str:
        return argspec.summary(self.role)

    def option(self, argument: Argument | str) -> argspec.Option:
        return argspec.option(self.role, argument if isinstance(argument, str) else argument.var)

    def required(self, argument: Argument) -> bool:
        """Required on its own: its spec says so and it is not one of the alternatives."""
        return self.option(argument).required and argument.flag not in self.one_of
