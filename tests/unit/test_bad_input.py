"""Bad input exits 2 with one line naming the valid choices, and starts no playbook."""

from __future__ import annotations

import subprocess
import sys

import pytest

from driver import ROOT

SERVICES = "indexer, api, crank, postgres"


def run(tmp_path, *args):
    incidents = tmp_path / "incidents"
    proc = subprocess.run(
        [sys.executable, "-m", "driver", *args, "--incidents-dir", str(incidents)]
        if args and args[0] == "restart"
        else [sys.executable, "-m", "driver", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return proc, incidents


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["restart", "--service", "web"], f"unknown service 'web'; valid: {SERVICES}"),
        (["restart", "--service", "API"], "not a DNS-1123 label"),
        (["restart", "--service", "api;reboot"], "shell metacharacters"),
        (["restart", "--service", "$(id)"], "shell metacharacters"),
        (["restart", "--service", ""], "is empty"),
        (["restart", "--service", "a" * 300], "300 characters"),
        (["restart", "--all", "--inventory", "/nonexistent/inventory"], "does not exist"),
        (["restart"], "exactly one of --service or --all"),
        (["restart", "--all", "--service", "api"], "exactly one of --service or --all"),
        (["restart", "--all", "--incident", "../../etc"], "incident id"),
        (["drain", "--yes"], "drain: --node is required"),
        (["set-env", "--service", "api"], "set-env: KEY=VALUE is required"),
        (["rollback", "--service", "postgres"], "only Deployments keep revisions"),
        (["restart", "--all", "--timeout", "0"], "--timeout must be"),
        (
            ["restart", "--all", "--pass-env", "VAULT_TOKEN,$(id)"],
            "--pass-env: '$(id)' is not a variable name",
        ),
    ],
)
def test_bad_input_exits_2_and_runs_nothing(tmp_path, args, fragment):
    proc, incidents = run(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (incidents.exists() and any(incidents.rglob("runs/*"))), "a playbook was started"


def test_unknown_procedure_names_the_procedures(tmp_path):
    proc, _ = run(tmp_path, "restrat", "--all")
    assert proc.returncode == 2
    assert "invalid choice: 'restrat'" in proc.stderr and "restart" in proc.stderr


def test_bad_environment_setting_is_invalid_input(tmp_path, monkeypatch):
    monkeypatch.setenv("EMERGENCY_TIMEOUT", "soon")
    proc, _ = run(tmp_path, "restart", "--all")
    assert proc.returncode == 2 and "EMERGENCY_TIMEOUT" in proc.stderr
