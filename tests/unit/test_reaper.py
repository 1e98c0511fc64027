"""The guardian stops every process of a run: after the run, and when the driver is killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from driver import ROOT, reaper
from tests.conftest import wait_for


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_finished_stops_what_the_run_left_running():
    guardian = reaper.Guardian()
    # A module's child in a session of its own, as Ansible's workers make them (a group kill misses it).
    straggler = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, **guardian.env()}, start_new_session=True
    )
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert reaper.marked(guardian.marker) == [straggler.pid]
        assert guardian.finished() == [straggler.pid]
        straggler.wait(timeout=10)
        assert guardian.process.returncode == 0
        assert alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()
        straggler.kill()


def test_the_guardian_stops_the_run_when_the_driver_is_killed(tmp_path):
    pidfile = tmp_path / "straggler.pid"
    driver = textwrap.dedent(
        f"""
        import os, signal, subprocess
        from driver import reaper
        guardian = reaper.Guardian()
        env = {{**os.environ, **guardian.env()}}
        child = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        open({str(pidfile)!r}, "w").write(str(child.pid))
        signal.pause()  # a driver in the middle of a run, until it is killed
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=ROOT, start_new_session=True)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=20, what="the run to start")
        straggler = int(pidfile.read_text())
        assert alive(straggler)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its process group; the run is elsewhere
        proc.wait()
    wait_for(lambda: not alive(straggler), timeout=20, what="the guardian to stop the run's process")
