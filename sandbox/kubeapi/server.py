"""HTTP front end: routing of the Kubernetes REST paths onto the store/API layer,
watch streaming, and the KubeAPIServer lifecycle object."""

import contextlib
import hmac
import json
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

from . import discovery, tables
from . import exec as pod_exec
from .api import API
from .controllers import Controllers
from .kubelet import Catalogue, Kubelet, LogError, format_log
from .store import APIError, Store, Watcher, now_iso, parse_field_selector, parse_label_selector

log = logging.getLogger(__name__)
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "sandbox",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}
WATCH_TIMEOUT = 1800
# What a cluster lets anyone read (the system:public-info-viewer role).
ANONYMOUS = {"/healthz", "/livez", "/readyz", "/version"}
UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


def _decode(headers, raw):
    ctype = (headers.get("Content-Type") or "application/json").split(";")[0].strip()
    if "protobuf" in ctype:
        raise APIError(
            415,
            "UnsupportedMediaType",
            "this sandbox API server does not decode protobuf request bodies (kubectl create <generator> "
            "sends them): use `kubectl apply -f`, e.g. `kubectl create ... --dry-run=client -o yaml | "
            "kubectl apply -f -`",
        )
    try:
        return (yaml.safe_load if "yaml" in ctype else json.loads)(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise APIError(400, "BadRequest", f"error decoding request body: {exc}") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubeapi-sandbox/1.0"

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):  # the TLS handshake, in this connection's thread
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self):
        self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _handle(self):
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if not self.server.app.authenticated(url.path, self.headers):
            self.send(401, UNAUTHORIZED)
            return
        if pod_exec.is_exec(self.command, url.path):  # a WebSocket upgrade, see exec.py
            pod_exec.serve(self.server.app, self, url.path, url.query)
            return
        try:
            result = self.server.app.route(self.command, url.path, query, self.headers, self._body(), self)
            if result is not None:
                self.send(*result)
        except APIError as exc:
            self.send(exc.code, exc.status())
        except OSError:
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - defensive
            log.exception("request failed: %s %s", self.command, self.path)
            self.send(500, APIError(500, "InternalError", f"internal error: {exc}").status())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunks.append(self.rfile.read(size + 2)[:size])
                if size == 0:
                    return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, code, payload, ctype="application/json"):
        data = (
            payload.encode()
            if isinstance(payload, str)
            else json.dumps(payload, separators=(",", ":")).encode()
        )
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # ------------------------------------------------------------ watch streaming
    def _chunk(self, event):
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self):
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if isinstance(self.connection, ssl.SSLSocket):
                # No peeking through TLS; a watch client sends nothing after its request, so a
                # readable connection is one being closed.
                return bool(readable)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def stream(self, app, watcher, initial, render, timeout, bookmark=None, error=None):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        deadline = time.monotonic() + timeout
        try:
            if error is not None:
                self._chunk({"type": "ERROR", "object": error})
            for etype, obj in initial:
                self._chunk({"type": etype, "object": render(obj)})
            if bookmark is not None:
                self._chunk({"type": "BOOKMARK", "object": bookmark})
            while error is None and not app.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = watcher.queue.get(timeout=min(left, 1.0))
                except queue.Empty:
                    if self._client_gone():
                        raise ConnectionResetError("watch client went away") from None
                    continue
                if item is None:
                    break
                self._chunk({"type": item[0], "object": render(item[1])})
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            app.store.unwatch(watcher)

    def follow_log(self, app, data, path, start, running, q):
        """``kubectl logs -f``: what the log holds, then the lines after ``start`` (the offset where
        ``data`` ends) while the container runs, and those it wrote before it stopped."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        stamps = q.get("timestamps") in ("true", "1")
        try:
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            with open(path, "rb") as fh:
                fh.seek(start)
                while not app.stopping.is_set():
                    line = fh.readline()
                    if not line.endswith(b"\n"):
                        if not running():
                            break
                        if self._client_gone():
                            raise ConnectionResetError("log client went away")
                        fh.seek(-len(line), os.SEEK_CUR)
                        time.sleep(0.1)
                        continue
                    stamp, _, rest = line.partition(b" ")
                    text = rest.partition(b" ")[2].partition(b" ")[2]
                    chunk = (stamp + b" " if stamps else b"") + text
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, app, tls=None):
        self.app, self.connections, self.tls = app, set(), tls
        super().__init__(address, Handler)

    def get_request(self):
        conn, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the connection's thread (Handler.setup)
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def handle_error(self, request, client_address):
        log.debug("connection from %s failed", client_address, exc_info=True)


class KubeAPIServer:
    """Emulated Kubernetes API server; see README.md for what is covered."""

    def __init__(
        self,
        host="127.0.0.1",
        port=0,
        ready_delay=1.0,
        exec_commands=None,
        tls=None,
        token=None,
        images=None,
        pods_dir=None,
        restart_backoff=10.0,
    ):
        """``tls``: ``(certfile, keyfile)`` to serve HTTPS; ``token``: the bearer token every request
        but the anonymous health and version paths must carry (401 otherwise), as on a cluster.
        ``images``: the image catalogue (a path, a ``Catalogue`` or its ``repositories`` dict); without
        one every image pulls but tag ``broken`` and nothing runs. ``pods_dir``: where container logs
        go (default: a temporary folder, removed on stop). ``restart_backoff``: the first crash-loop
        back-off in seconds (doubling up to 30 times that)."""
        self.host, self.port = host, port
        self.tls, self.token = tls, token
        # pods/exec runs only these commands, on the host (first word -> host argv; see exec.py).
        self.exec_commands = dict(pod_exec.DEFAULT_COMMANDS if exec_commands is None else exec_commands)
        self.store = Store()
        self.api = API(self.store)
        if images is not None and not isinstance(images, Catalogue):
            images = Catalogue.load(images) if isinstance(images, (str, os.PathLike)) else Catalogue(images)
        self.kubelet = Kubelet(self.api, images, pods_dir, restart_backoff)
        self.api.kubelet = self.kubelet
        self.controllers = Controllers(self.api, self.kubelet, ready_delay)
        self.stopping = threading.Event()
        self._httpd, self._threads = None, []

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def authenticated(self, path, headers):
        if self.token is None or path in ANONYMOUS:
            return True
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def start(self):
        context = None
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
        self._httpd = _HTTPServer((self.host, self.port), self, context)
        self.port = self._httpd.server_address[1]
        for name, target in (
            ("kubeapi-http", self._httpd.serve_forever),
            ("kubeapi-controllers", self.controllers.run),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if self.store.get("/namespaces", "", ns) is None:
                self.api.create(discovery.BY_PATH[("", "v1", "namespaces")], None, {"metadata": {"name": ns}})
        return self

    def load(self, objects):
        """Create manifest dicts as if POSTed; namespaces are created when missing."""
        created = []
        for obj in objects:
            if not obj:
                continue
            if obj.get("kind") == "List":
                created += self.load(obj.get("items") or [])
                continue
            res = discovery.BY_KIND.get((obj.get("apiVersion"), obj.get("kind")))
            if res is None:
                raise ValueError(f"unsupported kind {obj.get('apiVersion')}/{obj.get('kind')}")
            created.append(self.api.create(res, None, obj, implicit_namespace=True))
        return created

    def stop(self):
        self.stopping.set()
        self.controllers.stop_event.set()
        self.store.close_watchers()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            for conn in list(self._httpd.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self.kubelet.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ routing
    def route(self, method, path, q, headers, raw, handler):
        parts = [p for p in path.split("/") if p]
        if path.rstrip("/") in ("/healthz", "/readyz", "/livez") or (
            parts and parts[0] in ("healthz", "readyz", "livez")
        ):
            return 200, "ok", "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD") and parts[:1] != ["api"] and parts[:1] != ["apis"]:
            raise APIError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if path == "/version":
            return 200, VERSION
        if path == "/api":
            return 200, discovery.api_versions(f"{self.host}:{self.port}")
        if path == "/apis":
            return 200, discovery.api_group_list()
        if path == "/openapi/v2":
            return 200, discovery.openapi_v2()
        if path == "/openapi/v3":
            return 200, discovery.openapi_v3_index()
        if parts[:2] == ["openapi", "v3"]:
            gv = parts[3:] if parts[2:3] == ["apis"] else ["", *parts[3:]]
            doc = discovery.openapi_v3(*gv) if len(gv) == 2 else None
            if doc:
                return 200, doc
        elif parts[:1] == ["api"] and len(parts) >= 2:
            return self.resource_route(method, "", parts[1], parts[2:], q, headers, raw, handler)
        elif parts[:1] == ["apis"] and len(parts) == 2 and parts[1] in discovery.GROUPS:
            return 200, discovery.api_group(parts[1])
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            return self.resource_route(method, parts[1], parts[2], parts[3:], q, headers, raw, handler)
        raise APIError(404, "NotFound", "the server could not find the requested resource")

    def resource_route(self, method, group, version, rest, q, headers, raw, handler):
        if not rest:
            doc = discovery.resource_list(group, version)
            if not doc["resources"]:
                raise APIError(404, "NotFound", "the server could not find the requested resource")
            return 200, doc
        watch = rest[0] == "watch"
        rest = rest[1:] if watch else rest
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in discovery.BY_PATH:
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        res = self.api.resource(group, version, rest[0])
        name, sub = ([*rest[1:], None, None])[:2]
        if (
            (ns is not None and not res.namespaced)
            or (name and res.namespaced and ns is None)
            or (sub and sub not in res.subresources)
        ):
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        dry = q.get("dryRun") == "All"
        watch = watch or q.get("watch", "").lower() in ("true", "1")
        if method in ("GET", "HEAD") and (watch or name is None):
            return self.list_or_watch(res, ns, name, q, headers, handler, watch)
        if method in ("GET", "HEAD"):
            obj = self.api.get(res, ns, name)
            if sub == "scale":
                return 200, self.api.scale_of(res, obj)
            if sub == "log":
                return self.pod_log(obj, q, handler)
            return 200, tables.render(res, [self.api.view(res, obj)], headers, q) or self.api.view(res, obj)
        if method == "POST" and res.kind == "SelfSubjectAccessReview":  # RBAC is not enforced: allow all
            review = {} if "protobuf" in (headers.get("Content-Type") or "") else _decode(headers, raw) or {}
            status = {"allowed": True, "reason": "the sandbox API server does not enforce RBAC"}
            return 201, dict(review, apiVersion="authorization.k8s.io/v1", kind=res.kind, status=status)
        if method == "POST" and name is None:
            return 201, self.api.create(res, ns, _decode(headers, raw), dry)
        if method == "POST" and sub == "eviction":
            return 201, self.api.evict(ns, name, dry)
        if method == "PUT" and name and sub != "log":
            return 200, self.api.update(res, ns, name, _decode(headers, raw), sub, dry)
        if method == "PATCH" and name and sub != "log":
            obj, code = self.api.patch(res, ns, name, headers.get("Content-Type"), raw, sub, dry)
            return code, obj
        if method == "DELETE":
            options = (
                _decode(headers, raw) if raw and "json" in (headers.get("Content-Type") or "json") else {}
            )
            options = dict(options or {}, **{k: q[k] for k in ("propagationPolicy",) if k in q})
            if q.get("gracePeriodSeconds", "").lstrip("-").isdigit():
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            if name:
                return 200, self.api.delete(res, ns, name, options, dry)
            return 200, self._list_doc(
                res,
                [
                    self.api.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], options, dry)
                    for o in self._select(res, ns, None, q)
                ],
            )
        raise APIError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _watcher(self, res, ns, name, q):
        return Watcher(
            discovery.rkey(res),
            ns,
            name,
            parse_label_selector(q.get("labelSelector")),
            parse_field_selector(q.get("fieldSelector")),
        )

    def _select(self, res, ns, name, q):
        watcher = self._watcher(res, ns, name, q)
        return [o for o in self.store.list(discovery.rkey(res), ns) if watcher.matches(o)]

    def _list_doc(self, res, items, rv=None):
        return {
            "kind": f"{res.kind}List",
            "apiVersion": discovery.api_version(res),
            "metadata": {"resourceVersion": str(rv if rv is not None else self.store.rv)},
            "items": items,
        }

    def list_or_watch(self, res, ns, name, q, headers, handler, watch):
        first = [True]

        def render(obj):  # a Table watch sends column definitions with the first event only
            table = tables.render(res, [self.api.view(res, obj)], headers, q, rows_only=not first[0])
            first[0] = False
            return table or self.api.view(res, obj)

        if not watch:
            with self.store.lock:
                items = [self.api.view(res, o) for o in self._select(res, ns, name, q)]
                rv = self.store.rv
            return 200, tables.render(res, items, headers, q, rv) or self._list_doc(res, items, rv)
        initial_events = q.get("sendInitialEvents") == "true"
        watcher = self._watcher(res, ns, name, q)
        timeout = float(q.get("timeoutSeconds") or WATCH_TIMEOUT)
        try:
            initial, rv = self.store.watch(watcher, None if initial_events else q.get("resourceVersion"))
        except APIError as exc:
            handler.stream(self, watcher, [], render, timeout, error=exc.status())
            return None
        bookmark = None
        if initial_events:
            bookmark = {
                "kind": res.kind,
                "apiVersion": discovery.api_version(res),
                "metadata": {
                    "resourceVersion": str(rv),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            }
        handler.stream(self, watcher, initial, render, timeout, bookmark)
        return None

    def pod_log(self, pod, q, handler):
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = q.get("container") or (containers[0] if containers else "")
        if container not in containers:
            raise APIError(
                400, "BadRequest", f"container {container} is not valid for pod {pod['metadata']['name']}"
            )
        try:
            found = self.kubelet.log(pod, container, q)
        except LogError as exc:
            raise APIError(400, "BadRequest", str(exc)) from None
        if found is None:  # no process of its own: a fixed text
            return 200, self.fixed_log(pod, container, q), "text/plain"
        runner, path, instance = found
        if q.get("follow") not in ("true", "1") or not self.kubelet.alive(runner, instance):
            return 200, format_log(path, q).decode("utf-8", "replace"), "text/plain"
        data, end = format_log(path, q, offsets=True)
        handler.follow_log(self, data, path, end, lambda: self.kubelet.alive(runner, instance), q)
        return None

    @staticmethod
    def fixed_log(pod, container, q):
        image = next(c.get("image") for c in pod["spec"]["containers"] if c["name"] == container)
        start = (pod.get("status") or {}).get("startTime") or now_iso()
        lines = [
            f"{start} container {container} started (image {image})",
            f"{start} {container}: listening",
            f"{start} {container}: ready",
        ]
        tail = q.get("tailLines")
        if tail and tail.isdigit():
            lines = lines[-int(tail) :] if int(tail) else []
        return "".join(line + "\n" for line in lines)
