"""Resource semantics shared by the HTTP layer, ``load()`` and the controllers:
create/update/patch/delete with defaulting, validation, status subresources,
generation tracking, scale, eviction and pod disruption budgets."""

import base64
import copy
import json
import math
import random
import re
import time
import uuid

import yaml

from . import discovery
from .patch import PatchError, json_patch, merge_patch, strategic_merge
from .store import APIError, labels_match, now_iso, selector_from_spec, selector_string

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
ALNUM = "bcdfghjklmnpqrstvwxz2456789"
WORKLOADS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
NS = discovery.BY_PATH[("", "v1", "namespaces")]


def rand_suffix(n=5):
    return "".join(random.choices(ALNUM, k=n))


def qualified(res):
    return f"{res.plural}.{res.group}" if res.group else res.plural


def kind_name(res):
    return f"{res.kind}.{res.group}" if res.group else res.kind


def not_found(res, name):
    return APIError(
        404,
        "NotFound",
        f'{qualified(res)} "{name}" not found',
        {"name": name, "group": res.group, "kind": res.plural},
    )


def conflict(res, name):
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(res)} "{name}": '
        "the object has been modified; please apply your changes to the latest version "
        "and try again",
        {"name": name, "group": res.group, "kind": res.plural},
    )


def invalid(res, name, field, message):
    return APIError(
        422,
        "Invalid",
        f'{kind_name(res)} "{name}" is invalid: {field}: {message}',
        {
            "name": name,
            "group": res.group,
            "kind": res.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
        },
    )


def int_or_percent(value, total, round_up):
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1] or 0) * total / 100.0
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def pod_ready(pod):
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _controller_ref(meta):
    return next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)


_OWNER_KEYS = {"ReplicaSet": "apps/replicasets", "StatefulSet": "apps/statefulsets"}


def _expected_pods(store, ns, matched):
    """How many pods the budget's pods' controllers want, as Kubernetes' disruption controller counts them.

    Counting the pods that exist instead would let parallel evictions through: between an eviction and
    the controller's replacement, one pod fewer is expected, and one more disruption looks allowed.
    """
    scales, uncontrolled = {}, 0
    for pod in matched:
        ref = _controller_ref(pod["metadata"]) or {}
        key = _OWNER_KEYS.get(ref.get("kind"))
        owner = key and store.get(key, ns, ref.get("name"))
        if owner and key == "apps/replicasets":
            up = _controller_ref(owner["metadata"]) or {}
            if up.get("kind") == "Deployment":
                owner = store.get("apps/deployments", ns, up.get("name")) or owner
        if not owner:
            uncontrolled += 1
            continue
        scales[owner["metadata"]["uid"]] = int((owner.get("spec") or {}).get("replicas", 1))
    return sum(scales.values()) + uncontrolled


def pdb_status(pdb, pods, store):
    """(expected, healthy, desired, allowed) for a PodDisruptionBudget over the namespace's pods."""
    reqs = selector_from_spec(pdb.get("spec", {}).get("selector"))
    matched = [p for p in pods if reqs and labels_match(reqs, p["metadata"].get("labels"))]
    healthy = sum(1 for p in matched if pod_ready(p))
    spec = pdb.get("spec", {})
    min_available = spec.get("minAvailable", 1)
    if spec.get("maxUnavailable") is None and not str(min_available).endswith("%"):
        # an integer minAvailable is checked against the pods alone, as in Kubernetes
        return len(matched), healthy, int(min_available), max(0, healthy - int(min_available))
    expected = _expected_pods(store, pdb["metadata"]["namespace"], matched)
    if spec.get("maxUnavailable") is not None:
        desired = max(0, expected - int_or_percent(spec["maxUnavailable"], expected, True))
    else:
        desired = int_or_percent(min_available, expected, True)
    return expected, healthy, desired, max(0, healthy - desired)


def _default_pod_spec(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            tag = str(c.get("image", "")).rsplit("/", 1)[-1].partition(":")[2]
            c.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
            for port in c.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


class API:
    def __init__(self, store):
        self.store = store
        self._ips = 0
        self.kubelet = None  # set by the server: pods with processes are deleted gracefully

    # ------------------------------------------------------------ helpers
    @staticmethod
    def resource(group, version, plural):
        res = discovery.BY_PATH.get((group, version, plural))
        if res is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        return res

    @staticmethod
    def view(res, obj):
        return dict(obj, apiVersion=discovery.api_version(res), kind=res.kind)

    def get(self, res, ns, name):
        obj = self.store.get(discovery.rkey(res), ns if res.namespaced else "", name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def _check(self, res, obj, ns):
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise APIError(400, "BadRequest", "the request body must be a JSON/YAML object")
        want = discovery.api_version(res)
        if obj.get("apiVersion") not in (None, want) and not (
            res.kind == "HorizontalPodAutoscaler" and obj["apiVersion"].startswith("autoscaling/")
        ):
            raise APIError(
                400,
                "BadRequest",
                f"the API version in the data ({obj['apiVersion']}) does "
                f"not match the expected API version ({want})",
            )
        if obj.get("kind") not in (None, res.kind):
            raise APIError(
                400,
                "BadRequest",
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({res.kind})",
            )
        obj.update(apiVersion=want, kind=res.kind)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if ns and meta.get("namespace") not in (None, "", ns):
                raise APIError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        return meta

    # ------------------------------------------------------------ verbs
    def create(self, res, ns, body, dry_run=False, implicit_namespace=False):
        obj = copy.deepcopy(body)
        meta = self._check(res, obj, ns)
        if res.kind == "Pod":
            self._admit_service_account(obj)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + rand_suffix()
        with self.store.lock:
            if res.namespaced and self.store.get("/namespaces", "", meta["namespace"]) is None:
                if not implicit_namespace:
                    raise not_found(NS, meta["namespace"])
                self.create(NS, None, {"metadata": {"name": meta["namespace"]}})
            if self.store.get(discovery.rkey(res), meta.get("namespace"), meta.get("name", "")):
                raise APIError(
                    409,
                    "AlreadyExists",
                    f'{qualified(res)} "{meta["name"]}" already exists',
                    {"name": meta["name"], "group": res.group, "kind": res.plural},
                )
            for key in ("resourceVersion", "deletionTimestamp", "managedFields", "selfLink"):
                meta.pop(key, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
            if "status" in res.subresources and res.kind != "Node":
                obj.pop("status", None)
            self._default(res, obj)
            self._validate(res, obj, None)
            if dry_run:
                return self.view(res, obj)
            self.store.put(discovery.rkey(res), obj)
            if res.kind == "Namespace":
                self.create(
                    discovery.BY_PATH[("", "v1", "serviceaccounts")],
                    meta["name"],
                    {"metadata": {"name": "default"}},
                )
            return self.view(res, obj)

    def update(self, res, ns, name, body, sub=None, dry_run=False):
        with self.store.lock:
            old = self.get(res, ns, name)
            obj = copy.deepcopy(body)
            if sub == "scale":
                return self._scale_write(res, old, obj, dry_run)
            meta = self._check(res, obj, ns)
            if meta.get("name") not in (None, name):
                raise APIError(
                    400,
                    "BadRequest",
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})",
                )
            return self._save(res, old, obj, sub, dry_run)

    def patch(self, res, ns, name, content_type, raw, sub=None, dry_run=False):
        ctype = (content_type or "").split(";")[0].strip()
        try:
            patch = (yaml.safe_load if ctype == "application/apply-patch+yaml" else json.loads)(
                raw or b"null"
            )
        except (ValueError, yaml.YAMLError) as exc:
            raise APIError(400, "BadRequest", f"error decoding patch: {exc}") from None
        with self.store.lock:
            if (
                ctype == "application/apply-patch+yaml"
                and self.store.get(discovery.rkey(res), ns if res.namespaced else "", name) is None
                and not sub
            ):
                return self.create(
                    res,
                    ns,
                    dict(patch or {}, metadata=dict((patch or {}).get("metadata") or {}, name=name)),
                    dry_run,
                ), 201
            old = self.get(res, ns, name)
            current = self.scale_of(res, old) if sub == "scale" else self.view(res, copy.deepcopy(old))
            try:
                if ctype == "application/json-patch+json":
                    patched = json_patch(current, patch)
                elif ctype == "application/strategic-merge-patch+json":
                    if not isinstance(patch, dict):
                        raise PatchError("a strategic merge patch must be an object")
                    patched = strategic_merge(current, patch)
                elif ctype in ("application/merge-patch+json", "application/apply-patch+yaml"):
                    patched = merge_patch(current, patch)
                else:
                    raise APIError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media "
                        "types include: application/json-patch+json, application/merge-patch"
                        "+json, application/apply-patch+yaml, application/strategic-merge-"
                        "patch+json",
                    )
            except PatchError as exc:
                raise (
                    APIError(422, "Invalid", str(exc))
                    if exc.invalid
                    else APIError(400, "BadRequest", str(exc))
                ) from None
            if not isinstance(patched, dict):
                raise APIError(400, "BadRequest", "the patch must produce an object")
            if sub == "scale":
                return self._scale_write(res, old, patched, dry_run), 200
            meta = self._check(res, patched, ns)
            if meta.get("name") != name:
                raise APIError(400, "BadRequest", "metadata.name cannot be changed by a patch")
            return self._save(res, old, patched, sub, dry_run), 200

    def _save(self, res, old, new, sub, dry_run):
        meta, old_meta = new["metadata"], old["metadata"]
        if meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            raise conflict(res, old_meta["name"])
        if sub == "status":
            new = dict(copy.deepcopy(old), status=new.get("status"))
            meta = new["metadata"]
        elif "status" in res.subresources:
            new["status"] = copy.deepcopy(old.get("status"))
        if new.get("status") is None:
            new.pop("status", None)
        for key in ("uid", "creationTimestamp", "name", "namespace", "generation", "resourceVersion"):
            if key in old_meta:
                meta[key] = old_meta[key]
        meta.pop("managedFields", None)
        self._default(res, new)
        self._validate(res, new, old)
        if new.get("spec") != old.get("spec"):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if new == dict(old, apiVersion=new["apiVersion"], kind=new["kind"]) or dry_run:
            return self.view(res, new)
        return self.view(res, self.store.put(discovery.rkey(res), new, old))

    def delete(self, res, ns, name, options=None, dry_run=False):
        options = options or {}
        with self.store.lock:
            old = self.get(res, ns, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") not in (None, old["metadata"]["uid"]) or pre.get("resourceVersion") not in (
                None,
                old["metadata"]["resourceVersion"],
            ):
                raise conflict(res, name)
            if dry_run:
                return self.view(res, old)
            uid = old["metadata"]["uid"]
            if res.kind == "Namespace":
                for other in discovery.RESOURCES:
                    if other.namespaced:
                        for obj in self.store.list(discovery.rkey(other), name):
                            self.store.remove(discovery.rkey(other), name, obj["metadata"]["name"])
            if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
                self._orphan(uid)
            if res.kind == "Pod" and self.kubelet is not None and self.kubelet.graceful(old):
                marked = self._delete_gracefully(res, old, options)
                if marked is not None:
                    return marked
            return self.view(
                res, self.store.remove(discovery.rkey(res), old["metadata"].get("namespace"), name)
            )

    def _admit_service_account(self, pod):
        """The ServiceAccount admission plugin: a pod's service account must exist in its namespace."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        ns = meta["namespace"]
        if self.store.get("/serviceaccounts", ns, account) is None and self.store.get("/namespaces", "", ns):
            name = meta.get("name") or meta.get("generateName") or ""
            raise APIError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: error looking up service account {ns}/{account}: '
                f'serviceaccount "{account}" not found',
                {"name": name, "kind": "pods"},
            )

    def _delete_gracefully(self, res, old, options):
        """A pod whose processes run: marked terminating (the kubelet stops it; the controllers remove
        it once its processes are gone). None when it is to go at once (grace period 0)."""
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        grace = max(0, int(grace))
        meta = old["metadata"]
        if grace == 0:
            self.kubelet.kill(old)
            return None
        if meta.get("deletionTimestamp") and grace >= meta.get("deletionGracePeriodSeconds", grace):
            return self.view(res, old)
        new = copy.deepcopy(old)
        deadline = time.time() + grace
        new["metadata"].update(
            deletionTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)),
            deletionGracePeriodSeconds=grace,
        )
        return self.view(res, self.store.put(discovery.rkey(res), new, old))

    def _orphan(self, uid):
        for rkey in list(self.store.objects):
            for obj in self.store.list(rkey):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self.store.put(rkey, new, obj)

    # ------------------------------------------------------------ subresources
    @staticmethod
    def scale_of(res, obj):
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_string(obj.get("spec", {}).get("selector")),
            },
        }

    def _scale_write(self, res, old, scale, dry_run):
        if not isinstance(scale, dict) or not isinstance(scale.get("spec"), dict):
            raise APIError(400, "BadRequest", "the body must be an autoscaling/v1 Scale")
        replicas = scale["spec"].get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(
                res,
                old["metadata"]["name"],
                "spec.replicas",
                f"Invalid value: {replicas!r}: must be greater than or equal to 0",
            )
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        new["metadata"]["resourceVersion"] = rv or old["metadata"]["resourceVersion"]
        return self.scale_of(res, self._save(res, old, new, None, dry_run))

    def evict(self, ns, name, dry_run=False):
        pods = discovery.BY_PATH[("", "v1", "pods")]
        with self.store.lock:
            pod = self.get(pods, ns, name)
            all_pods = self.store.list("/pods", ns)
            for pdb in self.store.list("policy/poddisruptionbudgets", ns):
                reqs = selector_from_spec(pdb.get("spec", {}).get("selector"))
                if not reqs or not labels_match(reqs, pod["metadata"].get("labels")):
                    continue
                _, healthy, desired, allowed = pdb_status(pdb, all_pods, self.store)
                # an unready pod does not count as healthy: evicting it only needs the budget to be met
                if not (allowed > 0 if pod_ready(pod) else healthy >= desired):
                    raise APIError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        {
                            "causes": [
                                {
                                    "reason": "DisruptionBudget",
                                    "message": f"The disruption budget {pdb['metadata']['name']} needs "
                                    f"{desired} healthy pods and has {healthy} currently",
                                }
                            ]
                        },
                    )
            if not dry_run:
                self.delete(pods, ns, name)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # ------------------------------------------------------------ defaulting and validation
    def _default(self, res, obj):
        kind, meta = res.kind, obj["metadata"]
        spec = (
            obj.setdefault("spec", {}) if kind in (*WORKLOADS, "Pod", "Service", "Node") else obj.get("spec")
        )
        if kind == "Namespace":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name")
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        elif kind == "Secret":
            data = obj.setdefault("data", {}) if obj.get("stringData") else obj.get("data")
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")
        elif kind == "Pod":
            _default_pod_spec(spec)
            spec.setdefault("serviceAccountName", "default")
            obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
        elif kind == "Service":
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if "clusterIP" not in spec and spec["type"] != "ExternalName":
                self._ips += 1
                spec["clusterIP"] = f"10.96.{self._ips // 250}.{self._ips % 250 + 2}"
            if spec.get("clusterIP"):
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    port.setdefault("targetPort", port.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        if kind in WORKLOADS and isinstance((spec.get("template") or {}).get("spec"), dict):
            _default_pod_spec(spec["template"]["spec"])
        if kind in WORKLOADS and kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        if kind == "Deployment":
            spec.setdefault("strategy", {"type": "RollingUpdate"})
            if spec["strategy"].get("type", "RollingUpdate") == "RollingUpdate":
                spec["strategy"]["type"] = "RollingUpdate"
                ru = spec["strategy"].setdefault("rollingUpdate", {})
                ru.setdefault("maxSurge", "25%")
                ru.setdefault("maxUnavailable", "25%")
            spec.setdefault("progressDeadlineSeconds", 600)
        if kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            spec.setdefault("serviceName", "")
        if kind == "DaemonSet":
            spec.setdefault(
                "updateStrategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            )
        if kind in WORKLOADS and kind != "ReplicaSet":
            spec.setdefault("revisionHistoryLimit", 10)

    def _validate(self, res, obj, old):
        meta, name = obj["metadata"], obj["metadata"].get("name") or ""
        if not name:
            raise invalid(res, name, "metadata.name", "Required value: name or generateName is required")
        if res.group != "rbac.authorization.k8s.io" and (len(name) > 253 or not NAME_RE.match(name)):
            raise invalid(
                res,
                name,
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                "subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character",
            )
        if "/" in name or "%" in name:
            raise invalid(res, name, "metadata.name", f'Invalid value: "{name}"')
        if not isinstance(meta.get("labels") or {}, dict) or not isinstance(
            meta.get("annotations") or {}, dict
        ):
            raise invalid(res, name, "metadata", "labels and annotations must be string maps")
        spec = obj.get("spec") or {}
        if res.kind in WORKLOADS:
            selector = spec.get("selector")
            if not isinstance(selector, dict) or not (
                selector.get("matchLabels") or selector.get("matchExpressions")
            ):
                raise invalid(res, name, "spec.selector", "Required value")
            template = spec.get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            if not labels_match(selector_from_spec(selector), labels):
                raise invalid(
                    res,
                    name,
                    "spec.template.metadata.labels",
                    f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`",
                )
            if old is not None and selector != (old.get("spec") or {}).get("selector"):
                raise invalid(
                    res, name, "spec.selector", f"Invalid value: {json.dumps(selector)}: field is immutable"
                )
            self._validate_pod_spec(res, name, template.get("spec"), "spec.template.spec")
            if not isinstance(spec.get("replicas", 0), int) or spec.get("replicas", 0) < 0:
                raise invalid(res, name, "spec.replicas", "Invalid value: must be greater than or equal to 0")
        elif res.kind == "Pod":
            self._validate_pod_spec(res, name, spec, "spec")

    @staticmethod
    def _validate_pod_spec(res, name, spec, field):
        containers = (spec or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            raise invalid(res, name, f"{field}.containers", "Required value")
        for i, c in enumerate(containers):
            for key in ("name", "image"):
                if not isinstance(c, dict) or not c.get(key):
                    raise invalid(res, name, f"{field}.containers[{i}].{key}", "Required value")
