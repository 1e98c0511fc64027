"""``pods/exec`` over WebSocket (``v5.channel.k8s.io`` and ``v4.channel.k8s.io``), standard library only.

What the client sees is what a kubelet behind a real API server gives: an HTTP Upgrade to a WebSocket
(RFC 6455), then binary messages whose first byte is the channel — 1 stdout, 2 stderr, 3 a
``meta/v1 Status`` (``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and the exit code as
the cause's message) — and a close frame. ``kubectl exec`` (which offers v5 only since 1.30) and the
official Python client's ``stream`` (v5, v4) both work.

The command runs on the host as a new process (beside the pod's own process, if its image is
runnable: see ``kubelet.py``, which starts those with the same environment), under these rules:

* Only a command whose first word (its base name, so ``./matchbook`` counts as ``matchbook``) is on
  the server's allow-list runs; the allow-list maps that word to the host program that stands in for
  it. The default list has one entry, ``matchbook``, the sandbox application's command line
  (``python -m sandbox.app``). Anything else gets exit code 126 and a message on stderr.
* The process gets the container's environment resolved from the pod spec — ``env`` values,
  ``valueFrom`` ``secretKeyRef``/``configMapKeyRef``/``fieldRef``, ``envFrom`` Secrets and ConfigMaps
  (with ``prefix``) — plus ``PATH``, ``HOME``, ``HOSTNAME`` (the pod's name) and ``PYTHONPATH`` (the
  project and its collections), and nothing else of the host's environment. A missing Secret or key
  that is not ``optional`` fails the exec, as the container could not have started.
* No shell, no TTY and no stdin: the arguments go to the program as a list; ``tty`` is ignored and
  stdin is closed (frames a client sends on channel 0 are discarded).
* It runs in the project's folder and is killed after ``timeout`` seconds or when the client goes away.
* The pod must exist, name the container (default: its first) and be Ready; otherwise the upgrade is
  refused with the Status a real server would send (404, or 400 "container not running").
"""

import base64
import contextlib
import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs

from . import discovery
from .store import APIError

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_COMMANDS = {"matchbook": [sys.executable, "-m", "sandbox.app"]}
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STDOUT, STDERR, ERROR = 1, 2, 3
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
TIMEOUT = 600


def is_exec(method, path):
    parts = [p for p in path.split("/") if p]
    return (
        method in ("GET", "POST")
        and len(parts) == 7
        and parts[:3] == ["api", "v1", "namespaces"]
        and parts[4] == "pods"
        and parts[6] == "exec"
    )


# ---------------------------------------------------------------- RFC 6455 framing
def encode_frame(opcode, payload=b""):
    """A server frame: final, unmasked."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) < n:
        raise ConnectionError("client closed the connection")
    return data


def read_frame(stream):
    """Returns ``(fin, opcode, payload)`` of one frame, unmasking a client's frame."""
    b0, b1 = _read_exact(stream, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _read_exact(stream, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _read_exact(stream, 8))[0]
    mask = _read_exact(stream, 4) if b1 & 0x80 else None
    payload = _read_exact(stream, n) if n else b""
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


# ---------------------------------------------------------------- the container's environment
def _secret(app, ns, name):
    obj = app.store.get(discovery.rkey(discovery.BY_PATH[("", "v1", "secrets")]), ns, name)
    if obj is None:
        return None
    values = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
    values.update(obj.get("stringData") or {})
    return values


def _config_map(app, ns, name):
    obj = app.store.get(discovery.rkey(discovery.BY_PATH[("", "v1", "configmaps")]), ns, name)
    return None if obj is None else dict(obj.get("data") or {})


def _field(pod, path):
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    fields = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path.startswith("metadata.labels['") or path.startswith("metadata.annotations['"):
        where, key = path.split("['", 1)
        return (meta.get(where.split(".")[1]) or {}).get(key.rstrip("']"))
    return fields.get(path)


def container_env(app, pod, container):
    """The environment the container would have, as a kubelet resolves it; raises ValueError."""
    ns = pod["metadata"].get("namespace")
    env = {}
    sources = {"secretRef": _secret, "configMapRef": _config_map}
    for item in container.get("envFrom") or []:
        for ref, read in sources.items():
            if ref in item:
                values = read(app, ns, item[ref]["name"])
                if values is None and not item[ref].get("optional"):
                    raise ValueError(f'{ref[:-3]} "{item[ref]["name"]}" not found')
                env.update({item.get("prefix", "") + k: v for k, v in (values or {}).items()})
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = var.get("value", "")
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = _field(pod, source["fieldRef"]["fieldPath"]) or ""
            continue
        for ref, read in (("secretKeyRef", _secret), ("configMapKeyRef", _config_map)):
            if ref in source:
                values = read(app, ns, source[ref]["name"])
                value = None if values is None else values.get(source[ref]["key"])
                if value is None:
                    if not source[ref].get("optional"):
                        raise ValueError(
                            f"couldn't find key {source[ref]['key']} in {ref[:-6]} {ns}/{source[ref]['name']}"
                        )
                    continue
                env[var["name"]] = value
    return env


def process_env(app, pod, container):
    """The whole environment of a process standing in for the container: the container's own
    (``container_env``) plus ``PATH``, ``HOME``, ``HOSTNAME`` (the pod's name) and ``PYTHONPATH`` (the
    project and its collections), nothing else of the host's; raises ValueError."""
    env = container_env(app, pod, container)
    env.update(
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        HOME=env.get("HOME", "/tmp"),
        HOSTNAME=pod["metadata"]["name"],
        PYTHONPATH=os.pathsep.join([str(PROJECT), str(PROJECT / "collections")]),
    )
    return env


def _ready(pod):
    conditions = (pod.get("status") or {}).get("conditions") or []
    return (pod.get("status") or {}).get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


# ---------------------------------------------------------------- the exec itself
class Session:
    """One exec: a WebSocket on the handler's connection and the process it runs."""

    def __init__(self, handler, protocol):
        self.handler, self.protocol = handler, protocol
        self.lock = threading.Lock()
        self.gone = threading.Event()

    def send(self, opcode, payload):
        with self.lock:
            self.handler.wfile.write(encode_frame(opcode, payload))
            self.handler.wfile.flush()

    def channel(self, number, data):
        if data:
            self.send(OP_BINARY, bytes([number]) + data)

    def listen(self, process_holder):
        """Reads the client's frames: answers pings, discards stdin, notices a close."""
        try:
            while True:
                _, opcode, payload = read_frame(self.handler.rfile)
                if opcode == OP_PING:
                    self.send(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    break
        except (ConnectionError, OSError, ValueError):
            pass
        self.gone.set()
        process = process_holder.get("process")
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()


def _status(code, message=""):
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": message or f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def prepare(app, path, query):
    """Checks the request before the upgrade; returns ``(pod, container, argv)`` or raises APIError."""
    parts = [p for p in path.split("/") if p]
    ns, name = parts[3], parts[5]
    pod = app.api.get(discovery.BY_PATH[("", "v1", "pods")], ns, name)
    params = parse_qs(query, keep_blank_values=True)
    argv = params.get("command") or []
    if not argv:
        raise APIError(400, "BadRequest", "you must specify at least 1 command")
    containers = (pod.get("spec") or {}).get("containers") or []
    wanted = (params.get("container") or [""])[-1] or (containers[0]["name"] if containers else "")
    container = next((c for c in containers if c.get("name") == wanted), None)
    if container is None:
        raise APIError(400, "BadRequest", f"container {wanted} is not valid for pod {name}")
    if not _ready(pod):
        raise APIError(400, "BadRequest", f"unable to upgrade connection: container {wanted} not running")
    return pod, container, argv


def serve(app, handler, path, query):
    """Answers one exec request on ``handler``'s connection; the connection closes afterwards."""
    handler.close_connection = True
    try:
        pod, container, argv = prepare(app, path, query)
    except APIError as exc:
        handler.send(exc.code, exc.status())
        return
    offered = [p.strip() for p in (handler.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    protocol = next((p for p in offered if p in PROTOCOLS), None)
    key = handler.headers.get("Sec-WebSocket-Key")
    if (handler.headers.get("Upgrade") or "").lower() != "websocket" or not key or protocol is None:
        handler.send(
            400,
            APIError(
                400,
                "BadRequest",
                "this sandbox API server serves exec over WebSocket only, with subprotocol "
                f"{' or '.join(PROTOCOLS)} (no SPDY)",
            ).status(),
        )
        return
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(key))
    handler.send_header("Sec-WebSocket-Protocol", protocol)
    handler.end_headers()
    session = Session(handler, protocol)
    try:
        code, message = run(app, session, pod, container, argv)
        session.channel(ERROR, json.dumps(_status(code, message)).encode())
        session.send(OP_CLOSE, struct.pack("!H", 1000))
    except OSError:
        pass


def run(app, session, pod, container, argv):
    """Runs the allowed command with the container's environment; returns ``(exit code, message)``."""
    word = os.path.basename(argv[0])
    program = app.exec_commands.get(word)
    if program is None:
        allowed = ", ".join(sorted(app.exec_commands)) or "nothing"
        session.channel(
            STDERR,
            f"sandbox exec: {argv[0]!r} is not on this sandbox's allow-list (allowed: {allowed})\n".encode(),
        )
        return 126, f"command {argv[0]!r} is not allowed in the sandbox"
    try:
        env = process_env(app, pod, container)
    except ValueError as exc:
        session.channel(STDERR, f"sandbox exec: {exc}\n".encode())
        return 1, f"container environment: {exc}"
    holder = {}
    listener = threading.Thread(target=session.listen, args=(holder,), name="kubeapi-exec-ws", daemon=True)
    try:
        process = subprocess.Popen(
            [*program, *argv[1:]],
            cwd=str(PROJECT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        session.channel(STDERR, f"sandbox exec: {exc}\n".encode())
        return 127, str(exc)
    holder["process"] = process
    listener.start()

    def pump(stream, number):
        for chunk in iter(lambda: stream.read1(65536), b""):
            with contextlib.suppress(OSError):
                session.channel(number, chunk)

    pumps = [
        threading.Thread(target=pump, args=(process.stdout, STDOUT), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, STDERR), daemon=True),
    ]
    for thread in pumps:
        thread.start()
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
        session.channel(STDERR, f"sandbox exec: killed after {TIMEOUT}s\n".encode())
    for thread in pumps:
        thread.join(timeout=5)
    if code < 0:  # killed by a signal, as a shell reports it
        code = 128 - code
    log.info("exec in %s/%s: %s -> %s", pod["metadata"].get("namespace"), pod["metadata"]["name"], word, code)
    return code, ""
