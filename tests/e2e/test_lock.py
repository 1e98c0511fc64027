"""The namespace lock: renewed while a procedure runs, released when it ends or is cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ansible_collections.emergency.ops.plugins.module_utils.kube import micro_time
from driver import ROOT, reaper
from driver.lock import LEASE_NAME, LeaseKeeper
from tests.conftest import processes_mentioning, wait_for
from tests.e2e.test_restart import complete, heal, set_image


def lease(holder: str, duration: int = 60) -> dict:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE_NAME},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": micro_time(),
            "renewTime": micro_time(),
        },
    }


def test_keeper_renews_its_own_lease_and_releases_it(target):
    kube = target.kube()
    kube.create("Lease", lease("INC-KEEPER"))
    first = kube.get("Lease", LEASE_NAME)["spec"]["renewTime"]
    keeper = LeaseKeeper(target.kubeconfig, None, target.namespace, "INC-KEEPER", interval=0.2).start()
    wait_for(lambda: kube.get("Lease", LEASE_NAME)["spec"]["renewTime"] != first, what="a renewal")
    keeper.stop()
    assert kube.get_or_none("Lease", LEASE_NAME) is None


def test_keeper_leaves_another_incidents_lease_alone(target):
    kube = target.kube()
    kube.create("Lease", lease("INC-SOMEONE-ELSE"))
    try:
        before = kube.get("Lease", LEASE_NAME)
        keeper = LeaseKeeper(target.kubeconfig, None, target.namespace, "INC-ME", interval=0.1).start()
        wait_for(lambda: keeper.thread.is_alive(), what="the keeper to run")
        keeper.stop()
        after = kube.get("Lease", LEASE_NAME)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    finally:
        kube.delete("Lease", LEASE_NAME)


def run_marker(incident: str) -> str:
    """The guardian's marker in the environment of the run's ansible-playbook (its command line carries
    the incident in the extra vars)."""
    for pid in processes_mentioning(incident):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(reaper.VARIABLE.encode() + b"="):
                return entry.split(b"=", 1)[1].decode()
    return ""


# Ctrl-C, and a closed terminal or SSH session (SIGHUP: ansible-playbook itself ignores it).
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_a_cancel_stops_every_process_of_the_run_and_frees_the_lock(target, incidents, sig):
    kube = target.kube()
    set_image(kube, "crank", "broken")
    incident = "INC-CANCEL-" + uuid.uuid4().hex[:6]
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driver",
                "restart",
                "--service",
                "crank",
                "--force",
                "--timeout",
                "120",
                "--incident",
                incident,
                "--incidents-dir",
                str(incidents),
                "--inventory",
                target.inventory,
                "--json",
            ],
            cwd=ROOT,
            env={**os.environ, **target.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        # Wait until the procedure holds the lock and is waiting on the (never ready) rollout.
        wait_for(
            lambda: (
                (kube.get_or_none("Lease", LEASE_NAME) or {}).get("spec", {}).get("holderIdentity")
                == incident
            ),
            what="the run to take the lock",
        )
        wait_for(
            lambda: (
                kube.get("Deployment", "crank")["metadata"]
                .get("annotations", {})
                .get("emergency.ops/restart-incident")
                == incident
            ),
            what="the restart to start",
        )
        marker = wait_for(lambda: run_marker(incident), what="the run's playbook")
        assert reaper.marked(marker)  # the playbook, its worker and the module waiting on the rollout
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        result = json.loads(out)
        assert result["status"] == "failed"
        assert any(e["kind"] == "cancelled" for e in result["errors"])
        assert kube.get_or_none("Lease", LEASE_NAME) is None
        assert reaper.marked(marker) == []  # nothing of the run goes on after the driver said it stopped
    finally:
        heal(kube, "crank")
    assert complete(kube, "crank")
