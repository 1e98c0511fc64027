"""Resource table and the documents derived from it: discovery and OpenAPI."""

import collections

# groupVersion plural Kind scope(ns|cluster) shortNames categories subresources
_TABLE = """
v1 namespaces Namespace cluster ns - status,finalize
v1 pods Pod ns po all status,log,eviction
v1 services Service ns svc all status
v1 endpoints Endpoints ns ep - -
v1 secrets Secret ns - - -
v1 configmaps ConfigMap ns cm - -
v1 nodes Node cluster no - status
v1 events Event ns ev - -
v1 persistentvolumeclaims PersistentVolumeClaim ns pvc - status
v1 persistentvolumes PersistentVolume cluster pv - status
v1 serviceaccounts ServiceAccount ns sa - -
v1 limitranges LimitRange ns limits - -
v1 resourcequotas ResourceQuota ns quota - status
v1 replicationcontrollers ReplicationController ns rc all status,scale
apps/v1 deployments Deployment ns deploy all status,scale
apps/v1 replicasets ReplicaSet ns rs all status,scale
apps/v1 statefulsets StatefulSet ns sts all status,scale
apps/v1 daemonsets DaemonSet ns ds all status
apps/v1 controllerrevisions ControllerRevision ns - - -
events.k8s.io/v1 events Event ns ev - -
autoscaling/v2 horizontalpodautoscalers HorizontalPodAutoscaler ns hpa all status
autoscaling/v1 horizontalpodautoscalers HorizontalPodAutoscaler ns hpa all status
batch/v1 jobs Job ns - all status
batch/v1 cronjobs CronJob ns cj all status
coordination.k8s.io/v1 leases Lease ns - - -
networking.k8s.io/v1 ingresses Ingress ns ing - status
networking.k8s.io/v1 networkpolicies NetworkPolicy ns netpol - -
networking.k8s.io/v1 ingressclasses IngressClass cluster - - -
policy/v1 poddisruptionbudgets PodDisruptionBudget ns pdb - status
rbac.authorization.k8s.io/v1 roles Role ns - - -
rbac.authorization.k8s.io/v1 rolebindings RoleBinding ns - - -
rbac.authorization.k8s.io/v1 clusterroles ClusterRole cluster - - -
rbac.authorization.k8s.io/v1 clusterrolebindings ClusterRoleBinding cluster - - -
storage.k8s.io/v1 storageclasses StorageClass cluster sc - -
authorization.k8s.io/v1 selfsubjectaccessreviews SelfSubjectAccessReview cluster - - -
"""

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
Resource = collections.namedtuple(
    "Resource", "group version plural kind namespaced short categories subresources"
)


def _parse():
    out = []
    for line in _TABLE.strip().splitlines():
        gv, plural, kind, scope, short, cats, subs = line.split()
        group, _, version = gv.rpartition("/")
        split = lambda s: [] if s == "-" else s.split(",")  # noqa: E731
        out.append(
            Resource(group, version, plural, kind, scope == "ns", split(short), split(cats), split(subs))
        )
    return out


RESOURCES = _parse()
GROUPS = list(dict.fromkeys(r.group for r in RESOURCES if r.group))  # preferred version listed first
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(f"{r.group}/{r.version}" if r.group else r.version, r.kind): r for r in RESOURCES}


def rkey(res):
    """Storage key: versions of one group share storage (autoscaling v1/v2)."""
    return f"{res.group}/{res.plural}"


def api_version(res):
    return f"{res.group}/{res.version}" if res.group else res.version


def api_versions(address):
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def api_group(group):
    versions = [
        {"groupVersion": f"{group}/{v}", "version": v}
        for v in dict.fromkeys(r.version for r in RESOURCES if r.group == group)
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list():
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(g) for g in GROUPS]}


_SUB = {
    "scale": ("autoscaling", "v1", "Scale", ["get", "patch", "update"]),
    "eviction": ("policy", "v1", "Eviction", ["create"]),
    "log": ("", "v1", "Pod", ["get"]),
    "finalize": ("", "v1", "Namespace", ["update"]),
}


def resource_list(group, version):
    resources = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entry = {
            "name": r.plural,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create"] if r.kind == "SelfSubjectAccessReview" else VERBS,
        }
        if r.short:
            entry["shortNames"] = r.short
        if r.categories:
            entry["categories"] = r.categories
        resources.append(entry)
        for sub in r.subresources:
            g, v, kind, verbs = _SUB.get(sub, (group, version, r.kind, ["get", "patch", "update"]))
            item = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }
            if sub in ("scale", "eviction"):
                item.update(group=g, version=v)
            resources.append(item)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _gv_path(group, version):
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _operations(r, v3):
    """Path items whose PATCH operation advertises the fieldValidation parameter.

    kubectl inspects exactly this to decide that the server validates fields,
    which makes it skip client-side schema validation."""
    gvk = {"group": r.group, "version": r.version, "kind": r.kind}
    param = {"name": "fieldValidation", "in": "query", "description": "fieldValidation"}
    param.update({"schema": {"type": "string"}} if v3 else {"type": "string"})
    ok = {"description": "OK"}
    op = {
        "x-kubernetes-group-version-kind": gvk,
        "x-kubernetes-action": "patch",
        "operationId": f"patch{r.kind}",
        "parameters": [param],
        "responses": {"200": ok},
    }
    prefix = "/" + _gv_path(r.group, r.version) + ("/namespaces/{namespace}" if r.namespaced else "")
    get = {
        "x-kubernetes-group-version-kind": gvk,
        "x-kubernetes-action": "get",
        "operationId": f"read{r.kind}",
        "responses": {"200": ok},
    }
    return {f"{prefix}/{r.plural}/{{name}}": {"get": get, "patch": op}}


def openapi_v3_index():
    gvs = dict.fromkeys((r.group, r.version) for r in RESOURCES)
    return {
        "paths": {
            _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash=SANDBOX"}
            for g, v in gvs
        }
    }


def openapi_v3(group, version):
    paths = {}
    for r in RESOURCES:
        if (r.group, r.version) == (group, version):
            paths.update(_operations(r, True))
    if not paths:
        return None
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def openapi_v2():
    paths, definitions = {}, {}
    for r in RESOURCES:
        paths.update(_operations(r, False))
        name = f"io.k8s.sandbox.{r.group or 'core'}.{r.version}.{r.kind}"
        definitions[name] = {
            "type": "object",
            "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": r.kind}],
        }
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "definitions": definitions,
    }
