"""The node side of the emulator: the image catalogue, and real processes for the containers of
catalogued runnable images, with probes, restarts, logs and graceful termination.

A pod whose containers include one of a runnable image is *live*: the kubelet gives each container
port a free host port on 127.0.0.1 and runs each runnable container as one process (its own
process group, killed with the emulator: ``PR_SET_PDEATHSIG``), with the container's environment
resolved as a kubelet does (``exec.process_env``). One supervisor thread per container starts the
process, probes it, restarts it with back-off and stops it; stdout and stderr go, line by line and
time-stamped, to ``<pods dir>/<namespace>_<pod>_<uid>/<container>/<instance>.log``.

The controllers ask for a live pod's state on each pass (``sync``) and write it into the pod's
status; the kubelet never holds the store lock while it waits on a process or a probe (only to
resolve an environment from Secrets and ConfigMaps), and wakes the controllers when something
changed. Events it wants reported are queued and written by the controllers."""

import collections
import contextlib
import ctypes
import datetime
import hashlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from .exec import PROJECT, process_env
from .store import now_iso, parse_time

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
HOST_PORTS = "sandbox.local/host-ports"
PR_SET_PDEATHSIG = 1
STOP_GRACE = 3.0  # seconds a process gets between SIGTERM and SIGKILL when the emulator stops
PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}


# ---------------------------------------------------------------- images
def split_image(image):
    """``(repository, tag)`` of an image reference; Docker Hub's implicit prefixes are dropped."""
    image = str(image or "")
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    repo, tag = (name[:colon], name[colon + 1 :]) if colon > slash else (name, "latest")
    if digest:
        tag = f"@{digest}"
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
            break
    return repo, tag


def is_broken(image):
    return split_image(image)[1] == "broken"


class Catalogue:
    """The images a sandbox registry holds: ``{repository: {"tags", "command", "role"}}``."""

    def __init__(self, repositories):
        self.repositories = {}
        for repo, entry in (repositories or {}).items():
            entry = dict(entry or {})
            entry["tags"] = {str(t) for t in entry.get("tags") or []}
            self.repositories[repo] = entry

    @classmethod
    def load(cls, path):
        with open(path) as fh:
            return cls((yaml.safe_load(fh) or {}).get("repositories"))

    def find(self, image):
        repo, tag = split_image(image)
        entry = self.repositories.get(repo)
        return entry if entry is not None and tag in entry["tags"] else None

    def command(self, image, port):
        """The command line a container of this image runs as, or None (records only)."""
        entry = self.find(image)
        if not entry or not entry.get("command"):
            return None
        repo, tag = split_image(image)
        values = {
            "python": sys.executable,
            "host": HOST,
            "port": str(port or ""),
            "listen": f"{HOST}:{port or ''}",
            "image": str(image),
            "tag": tag,
            "role": str(entry.get("role") or repo.rsplit("/", 1)[-1]),
        }
        return [str(part).format(**values) for part in entry["command"]]


# ---------------------------------------------------------------- helpers
def _free_port(taken):
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise OSError("no free port on 127.0.0.1")


def _stamp(moment=None):
    """RFC 3339 with nanoseconds, as the container runtime writes log lines."""
    moment = datetime.datetime.fromtimestamp(moment or time.time(), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _parse_stamp(text):
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        base = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
        return base.timestamp() + (float(f"0.{frac}") if frac else 0.0)
    except ValueError:
        return 0.0


_prctl = None


def _die_with_parent():
    """Runs in the child between fork and exec: SIGKILL when the emulator's thread that started it
    (a supervisor thread, which outlives its process) or the emulator itself goes away."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _load_prctl():
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _signal_group(proc, sig):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def probe_port(port, container):
    """The containerPort a probe's ``port`` means (a number, or the name of a container port)."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


# ---------------------------------------------------------------- one container
class Container:
    """A container of a live pod and the supervisor thread that runs its process."""

    def __init__(self, pod, spec):
        self.pod, self.kubelet = pod, pod.kubelet
        self.name, self.spec = spec["name"], spec
        self.image = spec.get("image")
        self.runnable = pod.kubelet.catalogue.command(self.image, 0) is not None
        self.proc = None
        self.restarts = 0
        self.instance = -1  # index of the latest log file
        self.state = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state = {}
        self.ready = False
        self.started = False
        self.started_at = None
        self.finished = False  # will not run again (restart policy, pod terminating)
        self.failures = 0  # consecutive crashes, for the back-off
        self.thread = None

    # -------------------------------------------------------- status, under the kubelet lock
    def container_id(self):
        seed = f"{self.pod.uid}/{self.name}/{self.restarts}"
        return "containerd://" + hashlib.sha256(seed.encode()).hexdigest()

    def status(self):
        digest = hashlib.sha256(str(self.image).encode()).hexdigest()
        out = {
            "name": self.name,
            "image": self.image,
            "imageID": f"{split_image(self.image)[0]}@sha256:{digest}" if self.started_at else "",
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.started_at:
            out["containerID"] = self.container_id()
        return out

    def log_path(self, instance):
        return self.pod.folder / self.name / f"{instance}.log"

    # -------------------------------------------------------- the supervisor thread
    def start(self):
        self.thread = threading.Thread(
            target=self.run, name=f"kubelet-{self.pod.name}-{self.name}", daemon=True
        )
        self.thread.start()

    def set(self, **fields):
        with self.kubelet.lock:
            for key, value in fields.items():
                setattr(self, key, value)
        self.kubelet.changed()

    def event(self, reason, message, etype="Normal"):
        self.kubelet.event(self.pod, reason, message, etype, f"spec.containers{{{self.name}}}")

    def run(self):
        try:
            while not self.pod.stopping.is_set():
                self.image = self.pod.container_spec(self.name).get("image")
                self.spec = self.pod.container_spec(self.name)
                if not self.pull():
                    continue
                if not self.runnable:  # a records-only image in a live pod: running, no process
                    self.set(state={"running": {"startedAt": now_iso()}}, ready=True, started_at=now_iso())
                    self.pod.stopping.wait()
                    break
                delay = self.kubelet.backoff(self.failures)
                if delay and self.last_state:
                    message = (
                        f"back-off {delay:g}s restarting failed container={self.name} "
                        f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})"
                    )
                    self.set(state={"waiting": {"reason": "CrashLoopBackOff", "message": message}})
                    self.event(
                        "BackOff",
                        f"Back-off restarting failed container {self.name} in pod "
                        f"{self.pod.name}_{self.pod.namespace}({self.pod.uid})",
                        "Warning",
                    )
                    if self.pod.stopping.wait(delay):
                        break
                if not self.run_once():
                    break
        except Exception:  # the container's state says what happened; the thread must not die silently
            log.exception("kubelet: container %s of %s failed", self.name, self.pod.name)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait()
            with self.kubelet.lock:
                self.finished, self.ready = True, False
            self.kubelet.changed()

    def pull(self):
        """Pulls the image (a catalogue look-up): False, after a back-off wait, when it cannot."""
        self.event("Pulling", f'Pulling image "{self.image}"')
        if self.kubelet.catalogue.find(self.image) is not None:
            self.runnable = self.kubelet.catalogue.command(self.image, 0) is not None
            self.event("Pulled", f'Successfully pulled image "{self.image}" in 1.2s (1.2s including waiting)')
            return True
        self.event(
            "Failed",
            f'Failed to pull image "{self.image}": rpc error: code = NotFound desc = failed to pull and '
            f'unpack image "{self.image}": not found',
            "Warning",
        )
        self.event("Failed", "Error: ErrImagePull", "Warning")
        self.set(
            state={"waiting": {"reason": "ErrImagePull", "message": f'failed to pull image "{self.image}"'}},
            ready=False,
        )
        image = self.image
        if self.wait_spec_change(image, 1.0):
            return False
        message = f'Back-off pulling image "{image}"'
        self.set(state={"waiting": {"reason": "ImagePullBackOff", "message": message}})
        self.event("BackOff", message, "Warning")
        self.event("Failed", "Error: ImagePullBackOff", "Warning")
        while not self.pod.stopping.is_set() and not self.wait_spec_change(image, 0.2):
            pass
        return False

    def wait_spec_change(self, image, seconds):
        """Waits up to ``seconds``; True when the pod stops or the container's image changed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.pod.stopping.wait(0.05) or self.pod.container_spec(self.name).get("image") != image:
                return True
        return False

    def run_once(self):
        """One instance of the container: start, probe, and see it end. False: do not start again."""
        try:
            env = self.kubelet.environment(self.pod, self.spec)
        except ValueError as exc:
            self.set(state={"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}})
            self.event("Failed", f"Error: {exc}", "Warning")
            return not self.pod.stopping.wait(1.0)
        ports = [p.get("containerPort") for p in self.spec.get("ports") or []]
        argv = self.kubelet.catalogue.command(self.image, self.pod.host_ports.get(ports[0]) if ports else 0)
        self.instance += 1
        path = self.log_path(self.instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "ab", buffering=0)  # noqa: SIM115 - closed once both pumps are done
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=str(PROJECT),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, signalled as a whole
                preexec_fn=_die_with_parent,  # only a prctl call, see _die_with_parent
            )
        except OSError as exc:
            out.close()
            self.set(state={"waiting": {"reason": "RunContainerError", "message": str(exc)}})
            self.event("Failed", f"Error: {exc}", "Warning")
            self.failures += 1
            return True
        started = time.time()
        pumps = self.pump(out)
        self.event("Created", f"Created container: {self.name}")
        self.event("Started", f"Started container {self.name}")
        self.set(
            state={"running": {"startedAt": now_iso()}},
            started_at=now_iso(),
            ready=not self.spec.get("readinessProbe"),
        )
        reason = self.supervise()
        code = self.proc.wait()
        for thread in pumps:
            thread.join(timeout=2)
        out.close()
        code = 128 - code if code < 0 else code
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.state.get("running", {}).get("startedAt") or now_iso(),
            "finishedAt": now_iso(),
            "containerID": self.container_id(),
        }
        policy = self.pod.spec.get("restartPolicy", "Always")
        again = not self.pod.stopping.is_set() and (
            policy == "Always" or (policy == "OnFailure" and code != 0) or reason == "changed"
        )
        if time.time() - started >= 2 * self.kubelet.backoff_max:
            self.failures = 0  # it ran long enough: the back-off starts over, as a kubelet's does
        if reason == "changed":
            self.failures = 0
        elif again:
            self.failures += 1
        with self.kubelet.lock:
            self.ready = False
            if again:
                self.restarts += 1
                self.last_state = {"terminated": terminated}
                self.state = {"waiting": {"reason": "ContainerCreating"}}
            else:
                self.state = {"terminated": terminated}
        self.kubelet.changed()
        return again

    def pump(self, out):
        lock = threading.Lock()

        def copy(stream, name):
            for line in iter(stream.readline, b""):
                partial = not line.endswith(b"\n")
                text = line.rstrip(b"\n")
                with lock:
                    out.write(b"%s %s %s %s\n" % (_stamp().encode(), name, b"P" if partial else b"F", text))
            stream.close()

        threads = [
            threading.Thread(target=copy, args=(self.proc.stdout, b"stdout"), daemon=True),
            threading.Thread(target=copy, args=(self.proc.stderr, b"stderr"), daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def supervise(self):
        """Probes the running process until it exits; stops it when the pod stops, the liveness probe
        gives up or the image changes. Returns why it ended: exited, stopped, liveness, changed."""
        readiness = Probe("Readiness", self.spec.get("readinessProbe"), self)
        liveness = Probe("Liveness", self.spec.get("livenessProbe"), self)
        while self.proc.poll() is None:
            if self.pod.stopping.is_set():
                self.event("Killing", f"Stopping container {self.name}")
                self.terminate(self.pod.kill_at)
                return "stopped"
            if self.pod.container_spec(self.name).get("image") != self.image:
                self.event("Killing", f"Container {self.name} definition changed, will be restarted")
                self.terminate(time.monotonic() + self.pod.grace())
                return "changed"
            if readiness.spec:
                ready = readiness.due() is True
                with self.kubelet.lock:
                    was, self.ready = self.ready, ready
                if was != ready:
                    self.kubelet.changed()
            if liveness.due() is False:
                self.event("Killing", f"Container {self.name} failed liveness probe, will be restarted")
                self.terminate(time.monotonic() + self.pod.grace())
                return "liveness"
            time.sleep(0.05)
        return "exited"

    def terminate(self, kill_at):
        """SIGTERM to the process group, SIGKILL at ``kill_at`` (monotonic) if it is still there."""
        with self.kubelet.lock:
            self.ready = False
        self.kubelet.changed()
        _signal_group(self.proc, signal.SIGTERM)
        while self.proc.poll() is None and time.monotonic() < kill_at:
            time.sleep(0.05)
            kill_at = min(kill_at, self.pod.kill_at)  # a later delete may shorten the grace
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGKILL)


class Probe:
    """One probe of a container (httpGet or tcpSocket; exec probes always succeed here)."""

    def __init__(self, kind, spec, container):
        self.kind, self.spec, self.container = kind, spec, container
        self.settings = dict(PROBE_DEFAULTS, **{k: v for k, v in (spec or {}).items() if k in PROBE_DEFAULTS})
        self.next = time.monotonic() + self.settings["initialDelaySeconds"]
        self.successes = self.failures = 0
        self.result = None

    def due(self):
        """The probe's verdict after its thresholds (None: none yet), probing first when it is time."""
        if self.spec and time.monotonic() >= self.next:
            self.next = time.monotonic() + max(self.settings["periodSeconds"], 0.05)
            error = self.check()
            if error is None:
                self.successes, self.failures = self.successes + 1, 0
                if self.successes >= (1 if self.kind == "Liveness" else self.settings["successThreshold"]):
                    self.result = True
            else:
                self.successes, self.failures = 0, self.failures + 1
                self.container.event("Unhealthy", f"{self.kind} probe failed: {error}", "Warning")
                if self.failures >= self.settings["failureThreshold"]:
                    self.result = False
        return self.result

    def check(self):
        """None when the probe passes, else the kubelet's message for the failure."""
        container, spec = self.container, self.spec
        handler = spec.get("httpGet") or spec.get("tcpSocket")
        if handler is None:
            return None
        target = probe_port(handler.get("port"), container.spec)
        port = container.pod.host_ports.get(target) or target
        timeout = self.settings["timeoutSeconds"]
        if "tcpSocket" in spec:
            try:
                socket.create_connection((HOST, port), timeout=timeout).close()
                return None
            except OSError as exc:
                return f"dial tcp {HOST}:{port}: {_reason(exc)}"
        path = handler.get("path") or "/"
        url = f"{(handler.get('scheme') or 'HTTP').lower()}://{HOST}:{port}{path}"
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            headers = {"User-Agent": "kube-probe/1.32", "Accept": "*/*"}
            headers.update({h["name"]: h["value"] for h in handler.get("httpHeaders") or []})
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if 200 <= response.status < 400:
                return None
            return f"HTTP probe failed with statuscode: {response.status}"
        except TimeoutError:
            return f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        except OSError as exc:
            return f'Get "{url}": dial tcp {HOST}:{port}: {_reason(exc)}'
        except http.client.HTTPException as exc:
            return f'Get "{url}": {exc or type(exc).__name__}'
        finally:
            conn.close()


def _reason(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    return str(exc)


# ---------------------------------------------------------------- one pod
class Pod:
    """A live pod: its host ports, its containers, and its termination."""

    def __init__(self, kubelet, pod):
        meta = pod["metadata"]
        self.kubelet, self.uid, self.name, self.namespace = (
            kubelet,
            meta["uid"],
            meta["name"],
            meta["namespace"],
        )
        self.snapshot = pod
        self.spec = pod.get("spec") or {}
        self.folder = kubelet.pods_dir / f"{self.namespace}_{self.name}_{self.uid}"
        self.host_ports = {}
        for c in self.spec.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("containerPort") and p["containerPort"] not in self.host_ports:
                    self.host_ports[p["containerPort"]] = kubelet.allocate_port()
        self.stopping = threading.Event()
        self.kill_at = float("inf")  # monotonic time of the SIGKILL once stopping
        self.containers = {c["name"]: Container(self, c) for c in self.spec.get("containers") or []}

    def container_spec(self, name):
        with self.kubelet.lock:
            spec = self.snapshot.get("spec") or {}
        return next((c for c in spec.get("containers") or [] if c.get("name") == name), {})

    def grace(self):
        return float(self.spec.get("terminationGracePeriodSeconds", 30) or 0)

    def stop(self, grace):
        """Starts the termination (again with a shorter grace if one is given)."""
        self.kill_at = min(self.kill_at, time.monotonic() + max(0.0, grace))
        self.stopping.set()

    def done(self):
        return all(c.finished or c.thread is None for c in self.containers.values())

    def status(self):
        """Container statuses, phase and readiness, as the controllers write them."""
        statuses = [c.status() for c in self.containers.values()]
        ever = any(c.started_at for c in self.containers.values())
        terminated = [s["state"]["terminated"] for s in statuses if "terminated" in s["state"]]
        if terminated and len(terminated) == len(statuses):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in terminated) else "Failed"
        else:
            phase = "Running" if ever else "Pending"
        ready = all(s["ready"] for s in statuses) and not self.stopping.is_set()
        unready = [s["name"] for s in statuses if not s["ready"]]
        return phase, ready, unready, statuses


# ---------------------------------------------------------------- the kubelet
class Kubelet:
    def __init__(self, api, catalogue=None, pods_dir=None, backoff_base=10.0, backoff_max=None):
        self.api, self.store, self.catalogue = api, api.store, catalogue
        self.own_dir = pods_dir is None
        self.pods_dir = Path(pods_dir or tempfile.mkdtemp(prefix="kubeapi-pods-"))
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max if backoff_max is not None else 30 * self.backoff_base)
        self.lock = threading.RLock()
        self.pods = {}  # uid -> Pod
        self.ports = set()
        self.pending = collections.deque()  # events for the controllers to write
        _load_prctl()

    # -------------------------------------------------------- images
    def pullable(self, image):
        if self.catalogue is None:
            return not is_broken(image)
        return self.catalogue.find(image) is not None

    def wants(self, pod):
        """Whether the pod is (or becomes) live: it has a runtime, or a container of a runnable image."""
        if pod["metadata"]["uid"] in self.pods:
            return True
        if self.catalogue is None or pod["metadata"].get("deletionTimestamp"):
            return False
        return any(
            self.catalogue.command(c.get("image"), 0) is not None for c in pod["spec"].get("containers") or []
        )

    def backoff(self, failures):
        """Seconds before the next start after ``failures`` crashes in a row (the first: none)."""
        if failures <= 1:
            return 0.0
        return min(self.backoff_max, self.backoff_base * 2 ** (failures - 2))

    def allocate_port(self):
        port = _free_port(self.ports)
        self.ports.add(port)
        return port

    # -------------------------------------------------------- called by the controllers, store lock held
    def sync(self, pod):
        """The live pod's runtime, created (and its containers started) on first sight."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            runtime = self.pods.get(uid)
            if runtime is None:
                runtime = self.pods[uid] = Pod(self, pod)
                for container in runtime.containers.values():
                    container.start()
            runtime.snapshot = pod
            if pod["metadata"].get("deletionTimestamp"):
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                runtime.stop(runtime.grace() if grace is None else float(grace))
            return runtime

    def sweep(self, present):
        """Stops the runtimes of pods gone from the store; forgets the ones whose processes ended.
        Returns the uids of terminating pods whose processes are all gone."""
        finished = []
        with self.lock:
            for uid, runtime in list(self.pods.items()):
                if uid not in present:
                    if not runtime.stopping.is_set():  # removed without a graceful delete
                        runtime.stop(runtime.grace())
                    if runtime.done():
                        del self.pods[uid]
                        self.ports.difference_update(runtime.host_ports.values())
                elif runtime.stopping.is_set() and runtime.done():
                    finished.append(uid)
        return finished

    def forget(self, uid):
        with self.lock:
            runtime = self.pods.pop(uid, None)
            if runtime is not None:
                self.ports.difference_update(runtime.host_ports.values())

    def kill(self, pod):
        """A forced deletion: the pod's processes get SIGKILL now."""
        with self.lock:
            runtime = self.pods.get(pod["metadata"]["uid"])
        if runtime is not None:
            runtime.stop(0)

    def drain_events(self):
        while self.pending:
            yield self.pending.popleft()

    def graceful(self, pod):
        """Whether deleting this pod waits for processes (a live pod's)."""
        with self.lock:
            runtime = self.pods.get(pod["metadata"]["uid"])
            return runtime is not None and not runtime.done()

    # -------------------------------------------------------- called by the supervisors
    def changed(self):
        self.store.changed.set()

    def event(self, pod, reason, message, etype, field_path):
        self.pending.append((pod.snapshot, reason, message, etype, field_path))
        self.store.changed.set()

    def environment(self, pod, container):
        with self.store.lock:  # short: Secrets and ConfigMaps are read, nothing is waited on
            snapshot = pod.snapshot
            status = dict(snapshot.get("status") or {}, podIP=HOST, hostIP=HOST)
            return process_env(self.api, dict(snapshot, status=status), container)

    # -------------------------------------------------------- logs
    def log(self, pod, container, q):
        """The container's log as ``pods/log`` serves it, or None when it has no process of its own."""
        with self.lock:
            runtime = self.pods.get(pod["metadata"]["uid"])
            c = runtime and runtime.containers.get(container)
            if c is None or not c.runnable:
                return None
            instance = c.instance - (1 if q.get("previous") in ("true", "1") else 0)
            waiting = (c.state.get("waiting") or {}).get("reason")
        if instance < 0:
            if q.get("previous") in ("true", "1"):
                raise LogError(
                    f'previous terminated container "{container}" in pod "{runtime.name}" not found'
                )
            reason = (
                "trying and failing to pull image"
                if waiting in ("ErrImagePull", "ImagePullBackOff")
                else waiting or "ContainerCreating"
            )
            raise LogError(f'container "{container}" in pod "{runtime.name}" is waiting to start: {reason}')
        return c, c.log_path(instance), instance

    def alive(self, c, instance):
        with self.lock:
            return c.instance == instance and "running" in c.state and not c.finished

    def close(self):
        """Stops every process: SIGTERM, SIGKILL after a few seconds; waits for the supervisors."""
        with self.lock:
            runtimes = list(self.pods.values())
        for runtime in runtimes:
            runtime.stop(min(STOP_GRACE, runtime.grace()))
        deadline = time.monotonic() + STOP_GRACE + 2
        for runtime in runtimes:
            for c in runtime.containers.values():
                if c.thread is not None:
                    c.thread.join(timeout=max(0.1, deadline - time.monotonic()))
        for runtime in runtimes:
            for c in runtime.containers.values():
                if c.proc is not None and c.proc.poll() is None:
                    _signal_group(c.proc, signal.SIGKILL)
        if self.own_dir:
            shutil.rmtree(self.pods_dir, ignore_errors=True)


class LogError(Exception):
    pass


def format_log(path, q, offsets=False):
    """The lines of a log file as ``pods/log`` gives them: sinceSeconds, sinceTime, tailLines,
    timestamps, limitBytes. With ``offsets``, also the byte offset where the lines read end, and only
    whole lines, so that a follower goes on from there without losing or repeating a line."""
    since = None
    if (q.get("sinceSeconds") or "").isdigit():
        since = time.time() - int(q["sinceSeconds"])
    elif q.get("sinceTime"):
        since = parse_time(q["sinceTime"]) or _parse_stamp(q["sinceTime"])
    lines = []
    end = 0
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        for raw in fh:
            if offsets and not raw.endswith(b"\n"):
                break
            end += len(raw)
            stamp, _, rest = raw.rstrip(b"\n").partition(b" ")
            _, _, rest = rest.partition(b" ")
            tag, _, text = rest.partition(b" ")
            if since is not None and _parse_stamp(stamp.decode()) < since:
                continue
            line = (stamp + b" " if q.get("timestamps") in ("true", "1") else b"") + text
            lines.append(line + (b"" if tag == b"P" else b"\n"))
    tail = q.get("tailLines")
    if tail and tail.lstrip("-").isdigit() and int(tail) >= 0:
        lines = lines[-int(tail) :] if int(tail) else []
    data = b"".join(lines)
    if (q.get("limitBytes") or "").isdigit():
        data = data[: int(q["limitBytes"])]
    return (data, end) if offsets else data


def host_ports_annotation(runtime):
    return json.dumps({str(k): v for k, v in sorted(runtime.host_ports.items())}, separators=(",", ":"))
