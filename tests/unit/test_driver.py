"""The driver's own logic: settings, registry, incident records, result schema."""

import json
import os
import re
import stat

import pytest

from driver import argspec, cli, incident, settings
from driver.registry import PROCEDURES
from driver.results import SCHEMA, Result


def test_every_procedure_has_playbook_role_and_documented_arguments():
    from driver import ROOT

    for procedure in PROCEDURES.values():
        assert (ROOT / "playbooks" / procedure.playbook).is_file()
        assert procedure.description, procedure.name
        spec_options = argspec.entry_point(procedure.role)["options"]
        for argument in procedure.arguments:
            assert argument.var in spec_options, (procedure.name, argument.var)
            assert procedure.option(argument).description, (procedure.name, argument.flag)
        for var in (procedure.force_var, procedure.timeout_var):
            assert var is None or var in spec_options
        # An alternative is never required on its own, and a single required option is not restated.
        for flag in procedure.one_of:
            assert len(procedure.one_of) > 1, (procedure.name, flag)


def test_the_procedure_modules_import_on_their_own():
    import subprocess
    import sys

    for module in ("driver.procedures.service", "driver.procedures.restart", "driver.procedures.database"):
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_markup_is_rendered_for_a_reader():
    assert (
        argspec.plain("C(latest) or an id such as C(2026) (C(--backup))")
        == "latest or an id such as 2026 (--backup)"
    )
    assert argspec.plain("see L(the docs,https://x.example) or U(https://y.example)") == (
        "see the docs (https://x.example) or https://y.example"
    )
    assert argspec.plain(["I(one)", "B(two) O(a=b) V(c) E(HOME)"]) == "one two a=b c HOME"


def test_settings_record_their_source(monkeypatch):
    monkeypatch.setenv("EMERGENCY_SEVERITY", "P0")
    monkeypatch.delenv("EMERGENCY_TIMEOUT", raising=False)
    args = cli.build_parser().parse_args(["restart", "--all", "--timeout", "42"])
    values, sources = settings.resolve(args)
    assert (values["severity"], sources["severity"]) == ("P0", "env:EMERGENCY_SEVERITY")
    assert (values["timeout"], sources["timeout"]) == (42, "cli")
    assert sources["inventory"] == "default"


def test_list_shows_every_procedure(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in PROCEDURES:
        assert name in out


def test_help_comes_from_the_argument_spec(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["restart", "--help"])
    assert caught.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert argspec.option("restart", "restart_all").description.split(".")[0] in out
    assert "--incident" in out and "--check" in out and "Runbooks:" in out
    assert "C(" not in out


def test_help_shows_no_raw_markup_and_says_what_is_required(capsys):
    for procedure in PROCEDURES.values():
        with pytest.raises(SystemExit):
            cli.main([procedure.name, "--help"])
        out = capsys.readouterr().out
        assert not re.search(r"\b[CIBOVULMEP]\(", out), procedure.name
        for argument in procedure.arguments:
            if procedure.required(argument):
                assert "required" in out, (procedure.name, argument.flag)


def test_new_incident_ids_do_not_collide(tmp_path):
    moment = incident.utcnow().replace(year=2026, month=11, day=22, hour=9, minute=31, second=12)
    first = incident.new_id(tmp_path, moment)
    assert first == "INC-20261122-093112"
    (tmp_path / first).mkdir()
    assert incident.new_id(tmp_path, moment) == "INC-20261122-093112-2"


def test_incident_files_are_private(tmp_path):
    record = incident.Incident(tmp_path, "INC-1")
    ident = record.next_run("restart")
    assert ident == "001-restart"
    assert record.next_run("restart") == "002-restart"
    path = record.write_result(ident, {"schema": SCHEMA})
    record.append_timeline({"event": "started"})
    record.append_timeline({"event": "finished"})
    assert [e["event"] for e in record.timeline()] == ["started", "finished"]
    for file in (path, record.folder / "timeline.jsonl"):
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600


def test_result_schema_fields():
    data = Result("restart", {"id": "INC-1"}, {}, {}, False, "2026-11-22T09:31:00Z").to_dict()
    required = {
        "schema",
        "procedure",
        "incident",
        "status",
        "changed",
        "check_mode",
        "started_at",
        "finished_at",
        "steps",
        "outputs",
        "prior_state",
        "errors",
        "exit_code",
    }
    assert required <= set(data)
    assert data["schema"] == SCHEMA
    json.dumps(data)


@pytest.mark.parametrize(
    ("name", "message", "res", "code"),
    [
        # A third-party module that could not connect in preflight: unreachable, nothing changed.
        (
            "DB failover | Preflight | Read the primary",
            'Could not connect to the endpoint URL: "http://x/"',
            {},
            4,
        ),
        ("Restart | Preflight | Read", "Max retries exceeded (Failed to establish a new connection)", {}, 4),
        # Preflight that found the platform in a state the procedure will not touch.
        ("Restore | Preflight | Check the backup", "checksum mismatch in table_a.dat", {}, 3),
        # Our own modules say what happened.
        ("Restore | Resolve", "unknown backup id", {"outcome": "invalid"}, 2),
        ("Restore | Resolve", "cannot reach S3", {"outcome": "unreachable"}, 4),
        # Anything after preflight is a failure, even a connection error (something may have changed).
        ("Restore | Swap", "Connection refused", {}, 1),
    ],
)
def test_failures_are_classified_by_outcome_and_preflight(name, message, res, code):
    from driver.outcome import classify
    from driver.results import Step
    from driver.runner import RunOutcome

    step = Step(name, "sandbox", "failed", False, 0.1, message)
    outcome = RunOutcome(
        status="failed", rc=2, steps=[step], failures=[{"step": step, "res": res, "unreachable": False}]
    )
    result = Result("restore", {"id": "INC-1"}, {}, {}, False, "2026-11-22T09:31:00Z")
    assert classify(outcome, result, cancelled=False) == code
    assert result.errors[0]["step"] == name


def test_every_playbook_is_the_procedure_protocol_around_its_role():
    """Platform check, lock and release live in role `procedure`; a playbook only names its role."""
    import yaml

    from driver import ROOT

    for procedure in PROCEDURES.values():
        plays = yaml.safe_load((ROOT / "playbooks" / procedure.playbook).read_text())
        assert len(plays) == 1 and "tasks" not in plays[0], procedure.playbook
        (role,) = plays[0]["roles"]
        assert role["role"] == "procedure" and role["procedure_role"] == procedure.role, procedure.playbook
    playbooks = {p.name for p in (ROOT / "playbooks").glob("*.yml")}
    assert playbooks == {p.playbook for p in PROCEDURES.values()}


def test_a_failed_loop_reports_each_failed_items_message_not_ansibles_summary():
    from driver.runner import _message

    res = {
        "msg": "One or more items failed",
        "results": [
            {"_ansible_item_label": "api-keys", "changed": True},
            {"_ansible_item_label": "crank-keypair", "failed": True, "msg": "the follow-up command exited 2"},
        ],
    }
    assert _message(res) == "crank-keypair: the follow-up command exited 2"
    assert _message({"msg": "plain"}) == "plain"
