"""The procedures: which playbook, which options (mapped to role variables), whether destructive.

Each family of procedures declares its entries in a module of ``driver.procedures`` (with the types
of driver.procedure); adding a procedure is one entry there, a playbook and a role with its argument
spec.
"""

from __future__ import annotations

from driver.procedure import Argument, Procedure
from driver.procedures import database, restart, security, service

__all__ = ["PROCEDURES", "Argument", "Procedure"]

PROCEDURES: dict[str, Procedure] = {
    procedure.name: procedure
    for family in (restart, service, database, security)
    for procedure in family.PROCEDURES
}
