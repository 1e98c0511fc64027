"""Emulated Kubernetes API server for the sandbox (stdlib + PyYAML)."""

import base64
import os

import yaml

from .server import KubeAPIServer

__all__ = ["KubeAPIServer", "load_manifests", "write_kubeconfig"]


def write_kubeconfig(path, url, namespace="default", token="sandbox-token", ca_file=None):
    """Write a kubeconfig (cluster/user/context all named ``sandbox``) with mode 0600: the server's
    CA inline as ``certificate-authority-data`` when ``ca_file`` is given, and the bearer token."""
    cluster = {"server": url}
    if ca_file:
        with open(ca_file, "rb") as fh:
            cluster["certificate-authority-data"] = base64.b64encode(fh.read()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": "sandbox", "user": {"token": token}}],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox", "namespace": namespace}}
        ],
        "current-context": "sandbox",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    os.chmod(path, 0o600)
    return path


def load_manifests(path):
    """Documents of a multi-document YAML file (empty documents skipped)."""
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]
