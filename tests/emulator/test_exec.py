"""pods/exec over WebSocket: `kubectl exec` and the Python client's `stream`, against a server whose
allow-list holds a test program that prints its environment and exits with a chosen code."""

import sys
import textwrap

import pytest
from kubernetes import client, config
from kubernetes.stream import stream

from sandbox.kubeapi import KubeAPIServer

from .conftest import NODES, TOKEN, wait_for

PROBE = textwrap.dedent(
    """
    import os, sys
    for name in sys.argv[2:]:
        print(f"{name}={os.environ.get(name, '<unset>')}")
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
    """
)

MANIFESTS = [
    *NODES,
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "stringData": {"url": "postgresql://u:pw@h/db", "user": "u"},
    },
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"},
        "data": {"MODE": "fast"},
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "app:1",
                    "env": [
                        {"name": "PLAIN", "value": "one"},
                        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "envFrom": [
                        {"secretRef": {"name": "db"}, "prefix": "DB_"},
                        {"configMapRef": {"name": "settings"}},
                    ],
                },
                {
                    "name": "side",
                    "image": "side:1",
                    "env": [{"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}],
                },
            ]
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"containers": [{"name": "main", "image": "app:broken"}]},
    },
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tls):
    probe = tmp_path_factory.mktemp("probe") / "probe.py"
    probe.write_text(PROBE)
    ca, cert, key = tls
    srv = KubeAPIServer(
        port=0,
        ready_delay=0.2,
        exec_commands={"probe": [sys.executable, str(probe)]},
        tls=(str(cert), str(key)),
        token=TOKEN,
    )
    srv.ca = str(ca)
    srv.start()
    srv.load(MANIFESTS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def core(kubeconfig, server):
    wait_for(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in server.store.get("/pods", "shop", "app").get("status", {}).get("conditions", [])
        ),
        what="pod app ready",
    )
    api_client = config.new_client_from_config(config_file=kubeconfig)
    return client.CoreV1Api(api_client)


def test_kubectl_exec_resolves_the_environment_and_streams(kubectl, core):
    proc = kubectl(
        "exec",
        "app",
        "-n",
        "shop",
        "--",
        "probe",
        "0",
        "PLAIN",
        "DATABASE_URL",
        "POD",
        "DB_user",
        "MODE",
        "HOME_X",
    )
    assert proc.stdout.splitlines() == [
        "PLAIN=one",
        "DATABASE_URL=postgresql://u:pw@h/db",
        "POD=app",
        "DB_user=u",
        "MODE=fast",
        "HOME_X=<unset>",
    ]
    assert "to stderr" in proc.stderr


def test_kubectl_exec_exit_code(kubectl, core):
    proc = kubectl("exec", "app", "-n", "shop", "-c", "main", "--", "./probe", "3", check=False)
    assert proc.returncode == 3


def test_kubectl_exec_refuses_commands_off_the_allow_list(kubectl, core):
    proc = kubectl("exec", "app", "-n", "shop", "--", "sh", "-c", "id", check=False)
    assert proc.returncode == 126
    assert "allow-list" in proc.stderr


def test_exec_of_a_missing_pod_or_container_or_unready_pod_fails(kubectl, core):
    assert kubectl("exec", "ghost", "-n", "shop", "--", "probe", "0", check=False).returncode != 0
    proc = kubectl("exec", "app", "-n", "shop", "-c", "nope", "--", "probe", "0", check=False)
    assert proc.returncode != 0 and "not valid" in proc.stderr
    proc = kubectl("exec", "broken", "-n", "shop", "--", "probe", "0", check=False)
    assert proc.returncode != 0 and "not running" in proc.stderr
    proc = kubectl("exec", "app", "-n", "shop", "-c", "side", "--", "probe", "0", check=False)
    assert proc.returncode == 1 and "couldn't find key k" in proc.stderr


def test_python_client_stream_v5(core):
    out = stream(
        core.connect_get_namespaced_pod_exec,
        "app",
        "shop",
        command=["probe", "0", "PLAIN", "MODE"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
    )
    assert "PLAIN=one\nMODE=fast\n" in out


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v5.channel.k8s.io"])
def test_python_client_status_channel(core, protocol):
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "app",
        "shop",
        command=["probe", "7", "PLAIN"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
        _request_timeout=30,
        _headers={"sec-websocket-protocol": protocol},
    )
    resp.run_forever(timeout=30)
    assert resp.subprotocol == protocol
    assert resp.read_stdout() == "PLAIN=one\n"
    assert resp.returncode == 7
