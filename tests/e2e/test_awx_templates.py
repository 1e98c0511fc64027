"""Each AWX job template's playbook, run as AWX runs it: ``ansible-playbook`` with the survey's answers
as extra variables (typed as AWX passes them: an integer as a number, a choice as a string, a
multiselect as a list, text as a string) and the job type "check", against the sandbox.

A survey whose answers the role cannot read (a "false" string used as a boolean, a dict given as
text) fails here, not in a user's AWX. db-failover needs the RDS inventory: tests/e2e/test_rds.py
runs its template the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from driver import ROOT, awx

TEMPLATES = {t["survey_spec"]["name"]: t for t in yaml.safe_load(awx.render())["controller_templates"]}
# What an operator types where a required text question has no default.
TYPED = {
    "drain_node": "node-c",
    "uncordon_node": "node-c",
    "set_env_vars": "SANDBOX_NOTE=awx",
    "unset_env_vars": "SANDBOX_NOTE",
    "restore_backup": "latest",
}


def answers(template: dict) -> dict:
    """The survey's defaults; where a required question has none, the first choice or a typed value;
    of a group of alternatives ("exactly one of"), the first one is answered."""
    values: dict = {}
    alternatives_answered = False
    for question in template["survey_spec"]["spec"]:
        var, kind = question["variable"], question["type"]
        if var == "incident_id":
            values[var] = f"INC-AWX-{uuid.uuid4().hex[:8]}"
            continue
        alternative = "Give exactly one of" in question["question_description"]
        if alternative and not alternatives_answered:
            values[var] = [question["choices"][0]] if kind == "multiselect" else TYPED.get(var, "true")
            alternatives_answered = True
        elif "default" in question:
            default = question["default"]
            values[var] = default.split("\n") if kind == "multiselect" else default
        elif question["required"]:
            if kind == "multiselect":
                values[var] = [question["choices"][0]]
            elif kind == "multiplechoice":
                values[var] = question["choices"][0]
            else:
                values[var] = TYPED[var]
    values.update(template["extra_vars"])
    return values


def run_in_check_mode(
    template: dict, inventory: str, env: dict, tmp_path: Path
) -> subprocess.CompletedProcess:
    extra = tmp_path / "extra_vars.json"
    extra.write_text(json.dumps(answers(template)))
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            template["playbook"],
            "-i",
            inventory,
            "--check",
            "-e",
            f"@{extra}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("name", sorted(set(TEMPLATES) - {"db-failover"}))
def test_template_runs_in_check_mode_with_the_survey_answers(name, target, tmp_path):
    assert_read_the_answers(run_in_check_mode(TEMPLATES[name], target.inventory, target.env, tmp_path))


def failed_results(proc: subprocess.CompletedProcess) -> list[dict]:
    report = json.loads(proc.stdout)
    return [
        dict(result, task=task["task"]["name"])
        for play in report["plays"]
        for task in play["tasks"]
        for result in task["hosts"].values()
        if result.get("failed")
    ]


def assert_read_the_answers(proc: subprocess.CompletedProcess) -> None:
    """Succeeded, or stopped by the procedure's own refusal of the platform's state (nothing to undo,
    no earlier revision): then the answers were read and judged, which is what is tested here."""
    failed = failed_results(proc)
    judged = [
        r
        for r in failed
        if "validat" not in r["task"].lower()
        and ("| Preflight |" in r["task"] or r.get("outcome") in ("refused", "invalid"))
    ]
    assert proc.returncode == 0 or (failed and judged == failed), (
        json.dumps(failed, indent=1)[-3000:] + proc.stderr[-2000:]
    )


@pytest.mark.parametrize(
    "name, variable",
    [
        ("scale", "scale_services"),
        ("set-env", "set_env_services"),
        ("unset-env", "unset_env_services"),
        ("restart-unhealthy", "restart_unhealthy_services"),
        ("db-pod-recover", "db_pod_recover_service"),
    ],
)
def test_an_unknown_service_is_refused_by_the_roles_preflight_naming_it(name, variable, target, tmp_path):
    """AWX passes the answers straight to the role: its preflight assert says what is wrong."""
    template = dict(TEMPLATES[name], extra_vars={**TEMPLATES[name]["extra_vars"]})
    template["extra_vars"][variable] = "ghost" if variable.endswith("_service") else ["ghost"]
    proc = run_in_check_mode(template, target.inventory, target.env, tmp_path)
    [failure] = failed_results(proc)
    assert proc.returncode != 0 and "| Preflight |" in failure["task"], failure
    assert "ghost" in failure["msg"] and "api" in failure["msg"], failure["msg"]
