"""Background controllers: Deployments, ReplicaSets, StatefulSets, DaemonSets,
pod scheduling and readiness, Endpoints, PodDisruptionBudget status, node
status defaults, Events and ownerReference garbage collection.

Everything runs on one thread while holding the store lock; controllers only
write when an object actually changes, so an idle cluster causes no writes."""

import collections
import copy
import hashlib
import json
import logging
import threading
import time
import uuid

from . import discovery
from .api import ALNUM, int_or_percent, pdb_status, pod_ready
from .kubelet import HOST, HOST_PORTS, host_ports_annotation
from .store import APIError, labels_match, now_iso, parse_time, selector_from_spec

log = logging.getLogger(__name__)
R = {r.kind: r for r in discovery.RESOURCES if r.version == "v1" and r.group in ("", "apps")}
SKIP_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
}
REVISION = "deployment.kubernetes.io/revision"


# ---------------------------------------------------------------- helpers
def _prune(value):
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items() if k != "creationTimestamp"}
        return {k: v for k, v in out.items() if v not in (None, {}, [], False, "")}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def norm_template(template):
    """Template compared the way the API server's defaulting would make it compare."""
    template = copy.deepcopy(template or {})
    ((template.get("metadata") or {}).get("labels") or {}).pop("pod-template-hash", None)
    return _prune(template)


def template_hash(normalized, salt=0):
    digest = hashlib.sha256(f"{normalized}/{salt}".encode()).digest()
    return "".join(ALNUM[b % len(ALNUM)] for b in digest[:10])


def replicas(obj):
    return (obj.get("spec") or {}).get("replicas", 1)


def stat(obj, key):
    return (obj.get("status") or {}).get(key) or 0


def available_replicas(rs):
    """Available pods of a ReplicaSet, never more than it is asked to run (its status may lag)."""
    return min(replicas(rs), stat(rs, "availableReplicas"))


def revision(rs):
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def controlled_by(obj, owner):
    uid = owner["metadata"]["uid"]
    return any(
        r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or []
    )


def owner_ref(owner):
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def cond(obj, ctype):
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None
    )


def set_cond(conds, ctype, status, reason=None, message=None, bump=False, probe=False):
    """Set a condition, keeping timestamps when nothing changed (bump: refresh lastUpdateTime)."""
    now = now_iso()
    old = next((c for c in conds if c.get("type") == ctype), None)
    if old and old.get("status") == status and old.get("reason") == reason and not bump:
        if message and old.get("message") != message:
            old["message"] = message
        return
    new = {"type": ctype, "status": status}
    new.update({"lastProbeTime": None} if probe else {"lastUpdateTime": now})
    new["lastTransitionTime"] = old["lastTransitionTime"] if old and old.get("status") == status else now
    if reason:
        new.update(reason=reason, message=message or "")
    if old:
        conds[conds.index(old)] = new
    else:
        conds.append(new)


def available(pod, min_ready):
    ready = next(
        (c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
    )
    return bool(
        ready
        and ready.get("status") == "True"
        and (not min_ready or time.time() - parse_time(ready.get("lastTransitionTime")) >= min_ready)
    )


def terminating(pod):
    return bool(pod["metadata"].get("deletionTimestamp"))


def target_container_port(pod, target):
    """The containerPort a Service's targetPort means for this pod (a number, or a port's name)."""
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return p.get("containerPort")
    return None


def node_fits(node, pod_spec):
    return labels_match(
        [(k, "=", {v}) for k, v in (pod_spec.get("nodeSelector") or {}).items()],
        node["metadata"].get("labels"),
    )


def without_zeros(status, keep=()):
    return {k: v for k, v in status.items() if v != 0 or k in keep}


class Controllers:
    def __init__(self, api, kubelet, ready_delay=1.0):
        self.api, self.store, self.ready_delay = api, api.store, ready_delay
        self.kubelet = kubelet
        self.started = {}  # pod uid -> (monotonic start, pod IP)
        self.events = collections.OrderedDict()  # (uid, reason, message) -> (namespace, name)
        self.rr = 0
        self.ips = 0
        self.seen_deletions = -1
        self.failed = set()  # (uid, resourceVersion) already reported as failing
        self.settled = {}  # pod uid -> resourceVersion of a pod whose status is final
        self.norms = {}  # (uid, resourceVersion) -> normalized pod template (JSON)
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            self.store.changed.wait(0.2)
            self.store.changed.clear()
            with self.store.lock:
                for _ in range(8):
                    before = self.store.rv
                    try:
                        self.reconcile()
                    except Exception:  # keep the loop alive; the next tick retries
                        log.exception("controller pass failed")
                    if self.store.rv == before:
                        break

    def reconcile(self):
        for pod, reason, message, etype, path in self.kubelet.drain_events():
            self.event(pod, reason, message, etype, "kubelet", path)
        self.nodes()
        nodes = self.store.list("/nodes")
        addresses = {
            n["metadata"]["name"]: next(
                (a["address"] for a in n["status"].get("addresses", []) if a.get("type") == "InternalIP"),
                "10.0.0.1",
            )
            for n in nodes
        }
        for rkey, sync in (
            ("apps/deployments", self.deployment),
            ("apps/replicasets", self.replicaset),
            ("apps/statefulsets", self.statefulset),
            ("apps/daemonsets", self.daemonset),
            ("/pods", lambda pod: self.pod(pod, nodes, addresses)),
            ("/services", self.endpoints),
            ("policy/poddisruptionbudgets", self.pdb),
        ):
            for obj in self.store.list(rkey):
                try:
                    sync(obj)
                except Exception:  # one malformed object must not stop the others
                    key = (obj["metadata"].get("uid"), obj["metadata"].get("resourceVersion"))
                    if key not in self.failed:
                        self.failed = self.failed if len(self.failed) < 1000 else set()
                        self.failed.add(key)
                        log.exception("cannot reconcile %s %s", rkey, obj["metadata"].get("name"))
        present = {p["metadata"]["uid"] for p in self.store.list("/pods")}
        for uid in self.kubelet.sweep(present):  # terminating pods whose processes are gone
            where = self.store.uids.get(uid)
            if where is not None:
                self.store.remove(*where)
            self.kubelet.forget(uid)
        for uid in set(self.started) - present:
            del self.started[uid]
            self.settled.pop(uid, None)
        self.gc()

    # ------------------------------------------------------------ plumbing
    def write(self, res, old, new):
        return self.store.put(discovery.rkey(res), new, old) if new != old else old

    def norm(self, obj):
        key = (obj["metadata"]["uid"], obj["metadata"].get("resourceVersion"))
        if key not in self.norms:
            if len(self.norms) > 5000:
                self.norms.clear()
            template = (obj.get("spec") or {}).get("template")
            self.norms[key] = json.dumps(norm_template(template), sort_keys=True)
        return self.norms[key]

    def owned(self, kind, namespace, owner):
        return [o for o in self.store.list(discovery.rkey(R[kind]), namespace) if controlled_by(o, owner)]

    def event(self, obj, reason, message, etype="Normal", component="controller-manager", field_path=None):
        meta, now = obj["metadata"], now_iso()
        key = (meta["uid"], reason, message)
        if key in self.events:
            ev = self.store.get("/events", *self.events[key])
            if ev is not None and time.time() - parse_time(ev.get("lastTimestamp")) >= 10:
                new = copy.deepcopy(ev)
                new.update(count=ev.get("count", 1) + 1, lastTimestamp=now)
                self.write(R["Event"], ev, new)
            return
        ns = meta.get("namespace") or "default"
        involved = {
            "kind": obj["kind"],
            "namespace": meta.get("namespace"),
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": obj["apiVersion"],
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
        self.api.create(
            R["Event"],
            ns,
            {
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": etype,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": "",
            },
            implicit_namespace=True,
        )
        self.events[key] = (ns, name)
        while len(self.events) > 1000:
            _, (old_ns, old_name) = self.events.popitem(last=False)
            if self.store.get("/events", old_ns, old_name):
                self.api.delete(R["Event"], old_ns, old_name)

    def new_pod(self, owner, name=None, labels=None, node=None):
        template = owner["spec"].get("template") or {}
        meta = copy.deepcopy(template.get("metadata") or {})
        for key in ("creationTimestamp", "name", "namespace"):  # a template's own name is ignored
            meta.pop(key, None)
        meta["labels"] = dict(meta.get("labels") or {}, **(labels or {}))
        meta["ownerReferences"] = [owner_ref(owner)]
        meta.update({"name": name} if name else {"generateName": owner["metadata"]["name"] + "-"})
        spec = copy.deepcopy(template.get("spec") or {})
        if node:
            spec["nodeName"] = node
        pod = self.api.create(
            R["Pod"],
            owner["metadata"]["namespace"],
            {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec},
        )
        verb = "create Pod %s in %s %s successful" if name else "Created pod: %s"
        message = verb % (
            (pod["metadata"]["name"], owner["kind"], owner["metadata"]["name"])
            if name
            else pod["metadata"]["name"]
        )
        self.event(owner, "SuccessfulCreate", message)
        return pod

    def delete_pod(self, owner, pod):
        self.api.delete(R["Pod"], pod["metadata"]["namespace"], pod["metadata"]["name"])
        name = pod["metadata"]["name"]
        message = (
            f"delete Pod {name} in StatefulSet {owner['metadata']['name']} successful"
            if owner["kind"] == "StatefulSet"
            else f"Deleted pod: {name}"
        )
        self.event(owner, "SuccessfulDelete", message)

    # ------------------------------------------------------------ nodes
    def nodes(self):
        for i, node in enumerate(self.store.list("/nodes")):
            new, now = copy.deepcopy(node), now_iso()
            st = new.setdefault("status", {})
            if not st.get("conditions"):
                st["conditions"] = [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ]
            st.setdefault(
                "addresses",
                [
                    {"type": "InternalIP", "address": f"10.0.0.{10 + i}"},
                    {"type": "Hostname", "address": node["metadata"]["name"]},
                ],
            )
            capacity = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
            st.setdefault("capacity", capacity)
            st.setdefault("allocatable", capacity)
            info = {
                "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "containerd://1.7.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "Linux",
                "kernelVersion": "6.1.0",
                "machineID": node["metadata"]["name"],
                "systemUUID": node["metadata"]["name"],
                "bootID": "sandbox",
            }
            st["nodeInfo"] = dict(info, **(st.get("nodeInfo") or {}))
            self.write(R["Node"], node, new)

    def ready_nodes(self, pod_spec, schedulable=True):
        return [
            n
            for n in self.store.list("/nodes")
            if (cond(n, "Ready") or {}).get("status") == "True"
            and node_fits(n, pod_spec)
            and not (schedulable and (n.get("spec") or {}).get("unschedulable"))
        ]

    # ------------------------------------------------------------ deployments
    def deployment(self, d):
        """Roll the Deployment's ReplicaSets towards its template, then publish its status."""
        spec, ns = d["spec"], d["metadata"]["namespace"]
        rss = self.owned("ReplicaSet", ns, d)
        by_age = sorted(rss, key=lambda r: r["metadata"]["creationTimestamp"])
        new = next((rs for rs in by_age if self.norm(rs) == self.norm(d)), None)
        conds = copy.deepcopy((d.get("status") or {}).get("conditions") or [])
        if spec.get("paused"):
            if new is not None and not any(replicas(rs) for rs in rss if rs is not new):
                self.scale_rs(d, new, replicas(d))
        else:
            maxrev = max([revision(rs) for rs in rss if rs is not new] or [0])
            if new is None:
                new = self.create_rs(d, maxrev + 1)
                message = f'Created new replica set "{new["metadata"]["name"]}"'
                set_cond(conds, "Progressing", "True", "NewReplicaSetCreated", message)
            elif revision(new) <= maxrev:  # an old template again (rollback): it becomes the newest
                new = self.sync_rs_annotations(d, new, maxrev + 1)
                message = f'Found new replica set "{new["metadata"]["name"]}"'
                set_cond(conds, "Progressing", "True", "FoundNewReplicaSet", message)
            new = self.sync_rs_annotations(d, new, revision(new))
            olds = [rs for rs in rss if rs["metadata"]["uid"] != new["metadata"]["uid"]]
            (self.recreate if (spec.get("strategy") or {}).get("type") == "Recreate" else self.rolling)(
                d, new, olds
            )
        rss = self.owned("ReplicaSet", ns, d)
        new = next((rs for rs in rss if new and rs["metadata"]["uid"] == new["metadata"]["uid"]), None)
        self.deployment_status(d, rss, new, conds)

    def deployment_status(self, d, rss, new, conds):
        want, spec, meta = replicas(d), d["spec"], d["metadata"]
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": sum(stat(rs, "replicas") for rs in rss),
            "updatedReplicas": stat(new, "replicas") if new else 0,
            "readyReplicas": sum(stat(rs, "readyReplicas") for rs in rss),
            "availableReplicas": sum(stat(rs, "availableReplicas") for rs in rss),
        }
        status["unavailableReplicas"] = max(0, sum(map(replicas, rss)) - status["availableReplicas"])
        if status["availableReplicas"] >= want - self.surge_unavailable(d)[1]:
            message = "Deployment has minimum availability."
            set_cond(conds, "Available", "True", "MinimumReplicasAvailable", message)
        else:
            message = "Deployment does not have minimum availability."
            set_cond(conds, "Available", "False", "MinimumReplicasUnavailable", message)
        failure = cond(new, "ReplicaFailure") if new else None
        if failure and failure.get("status") == "True":
            set_cond(conds, "ReplicaFailure", "True", "FailedCreate", failure.get("message"))
        else:
            conds[:] = [c for c in conds if c.get("type") != "ReplicaFailure"]
        progressing = next((c for c in conds if c["type"] == "Progressing"), {})
        old, name = d.get("status") or {}, new and new["metadata"]["name"]
        moved = (  # the same notion of progress as the real controller
            status["updatedReplicas"] > old.get("updatedReplicas", 0)
            or status["readyReplicas"] > old.get("readyReplicas", 0)
            or status["availableReplicas"] > old.get("availableReplicas", 0)
            or status["replicas"] - status["updatedReplicas"]
            < old.get("replicas", 0) - old.get("updatedReplicas", 0)
        )
        deadline = parse_time(progressing.get("lastUpdateTime")) + spec.get("progressDeadlineSeconds", 600)
        if spec.get("paused"):
            set_cond(conds, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif progressing.get("reason") == "DeploymentPaused":
            set_cond(conds, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed")
        elif new is None:
            pass
        elif status["updatedReplicas"] == want == status["replicas"] == status["availableReplicas"]:
            message = f'ReplicaSet "{name}" has successfully progressed.'
            set_cond(conds, "Progressing", "True", "NewReplicaSetAvailable", message)
            self.cleanup(d, [rs for rs in rss if rs is not new])
        elif moved:
            message = f'ReplicaSet "{name}" is progressing.'
            set_cond(conds, "Progressing", "True", "ReplicaSetUpdated", message, bump=True)
        elif progressing.get("reason") not in (None, "NewReplicaSetAvailable") and deadline < time.time():
            message = f'ReplicaSet "{name}" has timed out progressing.'
            set_cond(conds, "Progressing", "False", "ProgressDeadlineExceeded", message)
        status = dict(without_zeros(status, keep=("observedGeneration",)), conditions=conds)
        current = self.store.get("apps/deployments", meta["namespace"], meta["name"])
        annotations = dict(current["metadata"].get("annotations") or {})
        if new is not None:
            annotations[REVISION] = str(revision(new))
        metadata = dict(current["metadata"], annotations=annotations)
        self.write(R["Deployment"], current, dict(current, metadata=metadata, status=status))

    def surge_unavailable(self, d):
        want, strategy = replicas(d), d["spec"].get("strategy") or {}
        if strategy.get("type") == "Recreate" or want == 0:
            return 0, 0
        ru = strategy.get("rollingUpdate") or {}
        surge = int_or_percent(ru.get("maxSurge", "25%"), want, True)
        unavailable = int_or_percent(ru.get("maxUnavailable", "25%"), want, False)
        return surge, min(want, 1 if surge == unavailable == 0 else unavailable)

    def create_rs(self, d, rev):
        ns, base = d["metadata"]["namespace"], d["metadata"]["name"]
        for salt in range(10):
            h = template_hash(self.norm(d), salt)
            if self.store.get("apps/replicasets", ns, f"{base}-{h}") is None:
                break
        template = copy.deepcopy(d["spec"].get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = h
        return self.api.create(
            R["ReplicaSet"],
            ns,
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{base}-{h}",
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {REVISION: str(rev)},
                    "ownerReferences": [owner_ref(d)],
                },
                "spec": {
                    "replicas": 0,
                    "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                    "selector": selector,
                    "template": template,
                },
            },
        )

    def sync_rs_annotations(self, d, rs, rev):
        ann = dict(rs["metadata"].get("annotations") or {})
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key not in SKIP_ANNOTATIONS:
                ann[key] = value
        if revision(rs) and revision(rs) != rev:
            ann["deployment.kubernetes.io/revision-history"] = ",".join(
                filter(None, [ann.get("deployment.kubernetes.io/revision-history"), str(revision(rs))])
            )
        ann[REVISION] = str(rev)
        surge, _ = self.surge_unavailable(d)
        ann["deployment.kubernetes.io/desired-replicas"] = str(replicas(d))
        ann["deployment.kubernetes.io/max-replicas"] = str(replicas(d) + surge)
        if ann == rs["metadata"].get("annotations"):
            return rs
        return self.write(R["ReplicaSet"], rs, dict(rs, metadata=dict(rs["metadata"], annotations=ann)))

    def scale_rs(self, d, rs, count):
        before = replicas(rs)
        if count == before:
            return rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = count
        self.event(
            d,
            "ScalingReplicaSet",
            f"Scaled {'up' if count > before else 'down'} replica set "
            f"{rs['metadata']['name']} from {before} to {count}",
            component="deployment-controller",
        )
        return self.write(R["ReplicaSet"], rs, new)

    def rolling(self, d, new, olds):
        want = replicas(d)
        surge, unavailable = self.surge_unavailable(d)
        count, total = replicas(new), replicas(new) + sum(replicas(o) for o in olds)
        target = want if count > want else count + max(0, min(want + surge - total, want - count))
        new = self.scale_rs(d, new, target)
        olds = sorted((o for o in olds if replicas(o) > 0), key=lambda o: o["metadata"]["creationTimestamp"])
        if not olds:
            return
        min_available = want - unavailable
        # old pods that may go: every pod counts except the new ReplicaSet's unavailable ones
        budget = sum(map(replicas, olds)) + available_replicas(new) - min_available
        for i, old in enumerate(olds):  # unhealthy old replicas go first
            if budget <= 0:
                return
            down = min(replicas(old) - available_replicas(old), budget)
            if down > 0:
                olds[i] = self.scale_rs(d, old, replicas(old) - down)
                budget -= down
        budget = min(budget, available_replicas(new) + sum(map(available_replicas, olds)) - min_available)
        for old in olds:
            if budget <= 0:
                break
            down = min(replicas(old), budget)
            self.scale_rs(d, old, replicas(old) - down)
            budget -= down

    def recreate(self, d, new, olds):
        for old in olds:
            self.scale_rs(d, old, 0)
        if not any(self.owned("Pod", d["metadata"]["namespace"], old) for old in olds):
            self.scale_rs(d, new, replicas(d))

    def cleanup(self, d, olds):
        limit = d["spec"].get("revisionHistoryLimit", 10)
        dead = sorted((o for o in olds if replicas(o) == 0 and stat(o, "replicas") == 0), key=revision)
        for old in dead[: max(0, len(dead) - limit)]:
            self.api.delete(R["ReplicaSet"], old["metadata"]["namespace"], old["metadata"]["name"])

    # ------------------------------------------------------------ replicasets
    def replicaset(self, rs):
        ns, want = rs["metadata"]["namespace"], replicas(rs)
        # A pod whose labels no longer match the selector (relabelled out, as a quarantine does) is
        # released, as the ReplicaSet controller does: its ownerReference goes and it is replaced.
        selector = selector_from_spec(rs["spec"].get("selector") or {})
        owned = []
        for pod in self.owned("Pod", ns, rs):
            if labels_match(selector, pod["metadata"].get("labels") or {}):
                owned.append(pod)
                continue
            released = copy.deepcopy(pod)
            refs = [
                r
                for r in pod["metadata"].get("ownerReferences") or []
                if r.get("uid") != rs["metadata"]["uid"]
            ]
            released["metadata"]["ownerReferences"] = refs
            if not refs:
                released["metadata"].pop("ownerReferences")
            self.write(R["Pod"], pod, released)
        # Terminating pods are not active: their replacements are created at once, as on a cluster.
        pods = [p for p in owned if not terminating(p)]
        failure = None
        for _ in range(want - len(pods)):
            try:
                pods.append(self.new_pod(rs))
            except APIError as exc:  # e.g. refused by admission
                failure = exc.message
                self.event(
                    rs, "FailedCreate", f"Error creating: {failure}", "Warning", "replicaset-controller"
                )
                break
        conds = copy.deepcopy((rs.get("status") or {}).get("conditions") or [])
        if failure:
            set_cond(conds, "ReplicaFailure", "True", "FailedCreate", failure, probe=True)
            for c in conds:
                c.pop("lastProbeTime", None)
        elif len(pods) >= want:
            conds = [c for c in conds if c.get("type") != "ReplicaFailure"]
        if len(pods) > want:

            def rank(p):
                return (
                    bool(p["spec"].get("nodeName")),
                    p["status"].get("phase") == "Running",
                    pod_ready(p),
                    [-ord(ch) for ch in p["metadata"]["creationTimestamp"]],
                )

            doomed = sorted(pods, key=rank)[: len(pods) - want]
            for pod in doomed:
                self.delete_pod(rs, pod)
            pods = [p for p in pods if p not in doomed]
        self.workload_status(rs, pods, {"conditions": conds} if conds else None)

    def workload_status(self, obj, pods, extra=None):
        min_ready = obj["spec"].get("minReadySeconds", 0)
        labels = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods if labels.items() <= (p["metadata"].get("labels") or {}).items()
            ),
            "readyReplicas": sum(1 for p in pods if pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if available(p, min_ready)),
            "observedGeneration": obj["metadata"].get("generation", 1),
        }
        status.update(extra or {})
        if obj["kind"] != "ReplicaSet":
            status.pop("fullyLabeledReplicas")
        new = dict(obj, status=without_zeros(status, keep=("replicas", "observedGeneration")))
        return self.write(R[obj["kind"]], obj, new)

    # ------------------------------------------------------------ statefulsets
    def statefulset(self, sts):
        spec, ns, name = sts["spec"], sts["metadata"]["namespace"], sts["metadata"]["name"]
        want, parallel = replicas(sts), spec.get("podManagementPolicy") == "Parallel"
        update_rev = f"{name}-{template_hash(self.norm(sts))}"
        self.controller_revision(sts, update_rev)
        pods = {}
        for pod in self.owned("Pod", ns, sts):
            ordinal = pod["metadata"]["name"][len(name) + 1 :]
            pods[int(ordinal) if ordinal.isdigit() else -1] = pod
        busy = False
        for i in range(want):
            pod = pods.get(i)
            if pod is None:
                try:
                    pods[i] = self.new_pod(
                        sts,
                        f"{name}-{i}",
                        {
                            "controller-revision-hash": update_rev,
                            "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                            "apps.kubernetes.io/pod-index": str(i),
                        },
                    )
                except APIError as exc:
                    message = f"create Pod {name}-{i} in StatefulSet {name} failed error: {exc.message}"
                    self.event(sts, "FailedCreate", message, "Warning", "statefulset-controller")
                    break
                busy = True
            elif not pod_ready(pod):
                busy = True
            if busy and not parallel:
                break
        extra = sorted((i for i in pods if not 0 <= i < want), reverse=True)
        for i in extra[: None if parallel else 1]:
            if not busy:
                self.delete_pod(sts, pods.pop(i))
                busy = not parallel
        strategy = spec.get("updateStrategy") or {}
        if not busy and not extra and strategy.get("type", "RollingUpdate") == "RollingUpdate":
            partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
            stale = [
                i
                for i in range(want - 1, partition - 1, -1)
                if pods[i]["metadata"]["labels"].get("controller-revision-hash") != update_rev
            ]
            if stale:
                self.delete_pod(sts, pods.pop(stale[0]))
        alive = list(pods.values())
        current_rev = (sts.get("status") or {}).get("currentRevision") or update_rev
        updated = sum(
            1 for p in alive if p["metadata"]["labels"].get("controller-revision-hash") == update_rev
        )
        if updated == want == len(alive):
            current_rev = update_rev
        current = sum(
            1 for p in alive if p["metadata"]["labels"].get("controller-revision-hash") == current_rev
        )
        self.workload_status(
            sts,
            alive,
            {
                "currentReplicas": current,
                "updatedReplicas": updated,
                "currentRevision": current_rev,
                "updateRevision": update_rev,
                "collisionCount": 0,
            },
        )

    def controller_revision(self, owner, rev_name):
        ns = owner["metadata"]["namespace"]
        revisions = self.owned("ControllerRevision", ns, owner)
        top = max([r.get("revision", 0) for r in revisions] or [0])
        existing = self.store.get("apps/controllerrevisions", ns, rev_name)
        if existing is None:
            template = dict(copy.deepcopy(owner["spec"].get("template") or {}), **{"$patch": "replace"})
            labels = (template.get("metadata") or {}).get("labels") or {}  # kubectl lists them by selector
            self.api.create(
                R["ControllerRevision"],
                ns,
                {
                    "metadata": {
                        "name": rev_name,
                        "labels": {**labels, "controller.kubernetes.io/hash": rev_name.rsplit("-", 1)[1]},
                        "ownerReferences": [owner_ref(owner)],
                    },
                    "data": {"spec": {"template": template}},
                    "revision": top + 1,
                },
            )
        elif (
            existing.get("revision", 0) < top
            and (owner.get("status") or {}).get("updateRevision") != rev_name
        ):
            self.write(R["ControllerRevision"], existing, dict(existing, revision=top + 1))

    # ------------------------------------------------------------ daemonsets
    def daemonset(self, ds):
        ns, spec = ds["metadata"]["namespace"], ds["spec"]
        rev = template_hash(self.norm(ds))
        nodes = {
            n["metadata"]["name"]
            for n in self.ready_nodes((spec.get("template") or {}).get("spec") or {}, False)
        }
        pods = self.owned("Pod", ns, ds)
        placed = {p["spec"].get("nodeName") for p in pods}
        for node in sorted(nodes - placed):
            try:
                pods.append(self.new_pod(ds, labels={"controller-revision-hash": rev}, node=node))
            except APIError as exc:
                self.event(
                    ds, "FailedCreate", f"Error creating: {exc.message}", "Warning", "daemonset-controller"
                )
                break
        for pod in [p for p in pods if p["spec"].get("nodeName") not in nodes]:
            self.delete_pod(ds, pod)
            pods.remove(pod)
        stale = [p for p in pods if p["metadata"]["labels"].get("controller-revision-hash") != rev]
        if stale and all(pod_ready(p) for p in pods):
            self.delete_pod(ds, stale[0])
            pods.remove(stale[0])
        ready = sum(1 for p in pods if pod_ready(p))
        status = {
            "desiredNumberScheduled": len(nodes),
            "currentNumberScheduled": len(pods),
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": len(nodes) - ready,
            "numberMisscheduled": 0,
            "updatedNumberScheduled": len(pods) - len(stale),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        self.write(
            R["DaemonSet"],
            ds,
            dict(
                ds,
                status=without_zeros(
                    status,
                    keep=(
                        "desiredNumberScheduled",
                        "currentNumberScheduled",
                        "numberReady",
                        "numberMisscheduled",
                    ),
                ),
            ),
        )

    # ------------------------------------------------------------ pods
    def pod(self, pod, nodes, addresses):
        meta, uid = pod["metadata"], pod["metadata"]["uid"]
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or self.settled.get(uid) == meta.get("resourceVersion"):
            return
        new, now = copy.deepcopy(pod), now_iso()
        spec, status = new["spec"], new.setdefault("status", {})
        conds = status.setdefault("conditions", [])
        if not spec.get("nodeName") and nodes:
            fits = self.ready_nodes(spec)
            if not fits:
                message = f"0/{len(nodes)} nodes are available: no ready, schedulable node matches."
                set_cond(conds, "PodScheduled", "False", "Unschedulable", message, probe=True)
                self.event(pod, "FailedScheduling", message, "Warning", "default-scheduler")
                self.write(R["Pod"], pod, new)
                return
            spec["nodeName"] = fits[self.rr % len(fits)]["metadata"]["name"]
            self.rr += 1
            self.event(
                pod,
                "Scheduled",
                f"Successfully assigned {meta['namespace']}/{meta['name']} to {spec['nodeName']}",
                component="default-scheduler",
            )
        if self.kubelet.wants(pod):
            self.live_pod(pod, new, status, conds, now)
            return
        if uid not in self.started:
            self.ips += 1
            self.started[uid] = (time.monotonic(), f"10.244.{self.ips // 250 % 250}.{self.ips % 250 + 2}")
            self.container_events(pod, spec)
        elapsed = time.monotonic() - self.started[uid][0]
        self.pod_status(pod, spec, status, conds, elapsed, addresses, now)
        if self.write(R["Pod"], pod, new) is pod and elapsed >= max(self.ready_delay, 1.0):
            self.settled[uid] = meta.get("resourceVersion")  # nothing left to do until it changes

    def live_pod(self, pod, new, status, conds, now):
        """A pod whose containers run as processes: its status is what the kubelet sees."""
        runtime = self.kubelet.sync(pod)
        with self.kubelet.lock:
            phase, ready, unready, statuses = runtime.status()
            statuses = copy.deepcopy(statuses)
        meta = new["metadata"]
        meta["annotations"] = dict(
            meta.get("annotations") or {}, **{HOST_PORTS: host_ports_annotation(runtime)}
        )
        status["phase"] = phase
        status.setdefault("startTime", now)
        status.update(hostIP=HOST, hostIPs=[{"ip": HOST}], podIP=HOST, podIPs=[{"ip": HOST}])
        for ctype in ("PodReadyToStartContainers", "Initialized", "PodScheduled"):
            set_cond(conds, ctype, "True", probe=True)
        message = f"containers with unready status: [{' '.join(unready)}]"
        for ctype, ok in (("Ready", ready), ("ContainersReady", not unready)):
            if ok:
                set_cond(conds, ctype, "True", probe=True)
            else:
                set_cond(conds, ctype, "False", "ContainersNotReady", message, probe=True)
        status["containerStatuses"] = statuses
        status.setdefault("qosClass", "BestEffort")
        self.write(R["Pod"], pod, new)

    def container_events(self, pod, spec):
        for c in spec.get("containers") or []:
            path, image = f"spec.containers{{{c['name']}}}", c.get("image")
            self.event(pod, "Pulling", f'Pulling image "{image}"', component="kubelet", field_path=path)
            if not self.kubelet.pullable(image):
                self.event(
                    pod,
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                    f'failed to pull and unpack image "{image}": not found',
                    "Warning",
                    "kubelet",
                    path,
                )
                self.event(pod, "Failed", "Error: ErrImagePull", "Warning", "kubelet", path)
                continue
            self.event(
                pod,
                "Pulled",
                f'Successfully pulled image "{image}" in 1.2s (1.2s including waiting)',
                component="kubelet",
                field_path=path,
            )
            self.event(
                pod, "Created", f"Created container: {c['name']}", component="kubelet", field_path=path
            )
            self.event(pod, "Started", f"Started container {c['name']}", component="kubelet", field_path=path)

    def pod_status(self, pod, spec, status, conds, elapsed, addresses, now):
        containers = spec.get("containers") or []
        bad = [c["name"] for c in containers if not self.kubelet.pullable(c.get("image"))]
        started = elapsed >= self.ready_delay
        ready = started and not bad
        backoff = elapsed >= max(self.ready_delay, 1.0)
        status["phase"] = "Pending" if bad else "Running"
        status.setdefault("startTime", now)
        if spec.get("nodeName"):
            status["hostIP"] = addresses.get(spec["nodeName"], "10.0.0.1")
            status["hostIPs"] = [{"ip": status["hostIP"]}]
        status["podIP"] = self.started[pod["metadata"]["uid"]][1]
        status["podIPs"] = [{"ip": status["podIP"]}]
        unready = f"containers with unready status: [{' '.join(bad or [c['name'] for c in containers])}]"
        for ctype in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
            if ready or ctype not in ("Ready", "ContainersReady"):
                set_cond(conds, ctype, "True", probe=True)
            else:
                set_cond(conds, ctype, "False", "ContainersNotReady", unready, probe=True)
        statuses = []
        for c in containers:
            image, cs = c.get("image"), {"name": c["name"], "image": c.get("image"), "restartCount": 0}
            if c["name"] in bad:
                reason = "ImagePullBackOff" if backoff else "ErrImagePull"
                message = (
                    f'Back-off pulling image "{image}"' if backoff else f'failed to pull image "{image}"'
                )
                cs.update(
                    imageID="",
                    ready=False,
                    started=False,
                    state={"waiting": {"reason": reason, "message": message}},
                )
                if backoff:
                    path = f"spec.containers{{{c['name']}}}"
                    self.event(pod, "BackOff", message, "Warning", "kubelet", path)
                    self.event(pod, "Failed", "Error: ImagePullBackOff", "Warning", "kubelet", path)
            else:
                digest = hashlib.sha256(str(image).encode()).hexdigest()
                cid = hashlib.sha256((pod["metadata"]["uid"] + c["name"]).encode()).hexdigest()
                cs.update(
                    imageID=f"{str(image).split(':')[0]}@sha256:{digest}",
                    containerID=f"containerd://{cid}",
                    ready=started,
                    started=True,
                    state={"running": {"startedAt": status["startTime"]}},
                )
            statuses.append(cs)
        status["containerStatuses"] = statuses
        status.setdefault("qosClass", "BestEffort")

    # ------------------------------------------------------------ services, budgets, GC
    def endpoints(self, svc):
        """Endpoints of a Service: pods with the same ports share a subset (a live pod's ports are its
        host ports, so it has a subset of its own); terminating pods are left out at once."""
        selector, ns, name = (
            svc["spec"].get("selector"),
            svc["metadata"]["namespace"],
            svc["metadata"]["name"],
        )
        if not selector:
            return
        subsets = {}
        for pod in self.store.list("/pods", ns):
            ip = (pod.get("status") or {}).get("podIP")
            if (
                not ip
                or terminating(pod)
                or not selector.items() <= (pod["metadata"].get("labels") or {}).items()
            ):
                continue
            ports = self.endpoint_ports(svc, pod)
            if ports is None:
                continue
            ref = {
                "kind": "Pod",
                "namespace": ns,
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            }
            address = {"ip": ip, "nodeName": pod["spec"].get("nodeName"), "targetRef": ref}
            subset = subsets.setdefault(
                json.dumps(ports, sort_keys=True), {"addresses": [], "notReadyAddresses": [], "ports": ports}
            )
            subset["addresses" if pod_ready(pod) else "notReadyAddresses"].append(address)
        subsets = [{k: v for k, v in subsets[key].items() if v} for key in sorted(subsets)]
        existing = self.store.get("/endpoints", ns, name)
        if existing is None:
            labels = svc["metadata"].get("labels") or {}
            self.api.create(
                R["Endpoints"], ns, {"metadata": {"name": name, "labels": labels}, "subsets": subsets}
            )
        else:
            self.write(R["Endpoints"], existing, dict(existing, subsets=subsets))

    @staticmethod
    def endpoint_ports(svc, pod):
        """The Endpoints ports of the Service for this pod, or None when the pod has none of them."""
        host_ports = json.loads((pod["metadata"].get("annotations") or {}).get(HOST_PORTS) or "null")
        ports = []
        for port in svc["spec"].get("ports") or []:
            target = target_container_port(pod, port.get("targetPort", port.get("port")))
            if target is not None and host_ports is not None:
                target = host_ports.get(str(target))
            if target is None:
                continue
            entry = {"port": target, "protocol": port["protocol"]}
            ports.append(dict(entry, name=port["name"]) if port.get("name") else entry)
        return ports if ports or not svc["spec"].get("ports") else None

    def pdb(self, pdb):
        res = discovery.BY_PATH[("policy", "v1", "poddisruptionbudgets")]
        expected, healthy, desired, allowed = pdb_status(
            pdb, self.store.list("/pods", pdb["metadata"]["namespace"]), self.store
        )
        conds = copy.deepcopy((pdb.get("status") or {}).get("conditions") or [])
        reason = "SufficientPods" if allowed else "InsufficientPods"
        set_cond(conds, "DisruptionAllowed", "True" if allowed else "False", reason, "", probe=True)
        for c in conds:
            c.pop("lastProbeTime", None)
            c["observedGeneration"] = pdb["metadata"].get("generation", 1)
        status = {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": conds,
        }
        self.write(res, pdb, dict(pdb, status=status))

    def gc(self):
        if self.store.deletions == self.seen_deletions:
            return
        self.seen_deletions = self.store.deletions
        for res in {discovery.rkey(r): r for r in discovery.RESOURCES}.values():
            for obj in self.store.list(discovery.rkey(res)):
                refs = obj["metadata"].get("ownerReferences")
                if refs and not any(self.store.exists_uid(r.get("uid")) for r in refs):
                    self.api.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
