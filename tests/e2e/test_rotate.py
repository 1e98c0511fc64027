"""rotate-secrets end to end: under constant traffic through the Ingress, the database password is
rotated with no failed request, the new login accepted and the old one refused; API keys are checked
through the Ingress; no value (old or new, in any encoding) is in any output or file of the run; a
re-run changes nothing, check mode nothing at all, bad input exits 2, and pods that do not become ready
put the previous credential back while the service keeps running. Each test puts the sandbox's
credentials back as they were."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from driver import ROOT
from sandbox import traffic, wallet
from tests.conftest import call, incident_id, wait_for
from tests.leaks import leaks

ROTATED = ("app_a", "app_b")


def admin(target):
    pg = target.status["postgres"]
    return psycopg.connect(
        host=pg["host"],
        port=pg["port"],
        user=pg["admin_user"],
        password=Path(pg["admin_password_file"]).read_text().strip(),
        dbname="postgres",
        autocommit=True,
    )


def login(target, user: str, password: str) -> bool:
    pg = target.status["postgres"]
    try:
        psycopg.connect(
            host=pg["host"],
            port=pg["port"],
            user=user,
            password=password,
            dbname=pg["database"],
            connect_timeout=5,
        ).close()
        return True
    except psycopg.OperationalError:
        return False


def values(kube, name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in kube.get("Secret", name)["data"].items()}


def put_back(target, driver, name: str, data: dict[str, str]) -> None:
    """The Secret's original data, the app role's original password, the services restarted on it, and
    the alternating roles gone."""
    kube = target.kube()
    if values(kube, name) != data:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        kube.patch("Secret", name, {"data": encoded}, patch_type="merge")
        if name == "postgres-secret":
            with admin(target) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                        sql.Identifier(data["username"]), sql.Literal(data["password"])
                    )
                )
        assert driver("restart", "--all", "--incident", incident_id("INC-HEAL")).rc == 0
    with admin(target) as conn:
        for role in ROTATED:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    wait_for(lambda: call(target, "/health/database") == 200, what="the api on its database")


@pytest.fixture
def database_secret(target, driver):
    data = values(target.kube(), "postgres-secret")
    yield data
    put_back(target, driver, "postgres-secret", data)


@pytest.fixture
def api_keys(target, driver):
    data = values(target.kube(), "api-keys")
    yield data
    put_back(target, driver, "api-keys", data)


def run_files(incidents: Path) -> list[Path]:
    return [p for p in incidents.rglob("*") if p.is_file()]


def test_the_database_password_rotates_under_load_with_no_failed_request(
    driver, target, incidents, database_secret
):
    kube = target.kube()
    ingress = target.status["ingress"]
    before = kube.get("Secret", "postgres-secret")["metadata"]["resourceVersion"]
    # /api/markets queries the database on each request (with the API key); /health/database says
    # whether the api can use its database.
    load = traffic.start(
        ingress["url"], rps=40, seconds=240, paths=["/api/markets", "/health/database"], host=ingress["host"],
        timeout=5, headers={"X-API-Key": values(kube, "api-keys")["admin-key"]},
    )  # fmt: skip
    incident = incident_id()
    try:
        run = driver("rotate-secrets", "--secret", "postgres-secret", "--yes", "--incident", incident)
    finally:
        load.stop()
    report = load.wait(30)
    assert run.rc == 0, run.stdout + run.stderr
    assert report.sent > 100 and report.failed == 0, (report.statuses, report.failures)

    [rotated] = run.result["outputs"]["rotate_secrets"]["rotated"]
    assert rotated["restarted"] == ["indexer", "api", "crank"]  # the restart order; not the database pod
    assert rotated["not_restarted"] == ["postgres"]
    assert rotated["previous_resource_version"] == before != rotated["resource_version"]
    now = values(kube, "postgres-secret")
    assert now["username"] == "app_a" and now["password"] != database_secret["password"]
    assert now["url"] == database_secret["url"].replace(
        f"{database_secret['username']}:{database_secret['password']}@", f"app_a:{now['password']}@"
    )
    assert login(target, now["username"], now["password"])
    assert not login(target, database_secret["username"], database_secret["password"])
    with admin(target) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (database_secret["username"],)
        ).fetchone()[0]
    assert left == 0

    secrets = {"old password": database_secret["password"], "new password": now["password"]}
    assert leaks(secrets, run_files(incidents), [run.stdout, run.stderr]) == []

    again = driver("rotate-secrets", "--secret", "postgres-secret", "--yes", "--incident", incident)
    assert again.rc == 0 and not again.result["changed"], again.stdout
    assert values(kube, "postgres-secret") == now


def test_api_keys_rotate_and_the_old_key_is_refused_through_the_ingress(driver, target, incidents, api_keys):
    kube = target.kube()
    assert call(target, "/api/markets", api_keys["admin-key"]) == 200
    run = driver("rotate-secrets", "--secret", "api-keys", "--yes", "--incident", incident_id())
    assert run.rc == 0, run.stdout + run.stderr
    [rotated] = run.result["outputs"]["rotate_secrets"]["rotated"]
    assert rotated["restarted"] == ["api"] and rotated["wire"] == {"old": 401, "new": 200}
    now = values(kube, "api-keys")
    assert set(now) == set(api_keys) and all(now[k] != api_keys[k] for k in now)
    assert call(target, "/api/markets", api_keys["admin-key"]) == 401
    assert call(target, "/api/markets", now["admin-key"]) == 200
    secrets = {f"old {k}": v for k, v in api_keys.items()} | {f"new {k}": v for k, v in now.items()}
    assert leaks(secrets, run_files(incidents), [run.stdout, run.stderr]) == []


def test_check_mode_and_bad_input_change_nothing(driver, target, database_secret):
    kube = target.kube()
    before = kube.get("Secret", "postgres-secret")["metadata"]["resourceVersion"]
    check = driver("rotate-secrets", "--all", "--check", "--incident", incident_id())
    assert check.rc == 0, check.stdout + check.stderr
    for args, message in (
        (("--secret", "redis-secret"), "not a rotatable Secret"),
        (("--secret", "ghost"), "not a rotatable Secret"),
        ((), "exactly one of"),
    ):
        bad = driver("rotate-secrets", *args, "--yes", "--incident", incident_id(), json_output=False)
        assert bad.rc == 2 and message in bad.stderr, bad.stderr
    assert kube.get("Secret", "postgres-secret")["metadata"]["resourceVersion"] == before
    with admin(target) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(ROTATED),)
            ).fetchone()[0]
            == 0
        )


def test_pods_that_cannot_log_in_put_the_previous_credential_back(driver, target, database_secret):
    """app_a exists with a connection limit of 0: the restarted pods cannot log in and never become
    ready. The rotation puts the Secret and the pods back; the old credential was never touched."""
    kube = target.kube()
    with admin(target) as conn:
        conn.execute("CREATE ROLE app_a NOLOGIN CONNECTION LIMIT 0")  # and not a member: rotation grants it
    run = driver(
        "rotate-secrets",
        "--secret",
        "postgres-secret",
        "--yes",
        "--timeout",
        "15",
        "--incident",
        incident_id(),
    )
    assert run.rc == 1, run.stdout + run.stderr
    assert "back" in run.stdout
    assert values(kube, "postgres-secret") == database_secret
    assert login(target, database_secret["username"], database_secret["password"])
    wait_for(lambda: call(target, "/health/database") == 200, what="the api serving on the old credential")
    with admin(target) as conn:
        refused = conn.execute(
            "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'app_a'"
        ).fetchone()[0]
    assert refused


@pytest.fixture
def crank_wallet(target, driver):
    data = values(target.kube(), "crank-keypair")
    yield data
    put_back(target, driver, "crank-keypair", data)


def crank_wallet_in_use(kube) -> str | None:
    """The public key the running crank logs it signs with."""
    pods = [
        p
        for p in kube.list("Pod", label_selector="app.kubernetes.io/name=crank")
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
    ]
    if len(pods) != 1:
        return None
    text = kube.raw("GET", kube.path("Pod", pods[0]["metadata"]["name"], "log"))
    text = text.decode() if isinstance(text, bytes) else text
    found = re.findall(r"crank wallet ([0-9a-f]{64})", text)
    return found[-1] if found else None


def test_the_crank_wallet_rotates_with_the_crank_stopped_and_the_transfer_made_once(
    driver, target, incidents, crank_wallet, tmp_path
):
    kube = target.kube()
    ledger = Path(target.env["EMERGENCY_SANDBOX_DIR"]) / "wallet-ledger.jsonl"
    ledger.unlink(missing_ok=True)
    old = crank_wallet["keypair"]
    assert crank_wallet_in_use(kube) == wallet.pubkey(old)
    incident = incident_id()
    leftovers = set(Path(tempfile.gettempdir()).glob("emergency-keypair-*"))

    check = driver("rotate-secrets", "--secret", "crank-keypair", "--check", "--incident", incident)
    assert check.rc == 0 and values(kube, "crank-keypair") == crank_wallet and not ledger.exists()

    run = driver("rotate-secrets", "--secret", "crank-keypair", "--yes", "--incident", incident)
    assert run.rc == 0 and run.result["changed"], run.stdout + run.stderr
    now = values(kube, "crank-keypair")
    assert set(now) == {"keypair"} and now["keypair"] != old  # the previous one dropped after the transfer
    assert kube.get("Deployment", "crank")["spec"]["replicas"] == 1
    new_key = wallet.pubkey(now["keypair"])
    wait_for(lambda: crank_wallet_in_use(kube) == new_key, what="the crank signing with the new wallet")
    moves = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert moves == [{"from": wallet.pubkey(old), "to": new_key, "amount": "ALL", "at": moves[0]["at"]}]
    rotated = run.result["outputs"]["rotate_secrets"]["rotated"][0]
    assert rotated["stopped"] == ["crank"] and rotated["followed_up"]
    assert set(Path(tempfile.gettempdir()).glob("emergency-keypair-*")) == leftovers
    secrets = {"old keypair": old, "new keypair": now["keypair"]}
    assert leaks(secrets, run_files(incidents), [run.stdout, run.stderr, check.stdout]) == []

    again = driver("rotate-secrets", "--secret", "crank-keypair", "--yes", "--incident", incident)
    assert again.rc == 0 and not again.result["changed"], again.stdout
    assert len(ledger.read_text().splitlines()) == 1 and values(kube, "crank-keypair") == now

    # A transfer that fails: the new wallet serves, the previous one stays beside it until a re-run moves
    # the funds; nothing that holds funds is lost.
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", inventory)
    platform = inventory / "group_vars" / "all" / "platform.yml"
    platform.write_text(platform.read_text().replace("      - transfer\n", "      - no-such-command\n"))
    second = incident_id()
    failed = driver(
        "rotate-secrets",
        "--secret",
        "crank-keypair",
        "--yes",
        "--incident",
        second,
        "--inventory",
        str(inventory),
    )
    assert failed.rc == 1 and "crank-keypair: the follow-up command" in failed.stdout, failed.stdout
    kept = values(kube, "crank-keypair")
    assert kept["keypair.previous"] == now["keypair"] and kept["keypair"] != now["keypair"]
    assert kube.get("Deployment", "crank")["spec"]["replicas"] == 1
    retried = driver("rotate-secrets", "--secret", "crank-keypair", "--yes", "--incident", second)
    assert retried.rc == 0 and retried.result["changed"], retried.stdout + retried.stderr
    assert set(values(kube, "crank-keypair")) == {"keypair"}
    assert len(ledger.read_text().splitlines()) == 2

    # A transfer that failed under one incident and a rotation for another: the pending transfer goes
    # first, so the key that holds the funds is not overwritten.
    third = incident_id()
    args = ("rotate-secrets", "--secret", "crank-keypair", "--yes")
    assert driver(*args, "--incident", third, "--inventory", str(inventory)).rc == 1
    stranded = values(kube, "crank-keypair")
    fourth = driver(*args, "--incident", incident_id())
    assert fourth.rc == 0, fourth.stdout + fourth.stderr
    moves = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(m["from"], m["to"]) for m in moves[2:]] == [
        (wallet.pubkey(stranded["keypair.previous"]), wallet.pubkey(stranded["keypair"])),
        (wallet.pubkey(stranded["keypair"]), wallet.pubkey(values(kube, "crank-keypair")["keypair"])),
    ]
    assert set(values(kube, "crank-keypair")) == {"keypair"}
