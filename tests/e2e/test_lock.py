"""The namespace lock: renewed while a procedure runs, released when it ends or is cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

from ansible_collections.emergency.ops.plugins.module_utils.kube import micro_time
from driver import ROOT
from driver.lock import LEASE_NAME, LeaseKeeper
from tests.conftest import wait_for
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


def test_ctrl_c_cancels_cleanly_and_frees_the_lock(target, incidents):
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
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        result = json.loads(out)
        assert result["status"] == "failed"
        assert any(e["kind"] == "cancelled" for e in result["errors"])
        assert kube.get_or_none("Lease", LEASE_NAME) is None
    finally:
        heal(kube, "crank")
    assert complete(kube, "crank")
