"""lockdown and unlock end to end, judged on the wire (a user's own session token through the Ingress,
a login attempt, a database login) and on the platform (the users table, Redis, the role, the record):
check mode, a re-run, the exact inverse (a user suspended before stays suspended), every login at once
with sessions kept or ended, bad input, and a run that fails half-way put back by unlock."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from driver import ROOT
from tests.conftest import incident_id, wait_for
from tests.leaks import leaks

RECORDS = "emergency.ops/lockdown"


def post_login(target, user: str, password: str) -> tuple[int, dict]:
    ingress = target.status["ingress"]
    request = urllib.request.Request(
        ingress["url"] + "/api/login",
        data=json.dumps({"user": user, "password": password}).encode(),
        headers={"Host": ingress["host"], "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def session_status(target, token: str) -> int:
    """What the user's own session token gets through the Ingress."""
    ingress = target.status["ingress"]
    request = urllib.request.Request(
        ingress["url"] + "/api/me", headers={"Host": ingress["host"], "X-Session-Token": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def token_of(target, user: str) -> str:
    status, body = post_login(target, user, f"{user}-password")
    assert status == 200, status
    return body["token"]


def database(target, user: str | None = None):
    pg = target.status["postgres"]
    if user is None:
        user, password = pg["admin_user"], Path(pg["admin_password_file"]).read_text().strip()
    else:
        password = f"{user}-password"
    return psycopg.connect(
        host=pg["host"], port=pg["port"], user=user, password=password, dbname=pg["database"],
        connect_timeout=5, autocommit=True,
    )  # fmt: skip


def cache(target):
    settings = target.status["redis"]
    password = Path(settings["password_file"]).read_text().strip()
    return redis.Redis.from_url(settings["url"], password=password, decode_responses=True)


def account(target, user: str) -> dict:
    """Everything lockdown may touch for the user, and unlock must put back."""
    with database(target) as db:
        locked = db.execute("SELECT locked FROM users WHERE name = %s", (user,)).fetchone()[0]
        role = db.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
    return {
        "locked": locked,
        "cache_locked": bool(cache(target).exists(f"matchbook:user-locked:{user}")),
        "db_login": role[0] if role else None,
    }


def records(kube) -> list[str]:
    return sorted(c["metadata"]["name"] for c in kube.list("ConfigMap", label_selector=RECORDS))


def api_env(kube) -> list:
    return kube.get("Deployment", "api")["spec"]["template"]["spec"]["containers"][0].get("env")


@pytest.fixture
def accounts(target):
    """The seeded users as they were, after each test."""
    kube = target.kube()
    before = {user: account(target, user) for user in ("alice", "carol")}
    env = api_env(kube)
    yield kube
    assert records(kube) == []
    assert {user: account(target, user) for user in before} == before
    assert api_env(kube) == env


def test_a_locked_out_user_is_refused_everywhere_and_unlock_lets_them_back(
    driver, target, incidents, accounts
):
    kube, incident = accounts, incident_id()
    before = account(target, "alice")
    assert before == {"locked": False, "cache_locked": False, "db_login": True}
    token = token_of(target, "alice")
    assert session_status(target, token) == 200
    held = database(target, "alice")  # a database session of hers, open before the lockdown

    check = driver("lockdown", "--user", "alice", "--check", "--incident", incident)
    assert check.rc == 0 and check.result["changed"], check.stdout + check.stderr
    assert account(target, "alice") == before and session_status(target, token) == 200
    assert records(kube) == []

    run = driver("lockdown", "--user", "alice", "--yes", "--incident", incident)
    assert run.rc == 0 and run.result["changed"], run.stdout + run.stderr
    assert session_status(target, token) == 401  # her own token, through the Ingress
    assert post_login(target, "alice", "alice-password")[0] == 403
    assert account(target, "alice") == {"locked": True, "cache_locked": True, "db_login": False}
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        database(target, "alice")
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")  # her open backend was terminated
    entry = run.result["outputs"]["lockdown"]["accounts"]["alice"]
    assert entry["sessions_ended"] >= 1 and entry["db_backends_terminated"] >= 1
    assert entry["locked_by"] == incident and len(records(kube)) == 1
    assert leaks({"token": token}, [p for p in incidents.rglob("*") if p.is_file()], [run.stdout]) == []

    again = driver("lockdown", "--user", "alice", "--yes", "--incident", incident)
    assert again.rc == 0 and not again.result["changed"], again.stdout

    unlocked = driver("unlock", "--user", "alice", "--yes", "--incident", incident)
    assert unlocked.rc == 0 and unlocked.result["changed"], unlocked.stdout + unlocked.stderr
    assert account(target, "alice") == before and records(kube) == []
    assert session_status(target, token_of(target, "alice")) == 200
    database(target, "alice").close()
    twice = driver("unlock", "--user", "alice", "--yes", "--incident", incident)
    assert twice.rc == 0 and not twice.result["changed"]


def test_unlock_puts_back_exactly_what_was_there_a_suspended_user_stays_suspended(driver, target, accounts):
    """carol is suspended in the users table before (and has no database role): lockdown adds the
    cache's lock key; unlock removes only that."""
    incident = incident_id()
    before = account(target, "carol")
    assert before == {"locked": True, "cache_locked": False, "db_login": None}
    run = driver("lockdown", "--user", "carol", "--yes", "--incident", incident)
    assert run.rc == 0 and run.result["changed"], run.stdout + run.stderr
    assert account(target, "carol") == dict(before, cache_locked=True)
    unlocked = driver("unlock", "--user", "carol", "--yes", "--incident", incident)
    assert unlocked.rc == 0, unlocked.stdout + unlocked.stderr
    assert account(target, "carol") == before
    assert post_login(target, "carol", "carol-password")[0] == 403


def test_lockdown_all_disables_new_logins_keeps_sessions_or_ends_them(driver, target, accounts):
    kube, incident = accounts, incident_id()
    token = token_of(target, "bob")
    env = api_env(kube)

    check = driver("lockdown", "--all", "--check", "--incident", incident)
    assert check.rc == 0 and api_env(kube) == env and records(kube) == [], check.stdout

    run = driver("lockdown", "--all", "--yes", "--incident", incident)
    assert run.rc == 0 and run.result["changed"], run.stdout + run.stderr
    assert run.result["outputs"]["lockdown"]["wire"] == 503
    assert post_login(target, "bob", "bob-password")[0] == 503
    assert session_status(target, token) == 200  # sessions kept unless asked
    assert {"name": "MATCHBOOK_LOGINS", "value": "disabled"} in api_env(kube)

    again = driver("lockdown", "--all", "--yes", "--incident", incident)
    assert again.rc == 0 and not again.result["changed"], again.stdout
    ended = driver("lockdown", "--all", "--end-sessions", "--yes", "--incident", incident)
    assert ended.rc == 0 and ended.result["changed"], ended.stdout + ended.stderr
    assert ended.result["outputs"]["lockdown"]["accounts"]["all"]["sessions_ended"] >= 1
    assert session_status(target, token) == 401
    assert not list(cache(target).scan_iter(match="matchbook:session:*"))

    unlocked = driver("unlock", "--all", "--yes", "--incident", incident)
    assert unlocked.rc == 0 and unlocked.result["changed"], unlocked.stdout + unlocked.stderr
    assert unlocked.result["outputs"]["unlock"]["wire"] not in (503, 0)
    assert api_env(kube) == env  # the variable was not there before: it is gone again
    assert post_login(target, "bob", "bob-password")[0] == 200


@pytest.mark.parametrize(
    "args, message",
    [
        (("--user", "a b"), "--user 'a b'"),
        (("--user", "alice", "--end-sessions"), "--end-sessions goes with --all"),
        ((), "--user or --all"),
        (("--user", "alice", "--user", "ghost"), "'ghost' is neither a user"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(driver, target, accounts, args, message):
    run = driver("lockdown", *args, "--yes", "--incident", incident_id(), json_output=False)
    assert run.rc == 2 and message in run.stdout + run.stderr, run.stdout + run.stderr
    assert account(target, "alice")["locked"] is False


def test_a_run_that_fails_half_way_is_put_back_by_unlock(driver, target, accounts, tmp_path):
    """The session index is misnamed (it is the cache's lock key, which the run itself sets): the user
    is suspended and then ending the sessions fails. The record was written first, so unlock with the
    right inventory puts everything back."""
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory)
    text = (inventory / "group_vars" / "all" / "platform.yml").read_text()
    broken = text.replace(
        'user_sessions_key: "matchbook:user-sessions:{user}"',
        'user_sessions_key: "matchbook:user-locked:{user}"',
    )
    assert broken != text
    (inventory / "group_vars" / "all" / "platform.yml").write_text(broken)
    incident = incident_id()
    run = driver(
        "lockdown", "--user", "alice", "--yes", "--incident", incident, "--inventory", str(inventory)
    )
    assert run.rc == 1, run.stdout + run.stderr
    assert account(target, "alice")["locked"] is True and len(records(target.kube())) == 1
    unlocked = driver("unlock", "--user", "alice", "--yes", "--incident", incident)
    assert unlocked.rc == 0 and unlocked.result["changed"], unlocked.stdout + unlocked.stderr
    wait_for(lambda: account(target, "alice")["db_login"], what="her database login back")
