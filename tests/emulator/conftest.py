"""Fixtures for the emulated API server: a server per test module, kubectl and wait helpers."""

import os
import shutil
import subprocess
import time

import pytest

from sandbox.kubeapi import KubeAPIServer, write_kubeconfig
from sandbox.kubeapi.tls import certificates

TOKEN = "emulator-test-token"

NODES = [
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{i}", "labels": {"kubernetes.io/hostname": f"node-{i}"}},
        "spec": {},
    }
    for i in (1, 2)
]


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """(ca, cert, key): the server is tested as the sandbox runs it, over HTTPS with a token."""
    return certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tls):
    ca, cert, key = tls
    srv = KubeAPIServer(port=0, ready_delay=0.3, tls=(str(cert), str(key)), token=TOKEN)
    srv.ca = str(ca)
    srv.start()
    srv.load([*NODES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def kubeconfig(server, tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    return str(write_kubeconfig(str(path), server.url, "shop", token=TOKEN, ca_file=server.ca))


@pytest.fixture(scope="module")
def kube_env(kubeconfig):
    env = dict(
        os.environ,
        KUBECONFIG=kubeconfig,
        KUBECACHEDIR=os.path.join(os.path.dirname(kubeconfig), "cache"),
        K8S_AUTH_KUBECONFIG=kubeconfig,
    )
    env.pop("K8S_AUTH_HOST", None)
    return env


@pytest.fixture(scope="module")
def kubectl(kube_env):
    # The project installs kubectl (scripts/install.sh): its absence is a broken setup, not a skip.
    assert shutil.which("kubectl"), "kubectl is not installed: run make install"

    def run(*args, check=True, timeout=90, stdin=None):
        proc = subprocess.run(
            ["kubectl", *args], env=kube_env, capture_output=True, text=True, timeout=timeout, input=stdin
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


def wait_for(predicate, timeout=30.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
