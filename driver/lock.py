"""The namespace lock, held by the driver while a procedure runs.

The driver takes the ``driver-lock`` Lease of every namespace the inventory targets before it starts
the playbook (a lock held by another incident refuses the run with exit 3 before anything runs),
renews it while the playbook runs, and releases it at the end, also when the playbook was cancelled
or killed. The Lease lasts LEASE_SECONDS without renewal, so the lock of a driver that was itself
killed frees itself quickly. The playbooks' ``lock`` role does the same for runs without the driver
(AWX); under the driver it is told the lock is held and skips, saving two module starts per run.
"""

from __future__ import annotations

import threading

LEASE_NAME = "driver-lock"
LEASE_SECONDS = 60
RENEW_EVERY = 15


def _kube_module():
    from ansible_collections.emergency.ops.plugins.module_utils import kube

    return kube


def _lease_module():
    _kube_module()
    from ansible_collections.emergency.ops.plugins.module_utils import lease

    return lease


class LockRefused(Exception):
    """Another incident holds the lock of one of the namespaces."""


class LockUnreachable(Exception):
    """The Kubernetes API of one of the namespaces cannot be reached."""


def take(kubeconfig: str | None, context: str | None, namespace: str, holder: str, check: bool) -> None:
    """Takes (or, in check mode, only checks) one namespace's lock."""
    lease = _lease_module()
    try:
        kube = _kube_module().Kube(kubeconfig or None, context or None, namespace)
        lease.acquire(kube, LEASE_NAME, holder, LEASE_SECONDS, check_mode=check)
    except lease.LockHeld as exc:
        raise LockRefused(str(exc)) from exc
    except Exception as exc:  # no kubeconfig, connection refused, TLS, 5xx
        raise LockUnreachable(f"namespace {namespace}: cannot take the lock: {exc}") from exc


class LeaseKeeper:
    """Renews the Lease every RENEW_EVERY seconds while it is held by this incident."""

    def __init__(
        self,
        kubeconfig: str | None,
        context: str | None,
        namespace: str,
        holder: str,
        interval: float = RENEW_EVERY,
    ):
        self.args = (kubeconfig or None, context or None, namespace)
        self.holder = holder
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def start(self) -> LeaseKeeper:
        self.thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stops renewing and, unless told otherwise, releases the Lease if this incident still holds
        it: the playbook releases it itself, but not when it was cancelled or killed mid-run."""
        self.stop_event.set()
        self.thread.join(timeout=5)
        if release:
            try:
                kube = _kube_module().Kube(*self.args)
                _lease_module().release(kube, LEASE_NAME, self.holder, kube.get_or_none("Lease", LEASE_NAME))
            except Exception:  # unreachable now: the Lease expires by itself within LEASE_SECONDS
                pass

    def _loop(self) -> None:
        kube_module = None
        while not self.stop_event.wait(self.interval):
            try:
                kube_module = kube_module or _kube_module()
                kube = kube_module.Kube(*self.args)
                lease = kube.get_or_none("Lease", LEASE_NAME)
                if lease and lease.get("spec", {}).get("holderIdentity") == self.holder:
                    kube.patch(
                        "Lease",
                        LEASE_NAME,
                        {"spec": {"renewTime": kube_module.micro_time()}},
                        patch_type="merge",
                    )
            except Exception:  # a missed renewal is retried; the Lease outlives several of them
                continue


def holder(kubeconfig: str | None, context: str | None, namespace: str) -> str | None:
    """The incident holding the lock now, if any (for messages and tests)."""
    kube = _kube_module().Kube(kubeconfig or None, context or None, namespace)
    lease = kube.get_or_none("Lease", LEASE_NAME)
    return (lease or {}).get("spec", {}).get("holderIdentity") or None


class LeaseKeepers:
    """One LeaseKeeper per namespace: a fleet inventory has one namespace (and one lock) per host."""

    def __init__(self, keepers: list[LeaseKeeper]):
        self.keepers = keepers

    def start(self) -> LeaseKeepers:
        for keeper in self.keepers:
            keeper.start()
        return self

    def stop(self, release: bool = True) -> None:
        for keeper in self.keepers:
            keeper.stop(release)
