"""Unit tests for the patch formats and selectors."""

import pytest

from sandbox.kubeapi.patch import PatchError, json_patch, merge_patch, strategic_merge
from sandbox.kubeapi.store import (
    APIError,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)

POD_SPEC = {
    "containers": [
        {
            "name": "app",
            "image": "app:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
        {"name": "sidecar", "image": "side:1"},
    ],
    "volumes": [{"name": "data", "emptyDir": {}}],
    "tolerations": [{"key": "a", "operator": "Exists"}],
}


def test_merge_patch_rfc7386():
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": None, "y": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"y": 1}}
    assert merge_patch({"a": 1}, ["x"]) == ["x"]
    assert target["c"] == {"d": "e", "f": "g"}  # input untouched


def test_strategic_merge_keeps_other_containers_and_env():
    patch = {
        "containers": [{"name": "app", "env": [{"name": "B", "value": "debug"}, {"name": "C", "value": "3"}]}]
    }
    out = strategic_merge(POD_SPEC, patch)
    assert [c["name"] for c in out["containers"]] == ["app", "sidecar"]
    assert out["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "debug"},
        {"name": "C", "value": "3"},
    ]
    assert out["containers"][0]["image"] == "app:1"


def test_strategic_merge_keys_and_directives():
    out = strategic_merge(
        POD_SPEC,
        {
            "containers": [
                {"name": "sidecar", "$patch": "delete"},
                {
                    "name": "app",
                    "ports": [{"containerPort": 8080}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                },
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "tolerations": [{"key": "b", "operator": "Exists"}],
        },
    )
    assert [c["name"] for c in out["containers"]] == ["app"]
    app = out["containers"][0]
    assert app["ports"] == [{"containerPort": 80}, {"containerPort": 8080}]
    assert app["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]
    assert [v["name"] for v in out["volumes"]] == ["data", "cache"]
    assert out["tolerations"] == [{"key": "b", "operator": "Exists"}]  # no merge key: replaced
    replaced = strategic_merge(
        POD_SPEC, {"volumes": [{"$patch": "replace"}, {"name": "only", "emptyDir": {}}]}
    )
    assert replaced["volumes"] == [{"name": "only", "emptyDir": {}}]
    assert strategic_merge({"a": {"b": 1}, "c": 2}, {"a": {"$patch": "delete"}}) == {"c": 2}
    assert strategic_merge({"a": {"b": 1, "c": 2}}, {"a": {"$patch": "replace", "d": 3}}) == {"a": {"d": 3}}


def test_strategic_merge_ignores_bookkeeping_directives():
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    patch = {
        "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
        "$setElementOrder/containers": [{"name": "app"}],
        "metadata": {"labels": {"x": None}},
    }
    out = strategic_merge({"strategy": strategy, "metadata": {"labels": {"x": "1", "y": "2"}}}, patch)
    assert out == {"strategy": {"type": "Recreate"}, "metadata": {"labels": {"y": "2"}}}
    out = strategic_merge({"finalizers": ["a", "b"]}, {"$deleteFromPrimitiveList/finalizers": ["a"]})
    assert out == {"finalizers": ["b"]}
    conds = [{"type": "Ready", "status": "False"}, {"type": "Other", "status": "True"}]
    out = strategic_merge({"conditions": conds}, {"conditions": [{"type": "Ready", "status": "True"}]})
    assert out["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "True"}]


def test_json_patch_rfc6902():
    doc = {"a": {"b": [1, 2, 3]}, "annotations": {"k/x": "1"}}
    out = json_patch(
        doc,
        [
            {"op": "test", "path": "/a/b/0", "value": 1},
            {"op": "add", "path": "/a/b/-", "value": 4},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "replace", "path": "/annotations/k~1x", "value": "2"},
            {"op": "copy", "from": "/a/b", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
        ],
    )
    assert out == {"a": {"b": [0, 2, 3, 4]}, "annotations": {"k/x": "2"}, "d": [0, 2, 3, 4]}
    assert doc["a"]["b"] == [1, 2, 3]
    with pytest.raises(PatchError) as err:
        json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": 9}])
    assert err.value.invalid
    for bad in ([{"op": "replace", "path": "/missing", "value": 1}], [{"op": "remove", "path": "/a/b/7"}]):
        with pytest.raises(PatchError):
            json_patch(doc, bad)
    with pytest.raises(PatchError):
        json_patch(doc, {"op": "add"})


def test_label_selectors():
    labels = {"app": "web", "tier": "front", "env": "prod"}
    cases = {
        "app=web": True,
        "app==web": True,
        "app!=web": False,
        "app!=db": True,
        "missing!=x": True,
        "tier in (front,back)": True,
        "tier notin (front)": False,
        "env": True,
        "!env": False,
        "!missing": True,
        "app=web,tier in (back)": False,
        "": True,
        "app = web , env": True,
    }
    for text, expected in cases.items():
        assert labels_match(parse_label_selector(text), labels) is expected, text
    with pytest.raises(APIError):
        parse_label_selector("app in (")
    assert (
        selector_string(
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
            }
        )
        == "app=web,tier in (a,b)"
    )


def test_field_selectors():
    pod = {
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running"},
    }
    assert fields_match(parse_field_selector("spec.nodeName=node-1,status.phase!=Failed"), pod)
    assert not fields_match(parse_field_selector("metadata.name==q"), pod)
    assert fields_match(parse_field_selector("spec.missing="), pod)
