"""Generates AWX job templates and surveys from the registry and the roles' argument specs.

    .venv/bin/python -m driver.awx > awx/job_templates.yml

The output is the ``controller_templates`` list that the infra.aap_configuration collection (or
awx.awx's ``job_template`` module in a loop) applies; tests check the committed file is current.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from driver import ROOT, inventory
from driver.procedure import Procedure
from driver.registry import PROCEDURES
from driver.settings import SEVERITIES

EXAMPLE_INVENTORY = ROOT / "inventories" / "example"
# What AWX accepts as a question's type (awx/main/models/mixins.py, SurveyJobTemplateMixin).
AWX_TYPES = ("text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect")


def _names(kind: str) -> list[str]:
    """Survey choices are static: they come from the production-shaped example inventory."""
    platform = inventory.load(str(EXAMPLE_INVENTORY))
    names = platform.deployment_names if kind == "deployment" else platform.all_service_names
    return [str(name) for name in names]


def _question(procedure: Procedure, flag: str, var: str, names: str | None = None) -> dict[str, Any]:
    """One question, typed as the role's spec declares the option and answered in a form the role's
    argument validation reads: AWX passes a multiselect as a list, and Ansible reads a list from
    comma-separated text and a dict from KEY=VALUE pairs."""
    option = procedure.option(var)
    alternative = flag in procedure.one_of
    description = option.description
    question: dict[str, Any] = {"question_name": f"{flag} ({var})", "variable": var}
    if option.type == "bool":
        question.update(type="multiplechoice", choices=["true", "false"])
        question["default"] = str(bool(option.default)).lower()
    elif names or option.choices:
        choices = _names(names) if names else [str(c) for c in option.choices]
        multiple = option.type == "list"
        question.update(type="multiselect" if multiple else "multiplechoice", choices=choices)
        if option.has_default:
            default = option.default if isinstance(option.default, list) else [option.default]
            question["default"] = "\n".join(str(d) for d in default if str(d) in choices)
    elif option.type == "int":
        question["type"] = "integer"
        if option.has_default:
            question["default"] = option.default
    elif option.type == "list":
        question["type"] = "text"
        description += " Several values separated by commas."
    elif option.type == "dict":
        question["type"] = "text"
        description += ' KEY=VALUE pairs separated by commas (quote a value with spaces: KEY="a b").'
    else:
        question["type"] = "text"
        if option.has_default:
            question["default"] = str(option.default)
    if alternative:
        description += f" Give exactly one of {' or '.join(procedure.one_of)}."
    question["question_description"] = description
    question["required"] = option.required and not alternative
    order = ("question_name", "question_description", "variable", "type", "required", "choices", "default")
    return {key: question[key] for key in order if key in question}


def template(procedure: Procedure) -> dict[str, Any]:
    spec = [
        {
            "question_name": "Incident id",
            "variable": "incident_id",
            "type": "text",
            "required": True,
            "min": 1,
            "max": 63,
            "question_description": "For example INC-20261122-0931; re-use it to re-run safely.",
        },
        {
            "question_name": "Severity",
            "variable": "incident_severity",
            "type": "multiplechoice",
            "choices": list(SEVERITIES),
            "default": "P2",
            "required": True,
            "question_description": "P0-P3",
        },
    ]
    for argument in procedure.arguments:
        spec.append(_question(procedure, argument.flag, argument.var, argument.names))
    for flag, var in (("--force", procedure.force_var), ("--timeout", procedure.timeout_var)):
        if var:
            spec.append(_question(procedure, flag, var))
    return {
        "name": f"Emergency | {procedure.name}",
        "description": procedure.description,
        "job_type": "run",
        "inventory": "{{ emergency_inventory }}",
        "project": "{{ emergency_project }}",
        "playbook": f"playbooks/{procedure.playbook}",
        "credentials": "{{ emergency_credentials }}",
        "ask_job_type_on_launch": True,  # "check" is the driver's --check
        "ask_variables_on_launch": True,
        "extra_vars": {"lock_duration_seconds": 900},
        "timeout": 900,
        "survey_enabled": True,
        "survey_spec": {"name": procedure.name, "description": procedure.description, "spec": spec},
    }


class _IndentedDumper(yaml.SafeDumper):
    """Indents lists under their key, as yamllint (and so ansible-lint) expects."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def render() -> str:
    header = (
        "# Generated by `python -m driver.awx` from the registry and the roles' argument specs.\n"
        "# Apply with infra.aap_configuration (controller_templates) after setting emergency_inventory,\n"
        "# emergency_project and emergency_credentials.\n"
    )
    body = {"controller_templates": [template(p) for p in PROCEDURES.values()]}
    return header + yaml.dump(body, Dumper=_IndentedDumper, sort_keys=False, width=110, explicit_start=True)


if __name__ == "__main__":
    sys.stdout.write(render())
