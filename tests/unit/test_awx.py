"""The AWX job templates: surveys valid for AWX and typed as the roles' specs declare each option, and
every template's playbook parses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driver import ROOT, awx
from driver.registry import PROCEDURES

TEMPLATES = yaml.safe_load(awx.render())["controller_templates"]
BY_NAME = {t["survey_spec"]["name"]: t for t in TEMPLATES}


def questions():
    for template in TEMPLATES:
        for question in template["survey_spec"]["spec"]:
            yield template["survey_spec"]["name"], question


@pytest.mark.parametrize(
    ("procedure", "question"), list(questions()), ids=lambda v: v if isinstance(v, str) else v["variable"]
)
def test_each_question_follows_awx_survey_rules(procedure, question):
    """The rules AWX applies when a survey is saved: a known type, choices for the choice types, a
    default among the choices, min/max only where they mean something."""
    assert question["type"] in awx.AWX_TYPES
    assert question["variable"] and question["question_name"] and isinstance(question["required"], bool)
    if question["type"] in ("multiplechoice", "multiselect"):
        choices = question.get("choices")
        assert isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)
        if "default" in question:
            defaults = (
                question["default"].split("\n")
                if question["type"] == "multiselect"
                else [question["default"]]
            )
            assert set(defaults) <= set(choices), question
    else:
        assert "choices" not in question
    if question["type"] == "integer" and "default" in question:
        assert isinstance(question["default"], int)
    if question["type"] == "text" and "default" in question:
        assert isinstance(question["default"], str) and question["default"] not in ("{}", "[]")


def test_variables_are_unique_and_typed_as_the_spec_declares():
    for name, procedure in PROCEDURES.items():
        spec = BY_NAME[name]["survey_spec"]["spec"]
        variables = [q["variable"] for q in spec]
        assert len(variables) == len(set(variables)), name
        by_var = {q["variable"]: q for q in spec}
        for argument in procedure.arguments:
            option, question = procedure.option(argument), by_var[argument.var]
            assert question["required"] == procedure.required(argument), (name, argument.var)
            if option.type == "bool":
                assert question["type"] == "multiplechoice" and question["choices"] == ["true", "false"]
            elif option.type == "int":
                assert question["type"] == "integer"
            elif argument.names:
                assert question["type"] == ("multiselect" if option.type == "list" else "multiplechoice")
            if option.choices:
                assert question["choices"] == [str(c) for c in option.choices]


def test_rollback_targets_are_only_deployments():
    """A StatefulSet keeps no revisions to roll back to, and the driver refuses it: not offered either."""
    for name in ("rollback", "recover-deployment"):
        spec = BY_NAME[name]["survey_spec"]["spec"]
        services = next(q for q in spec if q["variable"].endswith("_services"))
        assert "postgres" not in services["choices"] and "api" in services["choices"]


def test_texts_carry_no_ansible_markup():
    for template in TEMPLATES:
        texts = [template["description"]] + [
            q["question_description"] for q in template["survey_spec"]["spec"]
        ]
        for text in texts:
            assert "C(" not in text and "I(" not in text, text


def test_committed_templates_are_current():
    committed = (ROOT / "awx" / "job_templates.yml").read_text()
    assert committed == awx.render(), "stale: run python -m driver.awx > awx/job_templates.yml"


def test_every_template_playbook_passes_syntax_check():
    playbooks = sorted({t["playbook"] for t in TEMPLATES})
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "--syntax-check",
            "-i",
            "inventories/sandbox",
            *playbooks,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
