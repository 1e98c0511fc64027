"""`restore --to-time`: point-in-time recovery with pgBackRest beside the live cluster, asserted on the
databases, the workloads and the temporary cluster's folder."""

from __future__ import annotations

import base64
import datetime
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.emergency.ops.plugins.module_utils import postgres
from driver import ROOT
from tests.conftest import processes_mentioning, wait_for
from tests.e2e.test_database import (
    WRITERS,
    add_events,
    admin,
    assert_kept,
    database_names,
    ready,
    replicas,
    rows_of,
)


@pytest.fixture(scope="module")
def box(target):
    if target.status is None:
        pytest.fail("the point-in-time recovery tests need the sandbox (its pgBackRest repository)")
    from sandbox.platform import Sandbox

    return Sandbox(Path(target.status["dir"]))


@pytest.fixture
def kube(target):
    kube = target.kube()
    wait_for(lambda: ready(kube), what="writers ready before the test")
    return kube


def postmasters_in(folder: Path) -> list[int]:
    """Processes whose command line names the folder (a temporary cluster still running from it)."""
    return processes_mentioning(str(folder))


def rows_then_moment_then_rows(box, first: str, later: str) -> str:
    """6 rows of kind ``first``, the time, 4 rows of kind ``later``, and a WAL switch so the archive holds
    them. Returns the time: the first whole second of the server's clock after the first rows' commit
    (recovery compares commit times), so the later rows, committed after it was read, come after it.
    The time is as psql prints a timestamptz in a session east of UTC (``2026-12-02 11:35:16+05:30``),
    so the restore reads what an operator pastes."""
    add_events(box, first, 6)
    with admin(box, "app") as conn:
        committed = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("SET TimeZone = 'Asia/Kolkata'")

        def next_second() -> str | None:
            now = conn.execute(
                "SELECT date_trunc('second', clock_timestamp()) > %s, "
                "date_trunc('second', clock_timestamp())::text",
                (committed,),
            ).fetchone()
            return now[1] if now[0] else None

        moment = wait_for(next_second, timeout=5, interval=0.05, what="the server's clock to pass a second")
    add_events(box, later, 4)
    with admin(box) as conn:
        conn.execute("SELECT pg_switch_wal()")
    return moment


def undo_and_forget(driver, box, kube, incident: str, kinds: tuple[str, ...]) -> None:
    """Leave the sandbox as found: the previous live database back, the recovered one and the rows of
    the test gone, the writers back."""
    suffix = postgres.incident_suffix(incident)
    kept = f"app_pre_{suffix}"
    if kept in database_names(box):
        undo = driver("restore-undo", "--yes", "--incident", incident)
        assert undo.rc == 0, undo.stderr + undo.stdout
    with admin(box) as conn:
        for name in (f"app_restored_{suffix}", kept, f"app_restore_{suffix}"):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with admin(box, "app") as conn:
        conn.execute("DELETE FROM events WHERE kind = ANY(%s)", (list(kinds),))
    wait_for(lambda: ready(kube), what="writers ready after the test")


def test_recovers_exactly_the_rows_before_the_time_beside_the_live_cluster(driver, box, kube, incidents):
    incident = f"INC-PITR-{uuid.uuid4().hex[:8]}"
    suffix = postgres.incident_suffix(incident)
    kept = f"app_pre_{suffix}"
    folder = box.pg_home / f"emergency-pitr-{suffix}"
    first, later = f"pitr-first-{suffix}", f"pitr-later-{suffix}"
    runs = []
    try:
        moment = rows_then_moment_then_rows(box, first, later)

        # --check reports the window, the target and the swap, and touches nothing.
        names, before = database_names(box), replicas(kube)
        check = driver("restore", "--to-time", moment, "--check", "--incident", incident)
        runs.append(check)
        assert check.rc == 0, check.stderr + check.stdout
        assert check.result["changed"] is True
        planned = check.result["outputs"]["restore"]
        assert planned["backup"]["window"]["start"] <= planned["backup"]["target"]
        # The time as read, in UTC to the microsecond.
        utc = datetime.datetime.fromisoformat(moment).astimezone(datetime.UTC)
        assert planned["backup"]["target"] == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert kept in planned["outcome"]
        assert database_names(box) == names and replicas(kube) == before
        assert rows_of(box, "app", later) == 4
        assert not folder.exists()

        # The recovery: the live database holds exactly the rows written before the time; the later
        # ones are only in the kept database; the temporary cluster is stopped and removed.
        run = driver("restore", "--to-time", moment, "--yes", "--incident", incident)
        runs.append(run)
        assert run.rc == 0, run.stderr + run.stdout
        assert run.result["changed"] is True
        restore = run.result["outputs"]["restore"]
        assert restore["kept_as"] == kept
        assert restore["temporary_cluster_removed"] is True
        assert rows_of(box, "app", first) == 6
        assert rows_of(box, "app", later) == 0
        assert rows_of(box, kept, first) == 6 and rows_of(box, kept, later) == 4
        assert f"app_restore_{suffix}" not in database_names(box)
        with admin(box, "app") as conn:
            # What was verified before the swap is what went live; the writers, back since, only add.
            assert_kept(restore["row_counts_verified"], postgres.row_counts(conn))
        assert run.result["prior_state"]["writers"] == WRITERS
        assert {w["name"]: w["replicas"] for w in restore["writers"]} == WRITERS
        assert not folder.exists() and not postmasters_in(folder)
        wait_for(lambda: ready(kube), what="writers ready after the recovery")

        # The same incident again changes nothing.
        names = database_names(box)
        again = driver("restore", "--to-time", moment, "--yes", "--incident", incident)
        runs.append(again)
        assert again.rc == 0, again.stderr + again.stdout
        assert again.result["changed"] is False
        assert database_names(box) == names
        assert rows_of(box, "app", first) == 6 and rows_of(box, "app", later) == 0

        # A time that does not parse, before the window or in the future: exit 2, nothing touched.
        unreadable = driver("restore", "--to-time", "not a time", "--yes", "--incident", f"{incident}-BAD")
        runs.append(unreadable)
        assert unreadable.rc == 2 and unreadable.result is None  # refused before any playbook starts
        assert "cannot read the time" in unreadable.stderr
        for bad in ("2000-01-01 00:00", "2999-01-01 00:00"):
            refused = driver("restore", "--to-time", bad, "--yes", "--incident", f"{incident}-BAD")
            runs.append(refused)
            assert refused.rc == 2, (bad, refused.stderr + refused.stdout)
            assert refused.result["changed"] is False
        assert "window" in refused.result["errors"][0]["message"]
        assert database_names(box) == names and replicas(kube) == WRITERS
        assert not (box.pg_home / f"emergency-pitr-{suffix}_bad").exists()

        # No password in any output or file of these runs.
        secret = kube.get("Secret", "postgres-secret")["data"]["password"]
        passwords = [base64.b64decode(secret).decode(), box.secret("postgres-admin-password")]
        outputs = "".join(r.stdout + r.stderr for r in runs)
        files = [p for p in incidents.rglob("*") if p.is_file()]
        assert files
        for password in passwords:
            assert password not in outputs
            for path in files:
                assert password not in path.read_text(errors="replace"), path
    finally:
        undo_and_forget(driver, box, kube, incident, (first, later))
        assert rows_of(box, "app", first) == 0 and kept not in database_names(box)


def test_driver_killed_mid_recovery_leaves_live_untouched_and_the_rerun_converges(
    target, box, kube, tmp_path
):
    incident = f"INC-PITR-{uuid.uuid4().hex[:8]}"
    suffix = postgres.incident_suffix(incident)
    folder = box.pg_home / f"emergency-pitr-{suffix}"
    first, later = f"pitr-first-{suffix}", f"pitr-later-{suffix}"
    # pg_restore into the side database starts while the temporary cluster runs; it waits there.
    started = tmp_path / "pg_restore.started"
    fake = tmp_path / "pg_restore"
    fake.write_text(f'#!/bin/sh\ntouch {started}\nsleep 60\nexec pg_restore "$@"\n')
    fake.chmod(0o755)
    incidents = tmp_path / "incidents"

    def driver(*args: str, env: dict | None = None, wait: bool = True):
        argv = [sys.executable, "-m", "driver", *args, "--yes", "--json", "--incident", incident]
        argv += ["--incidents-dir", str(incidents), "--inventory", target.inventory]
        environment = {**os.environ, **target.env, **(env or {})}
        if wait:
            done = subprocess.run(
                argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
            )
            return SimpleNamespace(rc=done.returncode, stdout=done.stdout, stderr=done.stderr)
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    names = database_names(box)
    try:
        moment = rows_then_moment_then_rows(box, first, later)
        proc = driver("restore", "--to-time", moment, env={"EMERGENCY_PG_RESTORE": str(fake)}, wait=False)
        try:
            wait_for(started.exists, timeout=300, what="the copy into the side database to start")
            assert postmasters_in(folder), "the temporary cluster runs while the copy is made"
        finally:
            os.killpg(
                proc.pid, signal.SIGKILL
            )  # the driver and everything it started, as if its machine died
            proc.wait()

        # Nothing of the killed run goes on behind the operator's back (ansible-playbook ignores SIGHUP and
        # its workers have sessions of their own: the driver's guardian stops them).
        wait_for(
            lambda: not processes_mentioning(incident) and not processes_mentioning(str(tmp_path)),
            timeout=30,
            what="the killed run's playbook and modules to stop",
        )
        # Nothing happened to the live database or the writers.
        assert rows_of(box, "app", first) == 6 and rows_of(box, "app", later) == 4
        assert replicas(kube) == WRITERS
        assert f"app_pre_{suffix}" not in database_names(box)

        # The re-run stops what the killed run left running, recovers and swaps: nothing is lost.
        rerun = driver("restore", "--to-time", moment)
        assert rerun.rc == 0, rerun.stderr + rerun.stdout
        assert json.loads(rerun.stdout)["outputs"]["restore"]["temporary_cluster_removed"] is True
        assert rows_of(box, "app", first) == 6 and rows_of(box, "app", later) == 0
        assert rows_of(box, f"app_pre_{suffix}", later) == 4
        assert not folder.exists() and not postmasters_in(folder)
        assert database_names(box) - names == {f"app_pre_{suffix}"}
        wait_for(lambda: ready(kube), what="writers ready after the re-run")
    finally:
        undo_and_forget(driver, box, kube, incident, (first, later))
        assert not postmasters_in(folder)
