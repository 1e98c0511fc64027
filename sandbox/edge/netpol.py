"""NetworkPolicy, as far as the ingress proxy is concerned: may the ingress controller reach a pod?

The controller is modelled as the pods of a real ingress-nginx installation: namespace
``ingress-nginx`` (labelled ``kubernetes.io/metadata.name: ingress-nginx``, as Kubernetes labels
every namespace) with the pod label ``app.kubernetes.io/name: ingress-nginx``, connecting from
127.0.0.1. Policies are additive, as in Kubernetes: a pod selected by no policy with Ingress in its
policyTypes is open; a selected one is reachable only where at least one rule of one of those
policies admits the controller on that port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

CONTROLLER_NAMESPACE = "ingress-nginx"
CONTROLLER_NAMESPACE_LABELS = {"kubernetes.io/metadata.name": CONTROLLER_NAMESPACE}
CONTROLLER_POD_LABELS = {"app.kubernetes.io/name": "ingress-nginx"}
CONTROLLER_ADDRESS = ipaddress.ip_address("127.0.0.1")


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); an empty one matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(policy: dict[str, Any]) -> list[str]:
    """spec.policyTypes, defaulted as the API server does: Ingress always, Egress when it has rules."""
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _peer_admits_controller(peer: dict[str, Any], policy_namespace: str) -> bool:
    block = peer.get("ipBlock")
    if block:
        try:
            inside = CONTROLLER_ADDRESS in ipaddress.ip_network(block["cidr"], strict=False)
            excluded = any(
                CONTROLLER_ADDRESS in ipaddress.ip_network(cidr, strict=False)
                for cidr in block.get("except") or []
            )
        except (KeyError, ValueError):
            return False
        return inside and not excluded
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], CONTROLLER_NAMESPACE_LABELS):
            return False
    elif policy_namespace != CONTROLLER_NAMESPACE:
        # A podSelector alone selects pods of the policy's own namespace only.
        return False
    return "podSelector" not in peer or selector_matches(peer["podSelector"], CONTROLLER_POD_LABELS)


def _port_admitted(rule_ports: list[dict[str, Any]] | None, port: int, port_name: str | None) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if (entry.get("protocol") or "TCP") != "TCP":
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            if wanted == port_name:
                return True
            continue
        low = int(wanted)
        if low <= port <= int(entry.get("endPort") or low):
            return True
    return False


def admits_controller(
    policies: Iterable[dict[str, Any]], pod: dict[str, Any], port: int, port_name: str | None = None
) -> bool:
    """Whether the ingress controller may open a connection to ``pod`` on its container ``port``
    (named ``port_name`` in the pod's spec, if it is)."""
    meta = pod.get("metadata") or {}
    namespace, labels = meta.get("namespace"), meta.get("labels") or {}
    selecting = [
        p
        for p in policies
        if (p.get("metadata") or {}).get("namespace") == namespace
        and "Ingress" in policy_types(p)
        and selector_matches((p.get("spec") or {}).get("podSelector"), labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            peers = rule.get("from") or []
            from_ok = not peers or any(_peer_admits_controller(peer, namespace) for peer in peers)
            if from_ok and _port_admitted(rule.get("ports"), port, port_name):
                return True
    return False
