# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""A small Kubernetes REST client shared by the collection's modules.

It reuses the official ``kubernetes`` package only for what is hard to get right — loading a
kubeconfig (contexts, client certificates, tokens, exec plugins such as ``aws eks get-token``) or
in-cluster credentials — and talks to the API with plain JSON over that client's connection pool.
Skipping the dynamic client's discovery is what lets one module invocation do a whole step of a
procedure quickly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import datetime
import importlib.util
import json
import os
import time

# The package is imported when a client is made, not with this file: importing it takes a good part
# of a second, which db_restore spends in a thread while pg_restore runs (see in_background).
HAS_KUBERNETES = importlib.util.find_spec("kubernetes") is not None
KUBERNETES_IMPORT_ERROR = None if HAS_KUBERNETES else "No module named 'kubernetes'"

# Where each kind the procedures touch lives in the API.
RESOURCES = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Secret": ("/api/v1", "secrets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Endpoints": ("/api/v1", "endpoints"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
}


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP code (0 when the server could not be reached)."""

    def __init__(self, status, reason, message):
        super(KubeError, self).__init__(message)
        self.status = status
        self.reason = reason


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def micro_time(moment=None):
    """Kubernetes MicroTime, as Leases use it."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(moment=None):
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """Parses the timestamps the API returns (with or without fractions)."""
    if not text:
        return None
    text = text.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)


class Kube:
    """JSON access to one namespace of one cluster."""

    def __init__(self, kubeconfig=None, context=None, namespace=None, timeout=15):
        from kubernetes import config as kube_config
        from kubernetes.client import ApiClient, Configuration

        configuration = Configuration()
        kubeconfig = kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG")
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        configuration.retries = False
        self.api = ApiClient(configuration)
        self.namespace = namespace
        self.timeout = timeout

    def path(self, kind, name=None, subresource=None, namespace=None):
        prefix, plural = RESOURCES[kind]
        parts = [prefix, "namespaces", namespace or self.namespace, plural]
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    def request(self, method, path, body=None, content_type="application/json", query=None):
        status, data = self.call(method, path, body, content_type, query, accept="application/json")
        try:
            document = json.loads(data) if data else {}
        except ValueError:
            document = {"message": data[:200].decode("utf-8", "replace")}
        if not 200 <= status <= 299:
            raise KubeError(
                status,
                document.get("reason") or str(status),
                document.get("message") or "HTTP %s" % status,
            )
        return document

    def raw(self, method, path, query=None):
        """The body of a response that is not JSON (``pods/log``); errors raise ``KubeError``."""
        status, data = self.call(method, path, None, "application/json", query, accept="*/*")
        if not 200 <= status <= 299:
            try:
                document = json.loads(data)
            except ValueError:
                document = {"message": data[:200].decode("utf-8", "replace")}
            raise KubeError(status, document.get("reason") or str(status), document.get("message") or "")
        return data

    def call(self, method, path, body, content_type, query, accept):
        headers = {"Accept": accept, "Content-Type": content_type}
        try:
            serialized = self.api.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            return response.status, response.read()
        except Exception as exc:  # connection refused, DNS, TLS: the API is unreachable
            raise KubeError(0, "Unreachable", "cannot reach the Kubernetes API: %s" % exc) from exc

    def get(self, kind, name, namespace=None):
        return self.request("GET", self.path(kind, name, namespace=namespace))

    def get_or_none(self, kind, name, namespace=None):
        try:
            return self.get(kind, name, namespace=namespace)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind, label_selector=None, field_selector=None, namespace=None):
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        return self.request("GET", self.path(kind, namespace=namespace), query=query).get("items", [])

    def create(self, kind, body, dry_run=False):
        query = {"dryRun": "All"} if dry_run else None
        return self.request("POST", self.path(kind), body=body, query=query)

    def replace(self, kind, name, body, dry_run=False):
        query = {"dryRun": "All"} if dry_run else None
        return self.request("PUT", self.path(kind, name), body=body, query=query)

    def patch(self, kind, name, body, patch_type="strategic", dry_run=False):
        content_type = {
            "strategic": "application/strategic-merge-patch+json",
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        query = {"dryRun": "All"} if dry_run else None
        return self.request("PATCH", self.path(kind, name), body=body, content_type=content_type, query=query)

    def delete(self, kind, name, resource_version=None):
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        return self.request("DELETE", self.path(kind, name), body=body)


def in_background(kubeconfig=None, context=None, namespace=None):
    """Starts making a client in a thread and returns a future: ``.result()`` is the ``Kube`` (or raises
    what making it raised). For a module whose first use of the API comes after a long wait."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(Kube, kubeconfig, context, namespace)
    pool.shutdown(wait=False)
    return future


def selector_string(match_labels):
    return ",".join("%s=%s" % item for item in sorted((match_labels or {}).items()))


def wait_until(predicate, timeout, interval=0.25):
    """Polls ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# What the modules do alike with the client.


def require_kubernetes(module):
    """Fails the module when the kubernetes package (which loads the kubeconfig) is missing."""
    if not HAS_KUBERNETES:
        module.fail_json(msg="the kubernetes Python package is required: %s" % KUBERNETES_IMPORT_ERROR)


def get_or_fail(module, kube, kind, name):
    """The object, for a preflight: the module fails with outcome invalid when it does not exist."""
    obj = kube.get_or_none(kind, name)
    if obj is None:
        module.fail_json(
            msg="%s %s not found in namespace %s" % (kind, name, kube.namespace), outcome="invalid"
        )
    return obj


def outcome_of(exc, changed=False):
    """The driver's exit code family for an API error: unreachable only while nothing was changed."""
    if isinstance(exc, KubeError) and exc.status == 0 and not changed:
        return "unreachable"
    return "failed"
