"""Stops every process a playbook run started once the run is over, and when the driver dies mid-run.

Without this, a module that is already running outlives both a cancel and the driver: ansible-runner's
ansible-playbook ignores SIGHUP (a closed SSH session does not stop it), and each Ansible worker starts
a session of its own, so killing the driver's process group stops neither. The module would go on
changing the platform with nobody watching and with the namespace lock no longer renewed; a re-run would
race it. So every process of a run carries a marker in its environment (ansible-playbook, its workers,
the modules and what they start, such as pg_restore), and:

* after the run (finished, failed or cancelled) the driver stops whatever still carries the marker;
* a guardian process in a session of its own waits on a pipe from the driver; if the pipe closes without
  the driver saying the run is over (the driver was killed, even with SIGKILL), it stops them itself.

Stopping is SIGTERM, then SIGKILL for what is left after a grace period; the procedures are written so a
re-run converges from any point a process can die at. Modules run over SSH on another machine are out of
reach: there, the SSH connection closing is what stops them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

VARIABLE = "EMERGENCY_RUN_MARKER"
DONE = b"done\n"


def marked(marker: str) -> list[int]:
    """Processes (other than this one) whose environment carries the run's marker."""
    needle = f"{VARIABLE}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ:
            found.append(int(entry))
    return found


def stop(marker: str, grace: float = 5.0) -> list[int]:
    """SIGTERM to the run's processes, SIGKILL to those still there after ``grace`` seconds."""
    pids = marked(marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and marked(marker):
            time.sleep(0.1)
        pids = marked(marker)
        if not pids:
            break
    return pids


class Guardian:
    """One per playbook run: ``env()`` goes into the run's environment, ``finished()`` after it."""

    def __init__(self) -> None:
        self.marker = uuid.uuid4().hex
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driver.reaper", self.marker],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives a kill of the driver's process group
        )

    def env(self) -> dict[str, str]:
        return {VARIABLE: self.marker}

    def finished(self) -> list[int]:
        """Stops what the run left behind (after a cancel: the modules Ansible did not stop) and lets
        the guardian go. Returns the processes that had to be stopped."""
        left = marked(self.marker)
        if left:
            stop(self.marker)
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(DONE)
            self.process.stdin.close()
        self.process.wait()
        return left


def main(argv: list[str]) -> int:
    marker = argv[0]
    if sys.stdin.buffer.read() != DONE:  # EOF without the word: the driver is gone
        stop(marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
