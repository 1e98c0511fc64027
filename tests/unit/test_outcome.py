"""The contract between the roles and the driver's exit codes (driver/outcome.py), checked from both
sides: what the modules and roles say, and what the driver reads."""

from __future__ import annotations

import re

import yaml

from driver import ROOT
from driver.outcome import OUTCOMES, PREFLIGHT

PLUGINS = ROOT / "collections" / "ansible_collections" / "emergency" / "ops" / "plugins"


def tasks(node):
    """Every task of a task file, blocks and their rescue/always included."""
    for task in node or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


def test_modules_fail_with_an_outcome_the_driver_knows():
    said = set()
    for path in PLUGINS.rglob("*.py"):
        said |= set(re.findall(r"""outcome=["']([a-z_]+)["']""", path.read_text()))
    assert said, "no module says an outcome"
    assert said <= set(OUTCOMES) | {"failed"}, said - set(OUTCOMES)


def test_preflight_tasks_change_nothing_and_are_named_as_the_driver_reads_them():
    """A task named Preflight must not change the platform: its failure is reported as "refused, nothing
    changed". So it is a check (assert, fail, a read) or runs with check_mode: false only to read."""
    found = 0
    for path in (ROOT / "roles").glob("*/tasks/*.yml"):
        for task in tasks(yaml.safe_load(path.read_text())):
            name = task.get("name", "")
            if "Preflight" not in name:
                continue
            found += 1
            assert PREFLIGHT in name, f"{path}: {name!r} is not '<Role> {PREFLIGHT} ...'"
            module = next(k for k in task if "." in k and k not in ("ansible.builtin.block",))
            assert not task.get("changed_when") or task["changed_when"] is False, (path, name)
            assert module.split(".")[-1] not in ("command", "shell", "k8s", "k8s_scale", "set_stats"), (
                f"{path}: preflight {name!r} runs {module}"
            )
    assert found > 10
