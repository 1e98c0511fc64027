"""The operator's environment never reaches the incident folder, the result or the output.

An on-call shell holds AWS keys, database passwords, Vault and webhook tokens. Each test plants
distinctive values in a dozen such variables, runs a procedure of one family for real and in check
mode, and searches every byte the run wrote (the incident folder, ansible-runner's artifacts and
events, what the procedure wrote in the sandbox's folder) or printed, raw, base64 and URL-encoded.
The RDS test also gives the AWS credentials only through the environment, so it shows they still
reach the modules that need them.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

# platform and rds are the RDS tests' fixtures: a primary with its replica, and the moto client.
from tests.e2e.test_rds import REPLICA, TAG, inventory_with, platform, rds, secret_values, tags  # noqa: F401
from tests.leaks import leaks

GENERIC = (
    "PGPASSWORD",
    "VAULT_TOKEN",
    "VAULT_ADDR",
    "SLACK_WEBHOOK_URL",
    "SLACK_BOT_TOKEN",
    "PAGERDUTY_ROUTING_KEY",
    "PAGERDUTY_API_TOKEN",
    "STATUSPAGE_API_KEY",
    "GITHUB_TOKEN",
    "APP_DB_PASSWORD",
    "REDIS_PASSWORD",
    "ANSIBLE_NET_PASSWORD",
)
AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def planted(names) -> dict[str, str]:
    """A value per variable that nothing else contains, with the characters encodings change."""
    values = {name: f"Pl4nt/{secrets.token_hex(8)}+{name.lower()}=" for name in names}
    values["VAULT_ADDR"] = f"https://vault.example:8200/?token={secrets.token_hex(8)}"
    values["SLACK_WEBHOOK_URL"] = f"https://hooks.slack.com/services/T0/B0/{secrets.token_hex(12)}"
    return {name: value for name, value in values.items() if name in names}


def written_since(folder: Path, moment: float) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= moment - 1]


def assert_nothing_leaked(values, runs, incidents, target, started):
    files = list(incidents.rglob("*"))
    if target.status is not None:  # what the procedures wrote in the sandbox's own folder
        files += written_since(Path(target.env["EMERGENCY_SANDBOX_DIR"]), started)
    printed = [text for run in runs for text in (run.stdout, run.stderr)]
    assert not leaks(values, files, printed)
    # The record keeps which variables were passed, by name only.
    for run in runs:
        assert run.result is not None, run.stderr
        recorded = json.loads(
            (
                Path(run.result["run"]["artifacts"]) / "artifacts" / run.result["run"]["ident"] / "command"
            ).read_text()
        )
        assert recorded["command"] and recorded["cwd"]
        assert not set(recorded["env"]) & set(values), "a credential variable was recorded"


def incident(kind: str) -> str:
    return f"INC-ENV-{kind}-{secrets.token_hex(4)}"


def test_service_procedure_leaks_nothing(driver, target, incidents):
    values = planted(GENERIC + AWS)
    started = time.time()
    name = incident("SVC")
    check = driver("restart", "--service", "api", "--check", "--incident", name, env=values)
    assert check.rc == 0, check.stderr + check.stdout
    real = driver("restart", "--service", "api", "--incident", name, env=values)
    assert real.rc == 0, real.stderr + real.stdout
    assert real.result["changed"] is True
    assert "PGPASSWORD" in real.result["run"]["environment"]
    assert "VAULT_TOKEN" not in real.result["run"]["environment"]
    assert_nothing_leaked(values, [check, real], incidents, target, started)


def test_database_procedure_leaks_nothing(driver, target, incidents):
    values = planted(GENERIC + AWS)
    started = time.time()
    name = incident("DB")
    check = driver("backup", "--check", "--incident", name, env=values)
    assert check.rc == 0, check.stderr + check.stdout
    real = driver("backup", "--incident", name, env=values)
    assert real.rc == 0, real.stderr + real.stdout
    assert real.result["changed"] is True
    assert_nothing_leaked(values, [check, real], incidents, target, started)


def test_rds_procedure_works_with_credentials_only_in_the_environment(
    driver,
    target,
    rds,  # noqa: F811 (the fixture imported above)
    platform,  # noqa: F811
    incidents,
    tmp_path,
):
    # The inventory names no credential: boto3 finds them in the environment, as on an on-call laptop.
    inventory = inventory_with(
        tmp_path,
        'access_key: "{{ sandbox_endpoints.s3.access_key }}"\n'
        "  secret_key:\n"
        "    source: file\n"
        '    path: "{{ sandbox_endpoints.s3.secret_key_file }}"',
        'access_key: ""',
    )
    s3 = target.status["s3"]
    aws = {"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"]}
    values = {**planted(GENERIC), **aws}
    started = time.time()
    name = incident("RDS")
    check = driver("db-failover", "--check", "--incident", name, "--inventory", inventory, env=values)
    assert check.rc == 0, check.stderr + check.stdout
    assert TAG not in tags(rds, REPLICA)
    real = driver("db-failover", "--yes", "--incident", name, "--inventory", inventory, env=values)
    assert real.rc == 0, real.stderr + real.stdout
    assert tags(rds, REPLICA).get(TAG) == name
    assert secret_values(target)["host"] != platform["host"]
    assert_nothing_leaked({**values, "db": platform["password"]}, [check, real], incidents, target, started)

    # Without the environment's credentials the same inventory cannot reach RDS: they were used.
    aws = [k for k in os.environ if k.startswith("AWS_")]
    missing = driver(
        "db-failover", "--check", "--incident", incident("RDS"), "--inventory", inventory, unset=aws
    )
    assert missing.rc != 0


def test_runs_recorded_by_earlier_versions_are_scrubbed(driver, incidents):
    """A folder written when ansible-runner recorded the whole environment: its values are removed
    on the next run, the names kept, and the run says which files it rewrote."""
    old = incidents / "INC-OLD-1" / "runs" / "001-restart" / "artifacts" / "001-restart" / "command"
    old.parent.mkdir(parents=True)
    secret = f"Pl4nt/{secrets.token_hex(8)}+old="
    old.write_text(
        json.dumps({"command": ["ansible-playbook"], "cwd": "/", "env": {"AWS_SECRET_ACCESS_KEY": secret}})
    )
    run = driver("restart", "--service", "api", "--check", "--incident", incident("SCRUB"))
    assert run.rc == 0, run.stderr + run.stdout
    assert any(str(old) in warning for warning in run.result["warnings"])
    recorded = json.loads(old.read_text())
    assert recorded["env"] == {"AWS_SECRET_ACCESS_KEY": None} and recorded["env_scrubbed"]
    assert not leaks({"old": secret}, incidents.rglob("*"))
    timeline = (incidents / "INC-OLD-1" / "timeline.jsonl").read_text().splitlines()
    assert json.loads(timeline[-1])["event"] == "scrubbed"
    again = driver("restart", "--service", "api", "--check", "--incident", incident("SCRUB"))
    assert again.result["warnings"] == []
