"""Reads the platform model from an Ansible inventory, with Ansible's own loader, so the driver
validates against exactly what the playbook will see."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driver import ROOT
from driver.validate import InputError


@dataclass
class Platform:
    inventory: str
    host: str
    variables: dict[str, Any]
    # Every host of group 'platform' (a fleet inventory has one per namespace), first one included.
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def all_services(self) -> list[dict[str, Any]]:
        """The services of every host, for validating names given on the command line."""
        found: dict[str, dict[str, Any]] = {}
        for variables in self.hosts.values() or [self.variables]:
            for service in variables.get("platform_services") or []:
                found.setdefault(service.get("name"), service)
        return list(found.values())

    @property
    def all_service_names(self) -> list[str]:
        return [s.get("name") for s in self.all_services]

    @property
    def deployment_names(self) -> list[str]:
        """The services that are Deployments (the only kind that keeps revisions to roll back to)."""
        return [s.get("name") for s in self.all_services if s.get("kind", "Deployment") == "Deployment"]

    @property
    def namespaces(self) -> list[tuple[str, str]]:
        """(host, namespace) of every host, one namespace lock each."""
        return [
            (host, v.get("platform_namespace", ""))
            for host, v in (self.hosts or {self.host: self.variables}).items()
        ]

    def for_host(self, host: str) -> Platform:
        every = self.hosts or {self.host: self.variables}
        return Platform(self.inventory, host, every[host], self.hosts)

    @property
    def services(self) -> list[dict[str, Any]]:
        return list(self.variables.get("platform_services") or [])

    @property
    def service_names(self) -> list[str]:
        return [s.get("name") for s in self.services]

    @property
    def namespace(self) -> str:
        return self.variables.get("platform_namespace", "")

    def templated(self, name: str) -> Any:
        """A variable with its Jinja expressions resolved (e.g. the sandbox's kubeconfig path)."""
        from ansible.template import Templar

        return self._templar(Templar).template(self.variables.get(name))

    def _templar(self, templar_class):
        from ansible.parsing.dataloader import DataLoader
        from ansible.plugins.loader import init_plugin_loader

        # Lookups must resolve as in a playbook run; the loader may already be set up in this process.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            init_plugin_loader([str(ROOT / "collections")])
        return templar_class(loader=DataLoader(), variables=self.variables)


def load(inventory: str) -> Platform:
    path = Path(inventory)
    if not path.exists():
        raise InputError(f"inventory {inventory} does not exist")
    # Ansible's inventory code prints warnings for empty or unparsable sources; turn them into errors.
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    hosts = manager.get_hosts("platform")
    if not hosts:
        raise InputError(f"inventory {inventory} has no host in group 'platform'")
    manager_vars = VariableManager(loader=loader, inventory=manager)
    every = {host.name: dict(manager_vars.get_vars(host=host)) for host in hosts}
    for name, variables in every.items():
        if not variables.get("platform_services") or not variables.get("platform_namespace"):
            raise InputError(
                f"inventory {inventory}: host {name} has no platform_services or platform_namespace"
            )
    first = hosts[0].name
    return Platform(inventory=str(path), host=first, variables=every[first], hosts=every)
