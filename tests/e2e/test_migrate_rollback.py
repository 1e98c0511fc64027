"""`migrate-rollback` end to end: the application's rollback command runs in the api pod through
pods/exec, and the tests assert schema_migrations, the schema itself and the workload's record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from driver import ROOT
from tests.conftest import incident_id

NEWEST, PREVIOUS = "20240201120000", "20240115093000"
ANNOTATION = "emergency.ops/migrate-rollback"


@pytest.fixture(scope="module")
def dsn(target):
    if target.status is None:
        pytest.fail("the migrate-rollback tests need the sandbox (its application database)")
    return target.status["postgres"]["dsn"]


def versions(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version DESC")]


def has_fee_column(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'trades' AND column_name = 'fee'"
            ).fetchone()
        )


def record(target) -> dict:
    api = target.kube().get("Deployment", "api")
    return json.loads(api["metadata"].get("annotations", {}).get(ANNOTATION) or "{}")


@pytest.fixture
def healed(target, dsn):
    """Every test leaves the schema as seeded: the application's own `migrate up`, and no record."""
    yield
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version > %s", (NEWEST,))
    subprocess.run(
        [sys.executable, "-m", "sandbox.app", "migrate", "up"],
        env={**os.environ, "DATABASE_URL": dsn},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    target.kube().patch("Deployment", "api", {"metadata": {"annotations": {ANNOTATION: None}}}, "merge")
    assert versions(dsn)[0] == NEWEST and has_fee_column(dsn)


def test_rolls_back_once_per_incident(driver, target, dsn, healed, incidents):
    assert versions(dsn)[:2] == [NEWEST, PREVIOUS] and has_fee_column(dsn)
    incident = incident_id()

    first = driver("migrate-rollback", "--incident", incident, "--yes")
    assert first.rc == 0, first.stderr + first.stdout
    assert first.result["changed"] is True
    assert versions(dsn)[0] == PREVIOUS
    assert not has_fee_column(dsn)  # the down SQL ran, not only the row deletion
    assert record(target) == {
        "incident": incident,
        "state": "done",
        "from": NEWEST,
        "to": PREVIOUS,
        "pod": first.result["outputs"]["migrate_rollback"]["pod"],
    }
    outputs = first.result["outputs"]["migrate_rollback"]
    assert (outputs["newest_before"], outputs["newest_after"]) == (NEWEST, PREVIOUS)
    assert first.result["prior_state"]["newest"] == NEWEST

    second = driver("migrate-rollback", "--incident", incident, "--yes")
    assert second.rc == 0, second.stderr + second.stdout
    assert second.result["changed"] is False
    assert versions(dsn)[0] == PREVIOUS  # not a second migration

    # The database password (the application's and the admin's) is in no output or file.
    passwords = [
        Path(target.status["postgres"]["password_file"]).read_text().strip(),
        Path(target.status["postgres"]["admin_password_file"]).read_text().strip(),
    ]
    written = [p.read_text(errors="replace") for p in incidents.rglob("*") if p.is_file()]
    for text in [first.stdout, first.stderr, second.stdout, second.stderr, *written]:
        assert not any(pw in text for pw in passwords)


def test_check_mode_shows_the_plan_and_changes_nothing(driver, target, dsn, healed):
    before = versions(dsn)
    run = driver("migrate-rollback", "--incident", incident_id(), "--check")
    assert run.rc == 0, run.stderr + run.stdout
    outputs = run.result["outputs"]["migrate_rollback"]
    assert outputs["rolled_back"] == NEWEST
    assert outputs["command"] == "./matchbook migrate rollback"
    assert versions(dsn) == before and has_fee_column(dsn)
    assert record(target) == {}


def test_refused_without_a_configured_command(driver, target, dsn, healed, tmp_path):
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory)
    database_vars = inventory / "group_vars" / "all" / "database.yml"
    text = database_vars.read_text()
    start = text.index("platform_migrate_rollback:")
    end = text.index("\n\n", start)
    database_vars.write_text(text[:start] + text[end + 2 :])

    run = driver("migrate-rollback", "--incident", incident_id(), "--yes", "--inventory", str(inventory))
    assert run.rc == 3
    assert "platform_migrate_rollback.command" in json.dumps(run.result["errors"])
    assert versions(dsn)[0] == NEWEST and has_fee_column(dsn)


def test_bad_input_exits_2(driver, dsn, healed):
    run = driver("migrate-rollback", "--incident", "not an id!", "--yes")
    assert run.rc == 2
    assert versions(dsn)[0] == NEWEST


def test_failed_command_changes_nothing_and_is_recoverable(driver, target, dsn, healed):
    # A migration this build of the application does not know: its rollback command refuses.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('20990101000000')")
    incident = incident_id()
    run = driver("migrate-rollback", "--incident", incident, "--yes")
    assert run.rc == 1
    message = json.dumps(run.result["errors"])
    assert "unknown to this build" in message  # the command's output tail
    assert versions(dsn)[:2] == ["20990101000000", NEWEST] and has_fee_column(dsn)
    assert record(target)["state"] == "started"

    # Once the unknown migration is dealt with, a new incident rolls the newest back (the lock was released).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = '20990101000000'")
    retry = driver("migrate-rollback", "--incident", incident_id(), "--yes")
    assert retry.rc == 0, retry.stderr + retry.stdout
    assert versions(dsn)[0] == PREVIOUS and not has_fee_column(dsn)
