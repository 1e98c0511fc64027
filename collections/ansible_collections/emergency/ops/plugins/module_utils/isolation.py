# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Isolating a compromised service, and putting back exactly what was there before.

The record (annotation ``emergency.ops/isolation`` on the workload, JSON) is written before anything
changes and says what isolate changed and what was there before: the policy it created, the Services'
selectors, the Ingresses' default-backend annotations, the replicas, the quarantined pods. ``release``
reads it back, so any operator can release what another isolated, and a run that stopped half-way is
released like a finished one (what it had not done yet is simply not there to undo).

Modes:

- ``network``: a deny-all NetworkPolicy (ingress and egress; DNS egress if asked) selecting exactly the
  workload's pods.
- ``traffic``: the Services that select the workload point at no pod (their selector is replaced by a
  label no pod has), and the Ingresses routing to them get the ``default-backend`` annotation naming the
  maintenance Service when there is one (503 with Retry-After); never a snippet annotation.
- ``quarantine``: the running pods lose the labels their ReplicaSet and Services select, so the
  controller replaces them while the compromised processes keep running, unreachable, behind a deny-all
  policy that selects them by a quarantine label.
- ``stop``: scaled to 0, replicas recorded (as shutdown does).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    KubeError,
    rfc3339,
    selector_string,
    wait_until,
)
from ansible_collections.emergency.ops.plugins.module_utils.quiesce import scale_all
from ansible_collections.emergency.ops.plugins.module_utils.rollout import rollout_state

RECORD = "emergency.ops/isolation"
ISOLATED_BY = "emergency.ops/isolated"  # label on what isolate created, and the selector of no pod
QUARANTINED_FROM = "emergency.ops/quarantined-from"
QUARANTINED_LABELS = "emergency.ops/quarantined-labels"
DEFAULT_BACKEND = "nginx.ingress.kubernetes.io/default-backend"
MODES = ("network", "traffic", "quarantine", "stop")


class Refused(Exception):
    """The request cannot be carried out as asked; nothing was changed."""


class NotVerified(Exception):
    """The change was made but a client does not see it (yet)."""


def record_of(obj):
    text = (obj["metadata"].get("annotations") or {}).get(RECORD)
    return json.loads(text) if text else None


def policy_name(service, mode):
    return "emergency-%s-%s" % ("quarantine" if mode == "quarantine" else "isolate", service)[:253]


def deny_all_policy(name, service, incident, match_labels, allow_dns):
    egress = []
    if allow_dns:
        egress = [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "labels": {ISOLATED_BY: service},
            "annotations": {"emergency.ops/incident": incident},
        },
        "spec": {
            "podSelector": {"matchLabels": match_labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def services_of(kube, workload):
    """The Services whose selector picks the workload's pods."""
    labels = workload["spec"]["template"]["metadata"].get("labels") or {}
    return [s for s in kube.list("Service") if selects(s["spec"].get("selector") or {}, labels)]


def ingresses_to(kube, service_names):
    """The Ingresses with a rule (or default backend) sending requests to one of the Services."""
    found = []
    for ingress in kube.list("Ingress"):
        spec = ingress.get("spec") or {}
        backends = [((spec.get("defaultBackend") or {}).get("service") or {}).get("name")]
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backends.append(((path.get("backend") or {}).get("service") or {}).get("name"))
        if set(backends) & set(service_names):
            found.append(ingress)
    return found


def pod_ready(pod):
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def live_pods(kube, match_labels):
    pods = kube.list("Pod", label_selector=selector_string(match_labels))
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready_addresses(kube, service_name):
    endpoints = kube.get_or_none("Endpoints", service_name) or {}
    return sum(len(s.get("addresses") or []) for s in endpoints.get("subsets") or [])


def wait(predicate, timeout, what):
    value = wait_until(predicate, timeout, interval=0.2)
    if not value:
        raise NotVerified("%s within %ss" % (what, timeout))
    return value


def wire_status(probe):
    """The HTTP status a client gets from the probe (an Ingress URL and Host, a GET unless it has a
    ``method`` and ``data``); 0 when refused."""
    headers = dict(probe.get("headers") or {}, **({"Host": probe["host"]} if probe.get("host") else {}))
    try:
        with open_url(
            probe["url"],
            method=probe.get("method") or "GET",
            data=probe.get("data"),
            headers=headers,
            timeout=5,
            follow_redirects="none",
        ) as answer:
            return answer.status
    except HTTPError as exc:
        return exc.code
    except (URLError, OSError):
        return 0


class Isolation:
    """One workload's isolation: ``isolate`` and ``release`` return the entry the module reports."""

    def __init__(self, kube, service, incident, check_mode=False, timeout=120):
        self.kube, self.service, self.incident = kube, service, incident
        self.check_mode, self.timeout = check_mode, timeout
        self.name, self.kind = service["name"], service["kind"]
        self.workload = kube.get(self.kind, self.name)
        self.match_labels = (self.workload["spec"].get("selector") or {}).get("matchLabels") or {}
        if not self.match_labels:
            raise Refused("%s %s has no matchLabels selector to isolate by" % (self.kind, self.name))

    # -- the record ---------------------------------------------------------------------------------
    def write_record(self, record):
        value = json.dumps(record, sort_keys=True) if record is not None else None
        self.kube.patch(
            self.kind,
            self.name,
            {"metadata": {"annotations": {RECORD: value}}},
            patch_type="merge",
            dry_run=self.check_mode,
        )

    # -- isolate ----------------------------------------------------------------------------------------
    def inspect(self, mode):
        """The isolation this incident already made in this mode (``already``), or none; refused when
        another incident or mode isolated the service."""
        existing = record_of(self.workload)
        if not existing:
            return {"changed": False, "already": False}
        if existing.get("incident") == self.incident and existing.get("mode") == mode:
            return dict(existing, changed=False, already=True)
        raise Refused(
            "%s is already isolated (mode %s, incident %s); release it first"
            % (self.name, existing.get("mode"), existing.get("incident"))
        )

    def isolate(self, mode, allow_dns=False, maintenance=None, evidence=None):
        existing = self.inspect(mode)
        if existing["already"]:
            return existing
        services = services_of(self.kube, self.workload)
        record = {
            "incident": self.incident,
            "mode": mode,
            "at": rfc3339(),
            "evidence": evidence,
            "policy": None,
            "service_selectors": {},
            "ingress_annotations": {},
            "replicas": None,
            "quarantined": [],
        }
        if mode == "network":
            record["policy"] = policy_name(self.name, mode)
        elif mode == "traffic":
            record["service_selectors"] = {s["metadata"]["name"]: s["spec"]["selector"] for s in services}
            if maintenance:
                for ingress in ingresses_to(self.kube, list(record["service_selectors"])):
                    annotations = ingress["metadata"].get("annotations") or {}
                    record["ingress_annotations"][ingress["metadata"]["name"]] = annotations.get(
                        DEFAULT_BACKEND
                    )
        elif mode == "stop":
            record["replicas"] = self.workload["spec"].get("replicas", 1)
        elif mode == "quarantine":
            record["policy"] = policy_name(self.name, mode)
            record["quarantined"] = [p["metadata"]["name"] for p in live_pods(self.kube, self.match_labels)]
        # The record first: whatever happens next, release knows what to put back.
        self.write_record(record)
        getattr(self, "_isolate_" + mode)(record, allow_dns, maintenance)
        return dict(record, changed=True, already=False)

    def _isolate_network(self, record, allow_dns, _maintenance):
        body = deny_all_policy(record["policy"], self.name, self.incident, self.match_labels, allow_dns)
        self._create_policy(body)

    def _isolate_traffic(self, record, _allow_dns, maintenance):
        for name in record["service_selectors"]:
            self.kube.patch(
                "Service",
                name,
                [{"op": "replace", "path": "/spec/selector", "value": {ISOLATED_BY: self.name}}],
                patch_type="json",
                dry_run=self.check_mode,
            )
        for name in record["ingress_annotations"]:
            self.kube.patch(
                "Ingress",
                name,
                {"metadata": {"annotations": {DEFAULT_BACKEND: maintenance}}},
                patch_type="merge",
                dry_run=self.check_mode,
            )
        if not self.check_mode:
            for name in record["service_selectors"]:
                wait(
                    lambda n=name: ready_addresses(self.kube, n) == 0,
                    self.timeout,
                    "Service %s still has pods" % name,
                )

    def _isolate_stop(self, _record, _allow_dns, _maintenance):
        scale_all(self.kube, [self.service], "down", self.incident, self.timeout, check_mode=self.check_mode)

    def _isolate_quarantine(self, record, allow_dns, _maintenance):
        body = deny_all_policy(
            record["policy"], self.name, self.incident, {QUARANTINED_FROM: self.name}, allow_dns
        )
        self._create_policy(body)
        removed = {k: None for k in self.match_labels}
        for pod in record["quarantined"]:
            self.kube.patch(
                "Pod",
                pod,
                {
                    "metadata": {
                        "labels": dict(removed, **{QUARANTINED_FROM: self.name}),
                        "annotations": {
                            QUARANTINED_LABELS: json.dumps(self.match_labels, sort_keys=True),
                            "emergency.ops/incident": self.incident,
                        },
                    }
                },
                patch_type="merge",
                dry_run=self.check_mode,
            )
        if not self.check_mode:
            wanted = self.workload["spec"].get("replicas", 1)
            wait(
                lambda: self._replaced(wanted, record["quarantined"]),
                self.timeout,
                "%s has not replaced its quarantined pods with %d ready ones" % (self.name, wanted),
            )

    def _replaced(self, wanted, quarantined):
        """``wanted`` ready pods that are not the quarantined ones, and the rollout complete."""
        fresh = [
            p
            for p in live_pods(self.kube, self.match_labels)
            if p["metadata"]["name"] not in quarantined and pod_ready(p)
        ]
        state, _message = rollout_state(self.kube.get(self.kind, self.name))
        return state == "complete" and len(fresh) >= wanted

    def _create_policy(self, body):
        try:
            self.kube.create("NetworkPolicy", body, dry_run=self.check_mode)
        except KubeError as exc:
            if exc.status != 409:
                raise
            found = self.kube.get("NetworkPolicy", body["metadata"]["name"])
            if (found["metadata"].get("labels") or {}).get(ISOLATED_BY) != self.name:
                raise Refused(
                    "NetworkPolicy %s exists and was not made by isolate" % body["metadata"]["name"]
                ) from exc

    # -- release ------------------------------------------------------------------------------------------
    def release(self, delete_quarantined=False):
        record = record_of(self.workload)
        kept = [
            p["metadata"]["name"]
            for p in self.kube.list("Pod", label_selector="%s=%s" % (QUARANTINED_FROM, self.name))
        ]
        if record is None and not (delete_quarantined and kept):
            return {"changed": False, "mode": None, "released": False, "quarantined_kept": kept}
        record = record or {
            "mode": "quarantine",
            "policy": policy_name(self.name, "quarantine"),
            "quarantined": kept,
        }
        if delete_quarantined and kept and not record.get("evidence") and record.get("incident"):
            raise Refused(
                "the quarantined pods of %s have no evidence captured (isolate ran with --no-evidence): "
                "capture it before deleting them" % self.name
            )
        mode = record["mode"]
        if mode == "network":
            self._delete_policy(record["policy"])
        elif mode == "traffic":
            for name, selector in record.get("service_selectors", {}).items():
                self.kube.patch(
                    "Service",
                    name,
                    [{"op": "replace", "path": "/spec/selector", "value": selector}],
                    patch_type="json",
                    dry_run=self.check_mode,
                )
            for name, previous in record.get("ingress_annotations", {}).items():
                self.kube.patch(
                    "Ingress",
                    name,
                    {"metadata": {"annotations": {DEFAULT_BACKEND: previous}}},
                    patch_type="merge",
                    dry_run=self.check_mode,
                )
        elif mode == "stop":
            scale_all(
                self.kube, [self.service], "restored", self.incident, self.timeout, check_mode=self.check_mode
            )
        if delete_quarantined:
            for pod in kept:
                if not self.check_mode:
                    self.kube.delete("Pod", pod)
            self._delete_policy(policy_name(self.name, "quarantine"))
            kept = []
        if record_of(self.workload) is not None:
            self.write_record(None)
        if not self.check_mode and mode == "traffic":
            for name in record.get("service_selectors", {}):
                wait(
                    lambda n=name: ready_addresses(self.kube, n) > 0,
                    self.timeout,
                    "Service %s has no ready pod" % name,
                )
        return dict(record, changed=True, released=True, quarantined_kept=kept)

    def _delete_policy(self, name):
        found = self.kube.get_or_none("NetworkPolicy", name)
        if found is None or (found["metadata"].get("labels") or {}).get(ISOLATED_BY) != self.name:
            return  # not there (a run that stopped before making it), or not ours
        if not self.check_mode:
            self.kube.delete("NetworkPolicy", name)


def verify_on_wire(probe, refused, timeout):
    """Waits until a client of the probe is refused (any answer but 2xx) or served (2xx)."""

    def seen():
        status = wire_status(probe)
        ok = 200 <= status <= 299
        return (status or "refused") if ok != refused else None

    return wait(seen, timeout, "a client of %s still %s" % (probe["url"], "served" if refused else "refused"))
