"""`backup`, `restore`, `restore-undo` and `restore-cleanup` end to end, asserted on the database,
the bucket and the workloads."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from ansible_collections.emergency.ops.plugins.module_utils import postgres
from ansible_collections.emergency.ops.plugins.module_utils import store as backup_store
from driver import ROOT
from tests.conftest import incident_id, processes_mentioning, wait_for

WRITERS = {"indexer": 1, "api": 2, "crank": 1}


def suffix(incident: str) -> str:
    return postgres.incident_suffix(incident)


@pytest.fixture(scope="module")
def db(target):
    if target.status is None:
        pytest.fail("the database tests need the sandbox (its admin login and bucket)")
    from sandbox.platform import Sandbox

    box = Sandbox(Path(target.status["dir"]))
    return box


def admin(box, dbname: str = "postgres"):
    conn = box.admin_database()
    return psycopg.connect(
        host=conn["host"],
        port=conn["port"],
        user=conn["user"],
        password=conn["password"],
        dbname=dbname,
        autocommit=True,
    )


def database_names(box) -> set[str]:
    with admin(box) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def counts(box, dbname: str = "app") -> dict[str, int]:
    with admin(box, dbname) as conn:
        return postgres.row_counts(conn)


# The tables the running application writes to on its own (the indexer, a few rows a second): between
# two counts they may only grow. Every other table must be unchanged.
GROWING = {"public.events"}


def assert_kept(before: dict[str, int], after: dict[str, int]) -> None:
    """Nothing was lost or changed between two counts of a database the indexer keeps writing to."""
    assert after.keys() == before.keys(), (before, after)
    for table, count in before.items():
        grown_or_same = after[table] >= count if table in GROWING else after[table] == count
        assert grown_or_same, (table, count, after[table])


def rows_of(box, dbname: str, kind: str) -> int:
    with admin(box, dbname) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE kind = %s", (kind,)).fetchone()[0]


def add_events(box, kind: str, n: int = 5) -> None:
    with admin(box, "app") as conn:
        conn.execute(
            "INSERT INTO events (slot, signature, kind) "
            "SELECT g, md5(g::text), %s FROM generate_series(1, %s) g",
            (kind, n),
        )


def store(box) -> backup_store.Store:
    return backup_store.Store(**box.backup_store())


def replicas(kube) -> dict[str, int]:
    return {name: kube.get("Deployment", name)["spec"]["replicas"] for name in WRITERS}


def ready(kube) -> bool:
    for name, want in WRITERS.items():
        obj = kube.get("Deployment", name)
        if obj["spec"]["replicas"] != want or obj["status"].get("readyReplicas", 0) != want:
            return False
    return True


def drop_leftovers(box) -> None:
    """Leaves the server with only the live database (and the defaults) for the next test."""
    with admin(box) as conn:
        for name in database_names(box):
            if name.startswith(("app_pre_", "app_restore_", "app_restored_")):
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def kube(target):
    kube = target.kube()
    wait_for(lambda: ready(kube), what="writers ready before the test")
    return kube


@pytest.fixture
def clean(db, kube):
    yield db
    drop_leftovers(db)
    if not db.running("postgres"):
        db.up()
    wait_for(lambda: ready(kube), what="writers ready after the test")


class Writer:
    """Stands in for the api's pods: holds a connection to the live database and writes while the api
    Deployment has replicas, and disconnects when it is scaled to zero (as pods do when they stop)."""

    def __init__(self, box, kube):
        self.box, self.kube = box, kube
        self.stop = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        conn = None
        while not self.stop.wait(0.05):
            running = self.kube.get("Deployment", "api")["spec"]["replicas"] > 0
            if not running:
                if conn is not None:
                    conn.close()
                    conn = None
                continue
            try:
                if conn is None:
                    settings = self.box.admin_database()
                    conn = psycopg.connect(
                        host=settings["host"],
                        port=settings["port"],
                        user="app",
                        password=self.box.secret("postgres-password"),
                        dbname="app",
                        autocommit=True,
                        application_name="writer-api",
                    )
                conn.execute("INSERT INTO events (slot, signature, kind) VALUES (1, 'w', 'writer')")
                self.written += 1
            except psycopg.Error:
                conn = None  # the database is closed to connections for a moment: try again

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_backup_restore_undo_and_cleanup(driver, db, kube, clean, incidents):
    box = db
    # backup: first run makes one, a second run for the same incident does not.
    backup_incident = incident_id("BACKUP")
    first = driver("backup", "--incident", backup_incident)
    assert first.rc == 0, first.stderr
    assert first.result["changed"] is True
    made = first.result["outputs"]["backup"]["backup"]
    manifest = store(box).manifest(made["id"])
    assert_kept(manifest["row_counts"], counts(box))
    assert all(len(o["sha256"]) == 64 and o["size"] > 0 for o in manifest["objects"].values())
    again = driver("backup", "--incident", backup_incident)
    assert again.rc == 0 and again.result["changed"] is False
    assert next(i for i, _m in store(box).complete_backups()) == made["id"]

    # Rows written after the backup: the restore goes back to the backup; they are kept in app_pre_<incident>.
    add_events(box, "after-backup", 7)
    before_counts = counts(box)
    incident = incident_id()
    with Writer(box, kube) as writer:
        wait_for(lambda: writer.written > 0, what="the writer to write")
        run = driver("restore", "--backup", "latest", "--yes", "--incident", incident)
        assert run.rc == 0, run.stderr + run.stdout
        wait_for(
            lambda: writer.written > 0 and rows_of(box, "app", "writer") > 0, what="writes after the restore"
        )
    restore = run.result["outputs"]["restore"]
    assert restore["backup"]["id"] == made["id"]
    assert restore["row_counts_verified"] == manifest["row_counts"]
    assert restore["outcome"].startswith("restored")
    # No writer held a connection during the swap; they are all back at their recorded replicas.
    assert not [s for s in restore["terminated_sessions"] if s["application_name"].startswith("writer-")]
    assert {w["name"]: w["replicas"] for w in restore["writers"]} == WRITERS
    assert run.result["prior_state"]["writers"] == WRITERS
    assert restore["downtime_seconds"] > 0
    wait_for(lambda: ready(kube), what="writers ready")
    # The live database is the backup's; the old one is kept, with everything written to it.
    assert rows_of(box, "app", "after-backup") == 0
    kept = f"app_pre_{suffix(incident)}"
    assert rows_of(box, kept, "after-backup") == 7
    kept_counts = counts(box, kept)
    assert kept_counts["public.events"] >= before_counts["public.events"]
    assert f"app_restore_{suffix(incident)}" not in database_names(box)
    assert kube.get_or_none("Lease", "driver-lock") is None

    # A second run for the same incident changes nothing.
    live_now = counts(box)
    second = driver("restore", "--backup", "latest", "--yes", "--incident", incident)
    assert second.rc == 0, second.stderr
    assert second.result["changed"] is False
    assert second.result["outputs"]["restore"]["outcome"] == "already restored for this incident"
    assert counts(box)["public.events"] >= live_now["public.events"]
    assert kept in database_names(box)

    # restore-undo swaps the kept one back; the restored one is kept in turn. Twice changes nothing more.
    undo = driver("restore-undo", "--yes", "--incident", incident)
    assert undo.rc == 0, undo.stderr + undo.stdout
    assert rows_of(box, "app", "after-backup") == 7
    restored = f"app_restored_{suffix(incident)}"
    assert restored in database_names(box) and kept not in database_names(box)
    assert driver("restore-undo", "--yes", "--incident", incident).result["changed"] is False
    wait_for(lambda: ready(kube), what="writers ready after the undo")

    # restore-cleanup: --check drops nothing, a young database is kept, --older-than 0m drops it, once.
    check = driver("restore-cleanup", "--older-than", "0m", "--check", "--incident", incident)
    assert check.rc == 0 and check.result["changed"] is True
    assert restored in database_names(box)
    young = driver("restore-cleanup", "--older-than", "7d", "--yes", "--incident", incident)
    assert young.rc == 0 and young.result["changed"] is False
    assert restored in database_names(box)
    drop = driver("restore-cleanup", "--older-than", "0m", "--yes", "--incident", incident)
    assert drop.rc == 0 and drop.result["changed"] is True
    assert restored not in database_names(box) and "app" in database_names(box)
    assert (
        driver("restore-cleanup", "--older-than", "0m", "--yes", "--incident", incident).result["changed"]
        is False
    )

    # No password in any output or file of these runs.
    secret = kube.get("Secret", "postgres-secret")["data"]["password"]
    passwords = [base64.b64decode(secret).decode(), box.secret("postgres-admin-password")]
    outputs = "".join(r.stdout + r.stderr for r in (first, again, run, second, undo, check, young, drop))
    files = [p for p in incidents.rglob("*") if p.is_file()]
    assert files
    for password in passwords:
        assert password not in outputs
        for path in files:
            assert password not in path.read_text(errors="replace"), path
    for path in (incidents / incident / "results").iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600"


def kubectl_scale(target, name: str, count: int) -> None:
    argv = ["kubectl", "scale", f"deployment/{name}", f"--replicas={count}", "-n", target.namespace]
    if target.kubeconfig:
        argv += ["--kubeconfig", target.kubeconfig]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def test_a_writer_scaled_back_by_hand_comes_back_from_a_restore_and_a_shutdown_at_its_current_replicas(
    driver, db, kube, clean, target
):
    def api_ready(count):
        obj = kube.get("Deployment", "api")
        return obj["spec"]["replicas"] == count and obj["status"].get("readyReplicas", 0) == count

    def record():
        return (kube.get("Deployment", "api")["metadata"].get("annotations") or {}).get(
            "emergency.ops/replicas-before"
        )

    try:
        assert driver("shutdown", "--service", "api", "--yes", "--incident", incident_id("SHUT")).rc == 0
        assert record() == "2"
        kubectl_scale(target, "api", 3)  # runbook 000's restore section: services back by hand
        wait_for(lambda: api_ready(3), what="api at 3 replicas")
        incident = incident_id()
        run = driver("restore", "--backup", "latest", "--yes", "--incident", incident)
        assert run.rc == 0, run.stderr + run.stdout
        assert run.result["prior_state"]["writers"] == {**WRITERS, "api": 3}
        restore = run.result["outputs"]["restore"]
        assert {w["name"]: w["replicas"] for w in restore["writers"]} == {**WRITERS, "api": 3}
        wait_for(lambda: api_ready(3), what="api back at 3 after the restore")
        assert record() is None
        down = driver("shutdown", "--all", "--yes", "--incident", incident)
        assert down.rc == 0, down.stderr
        assert replicas(kube) == dict.fromkeys(WRITERS, 0) and record() == "3"
        up = driver("resume", "--all", "--incident", incident)
        assert up.rc == 0, up.stderr
        assert replicas(kube) == {**WRITERS, "api": 3} and api_ready(3) and record() is None
    finally:
        kubectl_scale(target, "api", WRITERS["api"])
        kube.patch(
            "Deployment",
            "api",
            {"metadata": {"annotations": {"emergency.ops/replicas-before": None}}},
            patch_type="merge",
        )
        for name, count in WRITERS.items():
            if kube.get("Deployment", name)["spec"]["replicas"] != count:
                kubectl_scale(target, name, count)


def test_check_mode_reports_the_plan_and_touches_nothing(driver, db, kube, clean):
    names, live, before = database_names(db), counts(db), replicas(kube)
    ids = [i for i, _m in store(db).complete_backups()]
    run = driver("restore", "--backup", "latest", "--check", "--incident", incident_id())
    assert run.rc == 0, run.stderr
    assert run.result["check_mode"] is True and run.result["changed"] is True
    assert run.result["outputs"]["restore"]["backup"]["id"] == ids[0]
    assert database_names(db) == names and replicas(kube) == before
    assert_kept(live, counts(db))
    # --before resolves the newest backup made before the time.
    before_run = driver("restore", "--before", "2100-01-01 00:00", "--check", "--incident", incident_id())
    assert before_run.rc == 0, before_run.stderr
    assert before_run.result["outputs"]["restore"]["backup"]["id"] == ids[0]
    backup = driver("backup", "--check", "--incident", incident_id())
    assert backup.rc == 0 and backup.result["changed"] is True
    assert [i for i, _m in store(db).complete_backups()] == ids
    assert kube.get_or_none("Lease", "driver-lock") is None


def test_bad_input_exits_2_and_runs_nothing(driver, db, kube, clean):
    names, before = database_names(db), replicas(kube)
    newest = next(store(db).complete_backups())[0]
    for args in (
        ["--backup", "20000101T000000.000000Z"],
        ["--backup", "yesterday; rm -rf /"],
        ["--before", "2000-01-01 00:00"],
    ):
        run = driver("restore", *args, "--yes", "--incident", incident_id())
        assert run.rc == 2, (args, run.stderr)
        assert run.result["changed"] is False
    # A time that does not parse is refused by the driver before any playbook starts.
    unreadable = driver("restore", "--before", "not a time", "--yes", "--incident", incident_id())
    assert unreadable.rc == 2 and unreadable.result is None
    assert "cannot read the time 'not a time'" in unreadable.stderr
    unknown = driver("restore", "--backup", "20000101T000000.000000Z", "--yes", "--incident", incident_id())
    assert newest in unknown.result["errors"][0]["message"]
    both = driver("restore", "--backup", "latest", "--before", "2026-01-01", "--yes")
    assert both.rc == 2 and both.result is None
    refused = driver("restore", "--backup", "latest", "--incident", incident_id())
    assert refused.rc == 3 and "confirmation" in refused.result["errors"][0]["message"]
    assert database_names(db) == names and replicas(kube) == before


def test_a_backup_that_fails_its_checksum_is_refused_and_nothing_is_touched(driver, db, kube, clean):
    made = driver("backup", "--incident", incident_id("BACKUP"))
    assert made.rc == 0, made.stderr
    backup_id = made.result["outputs"]["backup"]["backup"]["id"]
    s3 = store(db)
    key = s3.key(backup_id, sorted(s3.manifest(backup_id)["objects"])[0])
    s3.s3.put_object(Bucket=s3.bucket, Key=key, Body=b"tampered")
    names, live, before = database_names(db), counts(db), replicas(kube)
    try:
        run = driver("restore", "--backup", backup_id, "--yes", "--incident", incident_id())
        assert run.rc == 3, run.stderr
        assert "checksum" in run.result["errors"][0]["message"]
        assert run.result["outputs"]["restore"]["outcome"].startswith("failed before the swap")
        assert database_names(db) == names and replicas(kube) == before
        assert_kept(live, counts(db))
    finally:
        s3.delete_backup(backup_id)


def unreachable_inventory(tmp_path: Path, section: str, key: str, value: str) -> str:
    copy = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "sandbox", copy)
    path = copy / "group_vars" / "all" / "database.yml"
    text = path.read_text()
    old = next(line for line in text.splitlines() if line.startswith(f"  {key}:"))
    if section == "platform_backup":
        head, tail = text.split("platform_backup:", 1)
        text = head + "platform_backup:" + tail.replace(old, f"  {key}: {value}", 1)
    else:
        text = text.replace(old, f"  {key}: {value}", 1)
    path.write_text(text)
    return str(copy)


def test_s3_or_postgres_unreachable_exits_4_and_changes_nothing(driver, db, kube, clean, tmp_path):
    names, before = database_names(db), replicas(kube)
    no_s3 = unreachable_inventory(tmp_path / "s3", "platform_backup", "endpoint_url", "http://127.0.0.1:9")
    for args in (["restore", "--backup", "latest", "--yes"], ["backup"]):
        run = driver(*args, "--inventory", no_s3, "--incident", incident_id())
        assert run.rc == 4, (args, run.stderr)
        assert "backup store" in run.result["errors"][0]["message"]
    no_pg = unreachable_inventory(tmp_path / "pg", "platform_database", "port", "9")
    run = driver("restore", "--backup", "latest", "--yes", "--inventory", no_pg, "--incident", incident_id())
    assert run.rc == 4, run.stderr
    assert "PostgreSQL" in run.result["errors"][0]["message"]
    assert database_names(db) == names and replicas(kube) == before


def fake_pg_restore(tmp_path: Path, before: str) -> dict[str, str]:
    """A pg_restore that runs ``before`` (a shell line) first, then the real one."""
    script = tmp_path / "pg_restore"
    script.write_text(f'#!/bin/sh\n{before}\nexec pg_restore "$@"\n')
    script.chmod(0o755)
    return {"EMERGENCY_PG_RESTORE": str(script)}


def test_postgres_stopped_mid_restore_leaves_live_untouched_and_the_rerun_converges(
    driver, target, db, kube, clean, tmp_path
):
    live, before = counts(db), replicas(kube)
    data, pg_bin = target.status["postgres"]["data_dir"], target.status["postgres"]["bin"]
    stop = f"'{pg_bin}/pg_ctl' -D '{data}' -m fast -w stop >/dev/null"
    if os.geteuid() == 0:
        stop = f"runuser -u postgres -- {stop}"
    incident = incident_id()
    env = fake_pg_restore(tmp_path, stop)
    os.environ.update(env)
    try:
        run = driver("restore", "--backup", "latest", "--yes", "--incident", incident)
    finally:
        for key in env:
            os.environ.pop(key)
    assert run.rc == 1, run.stderr
    assert run.result["outputs"]["restore"]["outcome"].startswith("failed before the swap")
    assert replicas(kube) == before
    db.up()
    assert_kept(live, counts(db))
    rerun = driver("restore", "--backup", "latest", "--yes", "--incident", incident)
    assert rerun.rc == 0, rerun.stderr + rerun.stdout
    assert f"app_pre_{suffix(incident)}" in database_names(db)
    assert_kept(live, counts(db, f"app_pre_{suffix(incident)}"))


def test_driver_killed_mid_restore_then_rerun_converges_with_nothing_lost(target, db, kube, clean, tmp_path):
    live, before = counts(db), replicas(kube)
    started = tmp_path / "pg_restore.started"
    env = fake_pg_restore(tmp_path, f"touch {started}; sleep 30")
    incident = incident_id()
    incidents = tmp_path / "incidents"
    argv = [sys.executable, "-m", "driver", "restore", "--backup", "latest", "--yes", "--json"]
    argv += ["--incident", incident, "--incidents-dir", str(incidents), "--inventory", target.inventory]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **target.env, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(started.exists, timeout=120, what="pg_restore to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its process group
        proc.wait()
    # The playbook and the module (in sessions of their own) are stopped by the driver's guardian: no
    # restore goes on unseen, racing the re-run.
    wait_for(
        lambda: not processes_mentioning(incident) and not processes_mentioning(str(tmp_path)),
        timeout=30,
        what="the killed run's playbook and modules to stop",
    )
    assert replicas(kube) == before
    assert_kept(live, counts(db))
    rerun = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **target.env}, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr + rerun.stdout
    result = json.loads(rerun.stdout)
    assert result["outputs"]["restore"]["outcome"].startswith("restored")
    assert_kept(live, counts(db, f"app_pre_{suffix(incident)}"))  # nothing lost
    assert f"app_restore_{suffix(incident)}" not in database_names(db)
    wait_for(lambda: ready(kube), what="writers ready after the re-run")


def test_prune_keeps_the_newest_and_the_young_and_reports_what_it_deleted(driver, db, clean):
    s3 = store(db)
    newest_id, manifest = next(s3.complete_backups())
    # Old backups (ids in 2020), and an interrupted one with no manifest.
    old = [f"202001{day:02d}T000000.000000Z" for day in range(1, 10)]
    for backup_id in old:
        s3.put_json(s3.key(backup_id, "manifest.json"), dict(manifest, id=backup_id))
    s3.s3.put_object(Bucket=s3.bucket, Key=s3.key("20200115T000000.000000Z", "dump", "toc.dat"), Body=b"x")
    complete = [i for i, _m in s3.complete_backups()]
    check = driver("backup", "--prune", "--check", "--incident", incident_id("BACKUP"))
    assert check.rc == 0 and [i for i, _m in s3.complete_backups()] == complete
    run = driver("backup", "--prune", "--incident", incident_id("BACKUP"))
    assert run.rc == 0, run.stderr
    after = [i for i, _m in s3.complete_backups()]
    young = [i for i in after if not i.startswith("2020")]
    assert len(after) == max(7, len(young))
    deleted = {d["id"] for d in run.result["outputs"]["backup"]["pruned"]}
    assert "20200115T000000.000000Z" in deleted
    assert deleted.isdisjoint(after) and newest_id in after
    assert "20200115T000000.000000Z" not in s3.backup_ids()
    for backup_id in old:
        if backup_id not in after:
            s3.delete_backup(backup_id)
    for backup_id in [i for i in s3.backup_ids() if i.startswith("2020")]:
        s3.delete_backup(backup_id)
