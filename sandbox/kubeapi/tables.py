"""Server-side ``meta.k8s.io/v1 Table`` rendering for ``kubectl get`` (a few columns per kind)."""

import time

from .store import parse_time


def age(obj):
    seconds = int(time.time() - parse_time(obj.get("metadata", {}).get("creationTimestamp")))
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    minutes, hours = seconds // 60, seconds // 3600
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m"
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _s(obj, *path, default=0):
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return default if obj is None else obj


def _pod_status(pod):
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for cs in _s(pod, "status", "containerStatuses", default=[]):
        waiting = _s(cs, "state", "waiting", "reason", default="")
        if waiting:
            return waiting
    return _s(pod, "status", "phase", default="Pending")


def _node_status(node):
    ready = next((c for c in _s(node, "status", "conditions", default=[]) if c.get("type") == "Ready"), {})
    status = "Ready" if ready.get("status") == "True" else "NotReady"
    return status + (",SchedulingDisabled" if _s(node, "spec", "unschedulable", default=False) else "")


def _ports(svc):
    return (
        ",".join(
            f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
            f"/{p.get('protocol', 'TCP')}"
            for p in _s(svc, "spec", "ports", default=[])
        )
        or "<none>"
    )


def _images(obj, key):
    containers = _s(obj, "spec", "template", "spec", "containers", default=[])
    return ",".join(str(c.get(key)) for c in containers)


def _ready_pods(pod):
    statuses = _s(pod, "status", "containerStatuses", default=[])
    total = len(_s(pod, "spec", "containers", default=[]))
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _endpoints(ep):
    pairs = [
        f"{a['ip']}:{p['port']}"
        for subset in ep.get("subsets") or []
        for a in subset.get("addresses") or []
        for p in subset.get("ports") or [{"port": "*"}]
    ]
    return ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "") or "<none>"


NAME = ("Name", lambda o: o["metadata"]["name"])
AGE = ("Age", age)
WIDE = 1
COLUMNS = {
    "Pod": [
        NAME,
        ("Ready", _ready_pods),
        ("Status", _pod_status),
        (
            "Restarts",
            lambda o: sum(c.get("restartCount", 0) for c in _s(o, "status", "containerStatuses", default=[])),
        ),
        AGE,
        ("IP", lambda o: _s(o, "status", "podIP", default="<none>"), WIDE),
        ("Node", lambda o: _s(o, "spec", "nodeName", default="<none>"), WIDE),
    ],
    "Deployment": [
        NAME,
        ("Ready", lambda o: f"{_s(o, 'status', 'readyReplicas')}/{_s(o, 'spec', 'replicas')}"),
        ("Up-to-date", lambda o: _s(o, "status", "updatedReplicas")),
        ("Available", lambda o: _s(o, "status", "availableReplicas")),
        AGE,
        ("Containers", lambda o: _images(o, "name"), WIDE),
        ("Images", lambda o: _images(o, "image"), WIDE),
    ],
    "ReplicaSet": [
        NAME,
        ("Desired", lambda o: _s(o, "spec", "replicas")),
        ("Current", lambda o: _s(o, "status", "replicas")),
        ("Ready", lambda o: _s(o, "status", "readyReplicas")),
        AGE,
        ("Images", lambda o: _images(o, "image"), WIDE),
    ],
    "StatefulSet": [
        NAME,
        ("Ready", lambda o: f"{_s(o, 'status', 'readyReplicas')}/{_s(o, 'spec', 'replicas')}"),
        AGE,
    ],
    "DaemonSet": [
        NAME,
        ("Desired", lambda o: _s(o, "status", "desiredNumberScheduled")),
        ("Current", lambda o: _s(o, "status", "currentNumberScheduled")),
        ("Ready", lambda o: _s(o, "status", "numberReady")),
        ("Up-to-date", lambda o: _s(o, "status", "updatedNumberScheduled")),
        ("Available", lambda o: _s(o, "status", "numberAvailable")),
        AGE,
    ],
    "Service": [
        NAME,
        ("Type", lambda o: _s(o, "spec", "type", default="ClusterIP")),
        ("Cluster-IP", lambda o: _s(o, "spec", "clusterIP", default="<none>")),
        ("External-IP", lambda o: "<none>"),
        ("Port(s)", _ports),
        AGE,
    ],
    "Node": [
        NAME,
        ("Status", _node_status),
        (
            "Roles",
            lambda o: (
                ",".join(
                    sorted(
                        k.split("/", 1)[1]
                        for k in o["metadata"].get("labels") or {}
                        if k.startswith("node-role.kubernetes.io/")
                    )
                )
                or "<none>"
            ),
        ),
        AGE,
        ("Version", lambda o: _s(o, "status", "nodeInfo", "kubeletVersion", default="")),
    ],
    "Namespace": [NAME, ("Status", lambda o: _s(o, "status", "phase", default="Active")), AGE],
    "Event": [
        ("Last Seen", lambda o: age({"metadata": {"creationTimestamp": o.get("lastTimestamp")}})),
        ("Type", lambda o: o.get("type", "")),
        ("Reason", lambda o: o.get("reason", "")),
        (
            "Object",
            lambda o: (
                f"{_s(o, 'involvedObject', 'kind', default='').lower()}/"
                f"{_s(o, 'involvedObject', 'name', default='')}"
            ),
        ),
        ("Message", lambda o: o.get("message", "")),
    ],
    "PodDisruptionBudget": [
        NAME,
        ("Min Available", lambda o: _s(o, "spec", "minAvailable", default="N/A")),
        ("Max Unavailable", lambda o: _s(o, "spec", "maxUnavailable", default="N/A")),
        ("Allowed Disruptions", lambda o: _s(o, "status", "disruptionsAllowed")),
        AGE,
    ],
    "Secret": [
        NAME,
        ("Type", lambda o: o.get("type", "Opaque")),
        ("Data", lambda o: len(o.get("data") or {})),
        AGE,
    ],
    "ConfigMap": [NAME, ("Data", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), AGE],
    "Lease": [NAME, ("Holder", lambda o: _s(o, "spec", "holderIdentity", default="")), AGE],
    "Endpoints": [NAME, ("Endpoints", _endpoints), AGE],
}


def _row_object(obj, include):
    if include == "Object":
        return obj
    meta = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
    return None if include == "None" else meta


def render(res, items, headers, query, rv=None, rows_only=False):
    """A Table when the client asked for one (Accept: ...;as=Table), else None."""
    if "as=Table" not in (headers.get("Accept") or ""):
        return None
    columns = [c if len(c) == 3 else (*c, 0) for c in COLUMNS.get(res.kind, [NAME, AGE])]
    include = query.get("includeObject", "Metadata")
    rows = [{"cells": [fn(o) for _, fn, _ in columns], "object": _row_object(o, include)} for o in items]
    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows}
    if rv is not None:
        table["metadata"]["resourceVersion"] = str(rv)
    if not rows_only:
        table["columnDefinitions"] = [
            {
                "name": name,
                "type": "string",
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, _, priority in columns
        ]
    return table
