"""The sandbox works wherever a clone is, and says in one line per part what did not start.

These start sandboxes of their own (not the session's): a fresh clone of this repository's HEAD in a
private (0700) folder whose path has a space, with the default state folder; and a sandbox with a
program missing and a port taken. They run this virtualenv's Python with the clone first on
PYTHONPATH instead of a fresh install, so what they test is the clone's code and paths, not pip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from driver import ROOT

DESTROY = "from sandbox.platform import Sandbox; Sandbox().destroy()"


def python(args, cwd, env, timeout=300):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_fresh_clone_in_a_private_folder_with_a_space_runs_the_sandbox():
    private = Path(tempfile.mkdtemp(prefix="emergency-clone-"))  # 0700, as mkdtemp makes it
    clone = private / "a clone"
    env = {k: v for k, v in os.environ.items() if k != "EMERGENCY_SANDBOX_DIR"}
    env.update(
        PYTHONPATH=os.pathsep.join([str(clone), str(clone / "collections")]),
        EMERGENCY_SANDBOX_READY_DELAY="0.5",
    )
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", head.stdout.strip()], check=True)
        assert (private.stat().st_mode & 0o777) == 0o700

        up = python(["-m", "driver", "sandbox", "up"], clone, env)
        assert up.returncode == 0, up.stdout + up.stderr
        status = python(["-m", "driver", "sandbox", "status", "--json"], clone, env)
        assert status.returncode == 0, status.stderr
        endpoints = json.loads(status.stdout)
        assert endpoints["dir"] == str(clone / ".sandbox")  # the clone's default state folder
        assert all(endpoints["running"].values()) and set(endpoints["running"]) >= {"postgres", "kubeapi"}
        down = python(["-m", "driver", "sandbox", "down"], clone, env)
        assert down.returncode == 0, down.stderr
        after = json.loads(python(["-m", "driver", "sandbox", "status", "--json"], clone, env).stdout)
        assert not any(after["running"].values())
    finally:
        if clone.exists():
            python(["-c", DESTROY], clone, env)
        shutil.rmtree(private, ignore_errors=True)


def test_parts_that_cannot_start_are_reported_one_line_each():
    folder = Path(tempfile.mkdtemp(prefix="emergency-sandbox-failing-"))
    # A PATH holding every program of this one but redis-server.
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for entry in os.environ["PATH"].split(os.pathsep):
        for program in Path(entry).glob("*") if Path(entry).is_dir() else []:
            if program.name != "redis-server" and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
    env = {**os.environ, "EMERGENCY_SANDBOX_DIR": str(folder / "state"), "PATH": str(bin_dir)}
    env["EMERGENCY_SANDBOX_READY_DELAY"] = "0.5"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        # The Kubernetes API's port, kept from an earlier `up`, is now another program's.
        (folder / "state").mkdir()
        port = taken.getsockname()[1]
        (folder / "state" / "state.json").write_text(json.dumps({"ports": {"kubeapi": port}}))

        up = python(["-m", "driver", "sandbox", "up"], ROOT, env)
        assert up.returncode != 0
        assert "Traceback" not in up.stdout + up.stderr
        lines = [line for line in up.stderr.splitlines() if line.strip()]
        assert len(lines) == 2, up.stderr
        redis = next(line for line in lines if line.startswith("sandbox up: redis failed: "))
        assert "redis-server" in redis and "not found" in redis and str(folder / "state" / "logs") in redis
        kubeapi = next(line for line in lines if line.startswith("sandbox up: kubeapi failed: "))
        assert f"127.0.0.1:{port}" in kubeapi and "in use" in kubeapi and "kubeapi.log" in kubeapi
    finally:
        taken.close()
        python(["-c", DESTROY], ROOT, env)
        shutil.rmtree(folder, ignore_errors=True)
