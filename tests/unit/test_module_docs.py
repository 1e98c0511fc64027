"""Every module's DOCUMENTATION, EXAMPLES and RETURN are YAML that ansible-doc can read, and the
options it documents are the options the module's argument spec takes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
import yaml

from driver import ROOT

MODULES = sorted((ROOT / "collections/ansible_collections/emergency/ops/plugins/modules").glob("*.py"))


def docs(path):
    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                    found[target.id] = node.value.value
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_documentation_is_yaml(path):
    found = docs(path)
    assert set(found) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, path.name
    for text in found.values():
        yaml.safe_load(text)  # raises on a ': ' inside a plain scalar, for example
    assert yaml.safe_load(found["DOCUMENTATION"])["module"] == path.stem


def test_ansible_doc_reads_every_module():
    names = [f"emergency.ops.{p.stem}" for p in MODULES]
    doc = subprocess.run(
        [f"{sys.prefix}/bin/ansible-doc", "--json", *names],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    assert doc.returncode == 0, doc.stderr
    assert "ERROR" not in doc.stderr, doc.stderr
    assert set(json.loads(doc.stdout)) == set(names)
