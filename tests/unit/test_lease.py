"""The lock's release survives a renewal that lands between its read and its delete."""

from __future__ import annotations

from ansible_collections.emergency.ops.plugins.module_utils.kube import KubeError
from ansible_collections.emergency.ops.plugins.module_utils.lease import release


def lease(holder: str, version: int) -> dict:
    return {"metadata": {"resourceVersion": str(version)}, "spec": {"holderIdentity": holder}}


class RenewedOnce:
    """A Lease the driver renews (new resourceVersion) just before the first delete arrives."""

    def __init__(self, holder: str):
        self.current = lease(holder, 2)
        self.deleted_versions: list[str] = []

    def delete(self, kind, name, resource_version=None):
        if resource_version != self.current["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        self.deleted_versions.append(resource_version)
        self.current = None

    def get_or_none(self, kind, name):
        return self.current


def test_release_retries_after_a_concurrent_renewal():
    kube = RenewedOnce("INC-1")
    assert release(kube, "driver-lock", "INC-1", lease("INC-1", 1)) == ""
    assert kube.deleted_versions == ["2"] and kube.current is None


def test_release_leaves_another_holder_alone():
    kube = RenewedOnce("INC-OTHER")
    assert release(kube, "driver-lock", "INC-1", lease("INC-OTHER", 2)) == "INC-OTHER"
    assert kube.deleted_versions == [] and kube.current is not None


def test_release_of_a_lock_already_gone_is_quiet():
    kube = RenewedOnce("INC-1")
    kube.current = None
    assert release(kube, "driver-lock", "INC-1", None) == ""
