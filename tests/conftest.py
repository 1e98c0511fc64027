"""Shared fixtures.

End-to-end tests run against the sandbox, started once per test session in its own folder and
stopped at the end. To run them against a real cluster and database instead, point
``EMERGENCY_TEST_INVENTORY`` at an inventory for it (and ``KUBECONFIG`` at the cluster); the
sandbox is then not started (see docs/real-cluster.md).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube
from driver import ROOT


@dataclass
class Target:
    inventory: str
    kubeconfig: str | None
    namespace: str
    env: dict[str, str]
    status: dict | None  # the sandbox's endpoints, None on a real cluster

    def kube(self) -> Kube:
        return Kube(self.kubeconfig, None, self.namespace)


@pytest.fixture(scope="session")
def target():
    real = os.environ.get("EMERGENCY_TEST_INVENTORY")
    if real:
        yield Target(
            real,
            os.environ.get("KUBECONFIG"),
            os.environ.get("EMERGENCY_TEST_NAMESPACE", "matchbook"),
            {},
            None,
        )
        return
    from sandbox.platform import Sandbox

    folder = Path(tempfile.mkdtemp(prefix="emergency-sandbox-"))
    env = {"EMERGENCY_SANDBOX_DIR": str(folder), "EMERGENCY_SANDBOX_READY_DELAY": "0.5"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sandbox = Sandbox(folder)
    try:
        status = sandbox.up()
        yield Target(
            str(ROOT / "inventories" / "sandbox"), status["kubeconfig"], status["namespace"], env, status
        )
    finally:
        # Read the state again: `sandbox reset` (tests/e2e/test_sandbox.py) restarts processes from
        # another process, and the pids this object loaded at the start are no longer the running ones.
        Sandbox(folder).destroy()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class DriverRun:
    rc: int
    result: dict | None
    stdout: str
    stderr: str


@pytest.fixture
def incidents(tmp_path):
    return tmp_path / "incidents"


@pytest.fixture
def driver(target, incidents):
    """Runs ``python -m driver`` as an operator would, in a subprocess, and parses its --json result."""

    def run(
        *args: str, json_output: bool = True, timeout: float = 300, env: dict | None = None, unset=()
    ) -> DriverRun:
        """``env`` adds to the test's environment, ``unset`` names variables taken out of it."""
        argv = [sys.executable, "-m", "driver", *args, "--incidents-dir", str(incidents)]
        if json_output:
            argv.append("--json")
        if "--inventory" not in args:
            argv += ["--inventory", target.inventory]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
            env={k: v for k, v in {**os.environ, **target.env, **(env or {})}.items() if k not in unset},
            stdin=subprocess.DEVNULL,
        )
        result = None
        if json_output and proc.stdout.strip().startswith("{"):
            result = json.loads(proc.stdout)
        return DriverRun(proc.returncode, result, proc.stdout, proc.stderr)

    return run


# The services' image repository: the sandbox's, or a real cluster's (EMERGENCY_TEST_IMAGES, with {name}).
IMAGES = os.environ.get("EMERGENCY_TEST_IMAGES", "sandbox.local/matchbook-{name}")


def image_of(name: str, tag: str) -> str:
    return f"{IMAGES.format(name=name)}:{tag}"


def incident_id(prefix: str = "INC-TEST") -> str:
    """A fresh incident id, so that no test's runs or lock meet another's."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pytest_collection_modifyitems(config, items):
    """``-m quick``: the tests that need no sandbox (unit and emulator), a loop of about a minute;
    ``-m platform``: those that run against the sandbox or the application's real parts."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        item.add_marker(pytest.mark.quick if folder in ("unit", "emulator") else pytest.mark.platform)


def wait_for(predicate, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def processes_mentioning(text: str) -> list[int]:
    """Processes (not this one) whose command line contains ``text``, e.g. a run's incident id (in
    ansible-playbook's extra vars) or a folder a leftover process works in."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = (
                    Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry))
    return found


def call(target, path: str, key: str | None = None) -> int:
    """The HTTP status of a GET through the sandbox's Ingress (with an API key when given)."""
    ingress = target.status["ingress"]
    headers = {"Host": ingress["host"], **({"X-API-Key": key} if key else {})}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(ingress["url"] + path, headers=headers), timeout=5
        ) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def secret_value(kube, name: str, key: str) -> str:
    return base64.b64decode(kube.get("Secret", name)["data"][key]).decode()
