"""The official kubernetes Python client against the emulated server."""

import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from .conftest import wait_for

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "api", "labels": {"app": "api"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "api"}},
        "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "ghcr.io/x/api:1.0"}]},
        },
    },
}


@pytest.fixture(scope="module")
def api_client(kubeconfig):
    return config.new_client_from_config(config_file=kubeconfig)


def test_deployment_crud(api_client):
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    created = apps.create_namespaced_deployment("shop", DEPLOYMENT)
    assert created.metadata.generation == 1 and created.metadata.uid
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment("shop", DEPLOYMENT)
    assert err.value.status == 409

    def ready():
        d = apps.read_namespaced_deployment("api", "shop")
        return d.status.ready_replicas == 2 and d.status.observed_generation == d.metadata.generation

    wait_for(ready, what="deployment api ready")
    pods = core.list_namespaced_pod("shop", label_selector="app=api")
    assert len(pods.items) == 2 and all(p.status.phase == "Running" for p in pods.items)
    assert all(p.status.container_statuses[0].ready for p in pods.items)

    patched = apps.patch_namespaced_deployment(
        "api",
        "shop",
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api", "env": [{"name": "MODE", "value": "x"}]}]}
                }
            }
        },
    )
    assert patched.metadata.generation == 2
    assert patched.spec.template.spec.containers[0].image == "ghcr.io/x/api:1.0"
    assert patched.spec.template.spec.containers[0].env[0].name == "MODE"
    scale = apps.patch_namespaced_deployment_scale("api", "shop", {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("api", "shop").status.available_replicas == 3
            and len(core.list_namespaced_pod("shop", label_selector="app=api").items) == 3
        ),
        what="3 pods",
    )

    apps.delete_namespaced_deployment("api", "shop")
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("api", "shop")
    assert err.value.status == 404
    wait_for(
        lambda: (
            not core.list_namespaced_pod("shop", label_selector="app=api").items
            and not apps.list_namespaced_replica_set("shop", label_selector="app=api").items
        ),
        what="garbage collection of replicasets and pods",
    )


def test_watch_with_selector_and_timeout(api_client):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("shop", {"metadata": {"name": "seen-0", "labels": {"w": "yes"}}})
    events = []

    def consume():
        for event in watch.Watch().stream(
            core.list_namespaced_config_map, "shop", label_selector="w=yes", timeout_seconds=3
        ):
            events.append((event["type"], event["object"].metadata.name))

    thread = threading.Thread(target=consume)
    thread.start()
    wait_for(lambda: events, what="initial ADDED event")
    core.create_namespaced_config_map("shop", {"metadata": {"name": "ignored", "labels": {"w": "no"}}})
    core.create_namespaced_config_map("shop", {"metadata": {"name": "seen-1", "labels": {"w": "yes"}}})
    core.patch_namespaced_config_map("seen-1", "shop", {"data": {"k": "v"}})
    core.delete_namespaced_config_map("seen-1", "shop")
    thread.join(timeout=10)
    assert not thread.is_alive(), "watch did not honour timeoutSeconds"
    assert events == [("ADDED", "seen-0"), ("ADDED", "seen-1"), ("MODIFIED", "seen-1"), ("DELETED", "seen-1")]


def test_lease_optimistic_concurrency(api_client):
    coord = client.CoordinationV1Api(api_client)
    lease = coord.create_namespaced_lease(
        "shop", {"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    )
    stale = lease.metadata.resource_version
    lease.spec.holder_identity = "b"
    updated = coord.replace_namespaced_lease("lock", "shop", lease)
    assert int(updated.metadata.resource_version) > int(stale)
    lease.spec.holder_identity = "c"
    lease.metadata.resource_version = stale
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("lock", "shop", lease)
    assert err.value.status == 409 and "Conflict" in err.value.body
    assert coord.read_namespaced_lease("lock", "shop").spec.holder_identity == "b"
