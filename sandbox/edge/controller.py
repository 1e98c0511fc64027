"""The ingress controller: watches the cluster, keeps nginx's configuration and Prometheus' targets.

It talks to the (emulated) Kubernetes API as a controller does, with the sandbox kubeconfig (HTTPS,
the sandbox's CA, a bearer token): for each kind it needs, a list and then a watch from that
list's resourceVersion, and a new list when the watch ends (the server ends it every few minutes),
when the API says that version is gone (410) or when it cannot be reached. An idle cluster costs a few idle
connections. After a change it renders the configuration, and only when the text differs from
what nginx runs it checks it (``nginx -t``) and reloads nginx (SIGHUP: new workers take the new
configuration, the old ones finish the requests they have, so no request in flight is cut).

nginx runs as this process's child, in its own prefix in the state folder, started before the API
is reachable (it answers 404 until the first full list), so ``sandbox up`` does not depend on the
order its parts start in. SIGTERM or SIGINT stops nginx and the controller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.edge import routes

log = logging.getLogger("sandbox.edge")

WATCHED = {
    "ingresses": "/apis/networking.k8s.io/v1/ingresses",
    "services": "/api/v1/services",
    "endpoints": "/api/v1/endpoints",
    "pods": "/api/v1/pods",
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
}
WATCH_SECONDS = 300  # each watch is renewed after this, from the last resourceVersion
RETRY_SECONDS = 1.0
SETTLE_SECONDS = 0.2  # changes arriving together (a rollout, a manifest applied) make one reload


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer(threading.Thread):
    """A cache of one kind, all namespaces, kept by list+watch; sets ``changed`` on every event."""

    def __init__(self, kind: str, path: str, kubeconfig: Path, changed: threading.Event):
        super().__init__(name=f"watch-{kind}", daemon=True)
        self.kind, self.path, self.kubeconfig, self.changed = kind, path, kubeconfig, changed
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = threading.Event()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects.values())

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                kube = self._client()
                version = self._list(kube)
                failures = 0
                began = time.monotonic()
                # Until the server ends it (after timeoutSeconds, or when it stops); then a new list,
                # so an API server that restarted (new resourceVersions) is not watched from an
                # old version, and the cache is resynced every few minutes, as informers do.
                self._watch(kube, version)
                if time.monotonic() - began < RETRY_SECONDS:
                    self.stopping.wait(RETRY_SECONDS)
            except Gone:
                continue
            except Exception as exc:  # the API unreachable, a kubeconfig not written yet: retry
                failures += 1
                if failures in (1, 30) or failures % 300 == 0:
                    log.warning("%s: %s; retrying every %ss", self.kind, exc, RETRY_SECONDS)
                self.stopping.wait(RETRY_SECONDS)

    def _client(self):
        from ansible_collections.emergency.ops.plugins.module_utils.kube import Kube

        if not self.kubeconfig.exists():
            raise FileNotFoundError(f"no kubeconfig at {self.kubeconfig} yet")
        return Kube(str(self.kubeconfig), None, None, timeout=15)

    def _list(self, kube) -> str:
        document = kube.request("GET", self.path)
        objects = {routes._key(o): o for o in document.get("items") or []}
        with self.lock:
            self.objects = objects
        self.synced.set()
        self.changed.set()
        return str((document.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, kube, version: str) -> str:
        from kubernetes.watch.watch import iter_resp_lines

        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        if version:
            query["resourceVersion"] = version
        method, url, headers, body, post = kube.api.param_serialize(
            "GET",
            self.path,
            query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        # The REST client does not read the body: the events are read as they arrive.
        timeout = (5, WATCH_SECONDS + 30)
        response = kube.api.call_api(method, url, headers, body, post, _request_timeout=timeout)
        raw = response.response
        try:
            if response.status != 200:
                raise RuntimeError(f"watch {self.path}: HTTP {response.status}")
            for line in iter_resp_lines(raw):
                if self.stopping.is_set():
                    break
                event = json.loads(line)
                version = self._apply(event) or version
        finally:
            raw.release_conn()
        return version

    def _apply(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch {self.path}: {obj.get('message') or obj}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return version
        with self.lock:
            if kind == "DELETED":
                self.objects.pop(routes._key(obj), None)
            else:
                self.objects[routes._key(obj)] = obj
        self.changed.set()
        return version


def write_atomically(path: Path, text: str) -> None:
    """Readers (nginx -t, Prometheus' file discovery) see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Controller:
    def __init__(self, state: Path, port: int, kubeconfig: Path, targets: Path, nginx: str):
        self.port, self.kubeconfig, self.targets, self.nginx = port, kubeconfig, targets, nginx
        self.paths = routes.Paths(state / "ingress", state / "logs", os.geteuid() == 0)
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.informers = [Informer(k, p, kubeconfig, self.changed) for k, p in WATCHED.items()]
        self.process: subprocess.Popen | None = None
        self.reloads = 0

    # -- nginx ---------------------------------------------------------------------------------
    def _nginx(self, *args: str, config: Path | None = None) -> list[str]:
        return [
            self.nginx,
            "-p",
            f"{self.paths.prefix}/",
            "-c",
            str(config or self.paths.config),
            "-e",
            str(self.paths.error_log),  # before the config is read, too (else /var/log/nginx)
            *args,
        ]

    def _stop_leftover_nginx(self) -> None:
        """An nginx of an earlier controller that was killed still holds the port: stop it."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.paths.pid.read_text().strip())
            if str(self.paths.prefix) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)

    def start_nginx(self, text: str) -> None:
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.paths.prefix / "temp" / name).mkdir(parents=True, exist_ok=True)
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self._stop_leftover_nginx()
        write_atomically(self.paths.config, text)
        self.process = subprocess.Popen(self._nginx(), stdin=subprocess.DEVNULL)
        log.info("nginx started (pid %s) on 127.0.0.1:%s", self.process.pid, self.port)

    def apply(self, text: str) -> bool:
        """Installs and loads a new configuration when it differs; True when nginx reloaded."""
        if self.paths.config.exists() and self.paths.config.read_text() == text:
            return False
        candidate = self.paths.prefix / "nginx.conf.new"
        write_atomically(candidate, text)
        check = subprocess.run(self._nginx("-t", "-q", config=candidate), capture_output=True, text=True)
        if check.returncode != 0:
            log.error("generated configuration refused, nginx keeps the last one: %s", check.stderr.strip())
            return False
        os.replace(candidate, self.paths.config)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        self.reloads += 1
        log.info("configuration changed: nginx reloaded (%d)", self.reloads)
        return True

    # -- main loop -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {i.kind: i.items() for i in self.informers}

    def sync(self) -> None:
        snapshot = self.snapshot()
        self.apply(routes.render(snapshot, self.port, self.paths))
        targets = json.dumps(routes.scrape_targets(snapshot["pods"]), indent=1) + "\n"
        if not self.targets.exists() or self.targets.read_text() != targets:
            write_atomically(self.targets, targets)

    def run(self) -> int:
        self.start_nginx(routes.render({}, self.port, self.paths))
        for informer in self.informers:
            informer.start()
        while not self.stopping.is_set():
            if self.process is not None and self.process.poll() is not None:
                log.error("nginx exited with code %s; see %s", self.process.returncode, self.paths.error_log)
                return 1
            if not self.changed.wait(1.0):
                continue
            self.stopping.wait(SETTLE_SECONDS)
            self.changed.clear()
            # Until every kind is listed once, a partial view would route (or refuse) wrongly.
            if all(i.synced.is_set() for i in self.informers):
                try:
                    self.sync()
                except Exception:
                    log.exception("could not apply the cluster's state")
        return 0

    def stop(self, *_: object) -> None:
        self.stopping.set()
        for informer in self.informers:
            informer.stopping.set()

    def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: requests in flight finish
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
