"""From the cluster's objects to an nginx configuration (routing as ingress-nginx) and to Prometheus
targets. Pure functions over a snapshot: ``{"ingresses": [...], "services": [...], "endpoints": [...],
"pods": [...], "networkpolicies": [...]}``, each a list of API objects as JSON.

Routing, as ingress-nginx does it:

- only Ingresses of class ``nginx`` (``spec.ingressClassName``, or the older
  ``kubernetes.io/ingress.class`` annotation), oldest first: on a conflict the oldest wins;
- a server per host (``*.`` wildcards as nginx's ``server_name``), and a catch-all server for
  rules without a host and for hosts no Ingress names, answering 404 (ingress-nginx's default
  backend) unless an Ingress without rules has a ``spec.defaultBackend``; a host's unmatched
  paths go to the ``spec.defaultBackend`` of the Ingress that defined the host, else 404;
- ``Exact`` paths match exactly; ``Prefix`` paths match whole path elements (``/a`` matches
  ``/a`` and ``/a/b``, not ``/ab``); ``ImplementationSpecific`` is nginx's plain prefix match;
- an upstream per Service port, from the Endpoints' ready addresses; a Service with none answers
  503, unless the Ingress has ``nginx.ingress.kubernetes.io/default-backend: <service>`` (same
  namespace) and that Service has ready addresses: then the request goes there;
- on a connection error or timeout the request is retried on the next address, three tries in
  all (``proxy_next_upstream error timeout``, ingress-nginx's default), so a pod going away does
  not fail a request that had not reached it yet.

Addresses outside 127.0.0.0/8 are left out: in the sandbox they are records of pods that run
nowhere (contract: only the sandbox's own images run, on 127.0.0.1), and nginx would wait for its
connect timeout on each. Addresses of pods a NetworkPolicy closes to the ingress controller are
left out too (see :mod:`sandbox.edge.netpol`): a Service left with none answers 503 at once, where
a real cluster's dropped packets would show as a 504 after ingress-nginx's connect timeout.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.edge import netpol

INGRESS_CLASS = "nginx"
DEFAULT_BACKEND_ANNOTATION = "nginx.ingress.kubernetes.io/default-backend"
HOST_PORTS_ANNOTATION = "sandbox.local/host-ports"
CATCH_ALL = "_"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass
class Paths:
    """Where nginx keeps its files: its prefix (config, pid, temp folders) and the logs folder."""

    prefix: Path
    logs: Path
    run_workers_as_root: bool = False

    @property
    def config(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.logs / "ingress-error.log"

    @property
    def access_log(self) -> Path:
        return self.logs / "ingress-access.log"


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return _meta(obj).get("namespace") or "", _meta(obj).get("name") or ""


def _index(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {_key(o): o for o in objects}


def host_ports(pod: dict[str, Any]) -> dict[int, int]:
    """The pod's container port → host port mapping (the kubelet's annotation), {} when none."""
    raw = (_meta(pod).get("annotations") or {}).get(HOST_PORTS_ANNOTATION)
    try:
        return {int(k): int(v) for k, v in json.loads(raw).items()} if raw else {}
    except (ValueError, TypeError, AttributeError):
        return {}


def _container_ports(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (c.get("name") or "", port)
        for c in (pod.get("spec") or {}).get("containers") or []
        for port in c.get("ports") or []
    ]


class Cluster:
    """A snapshot with its lookups."""

    def __init__(self, snapshot: dict[str, list[dict[str, Any]]]):
        self.ingresses = sorted(
            (i for i in snapshot.get("ingresses", []) if is_nginx_class(i)),
            key=lambda i: (_meta(i).get("creationTimestamp") or "", *_key(i)),
        )
        self.services = _index(snapshot.get("services", []))
        self.endpoints = _index(snapshot.get("endpoints", []))
        self.pods = _index(snapshot.get("pods", []))
        self.policies = snapshot.get("networkpolicies", [])

    def service_port(self, namespace: str, name: str, port: dict[str, Any] | None):
        """The Service's port that a backend names (by number or name; the first when unnamed)."""
        svc = self.services.get((namespace, name))
        ports = ((svc or {}).get("spec") or {}).get("ports") or []
        if not ports:
            return None
        port = port or {}
        for candidate in ports:
            if ("number" in port and candidate.get("port") == port["number"]) or (
                port.get("name") and candidate.get("name") == port["name"]
            ):
                return candidate
        return ports[0] if not port else None

    def servers(self, namespace: str, name: str, service_port: dict[str, Any]) -> list[str]:
        """``ip:port`` of the ready addresses behind one Service port that the proxy may reach."""
        eps = self.endpoints.get((namespace, name)) or {}
        found: list[str] = []
        for subset in eps.get("subsets") or []:
            ports = subset.get("ports") or []
            wanted = service_port.get("name")
            port = next((p for p in ports if p.get("name") == wanted), None) if wanted else None
            if port is None and not wanted:
                port = next((p for p in ports if not p.get("name")), ports[0] if len(ports) == 1 else None)
            if port is None:
                continue
            for address in subset.get("addresses") or []:
                ip = address.get("ip", "")
                try:
                    if ipaddress.ip_address(ip) not in LOOPBACK:
                        continue
                except ValueError:
                    continue
                if self.reachable(address, port["port"], service_port):
                    found.append(f"{ip}:{port['port']}")
        return sorted(set(found))

    def reachable(self, address: dict[str, Any], port: int, service_port: dict[str, Any]) -> bool:
        """Whether the NetworkPolicies let the ingress controller reach this address's pod."""
        ref = address.get("targetRef") or {}
        pod = self.pods.get((ref.get("namespace") or "", ref.get("name") or "")) if ref else None
        if pod is None:
            return True  # an address of no pod (hand-made Endpoints): no policy selects it
        # The policy speaks of the container port; the address carries the host port.
        container_port = next((c for c, h in host_ports(pod).items() if h == port), None)
        if container_port is None:
            target = service_port.get("targetPort")
            container_port = target if isinstance(target, int) else port
        port_name = next(
            (p.get("name") for _, p in _container_ports(pod) if p.get("containerPort") == container_port),
            None,
        )
        return netpol.admits_controller(self.policies, pod, container_port, port_name)


def is_nginx_class(ingress: dict[str, Any]) -> bool:
    spec = ingress.get("spec") or {}
    legacy = (_meta(ingress).get("annotations") or {}).get("kubernetes.io/ingress.class")
    return (spec.get("ingressClassName") or legacy) == INGRESS_CLASS


def upstream_name(namespace: str, service: str, port: dict[str, Any]) -> str:
    """As ingress-nginx names them: <namespace>-<service>-<port>."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{namespace}-{service}-{port.get('port')}")


@dataclass
class Location:
    match: str  # "= /x", "/x/", "/x"
    ingress: str  # namespace/name, for the access log
    action: str  # the nginx directive that answers: proxy_pass or return


@dataclass
class Server:
    host: str
    root: Location | None = None  # the "/" fallback: the Ingress's defaultBackend or 404
    locations: dict[str, Location] = field(default_factory=dict)


class Builder:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.upstreams: dict[str, list[str]] = {}

    def backend_action(self, namespace: str, backend: dict[str, Any] | None, annotations: dict) -> str:
        service = (backend or {}).get("service") or {}
        target = self._upstream(namespace, service.get("name"), service.get("port"))
        if target is None and annotations.get(DEFAULT_BACKEND_ANNOTATION):
            # ingress-nginx: the annotation's Service answers when the rule's has no endpoints.
            target = self._upstream(namespace, annotations[DEFAULT_BACKEND_ANNOTATION], None)
        return f"proxy_pass http://{target};" if target else "return 503;"

    def _upstream(self, namespace: str, name: str | None, port: dict | None) -> str | None:
        if not name:
            return None
        service_port = self.cluster.service_port(namespace, name, port)
        if service_port is None:
            return None
        servers = self.cluster.servers(namespace, name, service_port)
        if not servers:
            return None
        upstream = upstream_name(namespace, name, service_port)
        self.upstreams[upstream] = servers
        return upstream

    def servers(self) -> dict[str, Server]:
        servers: dict[str, Server] = {CATCH_ALL: Server(CATCH_ALL)}
        for ingress in self.cluster.ingresses:
            namespace, name = _key(ingress)
            label = f"{namespace}/{name}"
            spec = ingress.get("spec") or {}
            annotations = _meta(ingress).get("annotations") or {}
            default = spec.get("defaultBackend")
            rules = spec.get("rules") or []
            if not rules and default and servers[CATCH_ALL].root is None:
                servers[CATCH_ALL].root = Location("/", label, self.backend_action(namespace, default, {}))
            for rule in rules:
                host = rule.get("host") or CATCH_ALL
                if host not in servers:
                    root = self.backend_action(namespace, default, {}) if default else None
                    servers[host] = Server(host, Location("/", label, root) if root else None)
                server = servers[host]
                for path in (rule.get("http") or {}).get("paths") or []:
                    action = self.backend_action(namespace, path.get("backend"), annotations)
                    for match in location_matches(path.get("pathType"), path.get("path") or "/"):
                        server.locations.setdefault(match, Location(match, label, action))
        return servers


def location_matches(path_type: str | None, path: str) -> list[str]:
    """nginx location arguments for one Ingress path."""
    path = "/" + path.lstrip("/")
    if path_type == "Exact":
        return [f"= {path}"]
    if path_type == "Prefix":
        trimmed = path.rstrip("/")
        return ["/"] if not trimmed else [f"= {trimmed}", f"{trimmed}/"]
    return [path]  # ImplementationSpecific: nginx's own prefix match


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(snapshot: dict[str, list[dict[str, Any]]], listen_port: int, paths: Paths) -> str:
    """The whole nginx.conf for this snapshot."""
    builder = Builder(Cluster(snapshot))
    servers = builder.servers()
    listen = f"127.0.0.1:{listen_port}"
    temp = paths.prefix / "temp"
    out = [
        "# Written by the sandbox's ingress controller (sandbox/edge) from the cluster's Ingresses,",
        "# Services and Endpoints; rewritten and reloaded when they change. Do not edit.",
        "daemon off;  # the controller supervises it, as ingress-nginx's controller does",
        "worker_processes 1;",
        f"pid {_quote(str(paths.pid))};",
        f"error_log {_quote(str(paths.error_log))} notice;",
    ]
    if paths.run_workers_as_root:
        out += [
            "# Run as root, nginx would start its workers as `nobody`, which cannot reach a state",
            "# folder under /root or under a 0700 temporary folder (its temp files live there). It",
            "# listens on 127.0.0.1 only and proxies to the sandbox's own processes: workers run as root.",
            "user root;",
        ]
    out += [
        "events { worker_connections 1024; }",
        "http {",
        '    log_format edge \'$remote_addr [$time_local] "$host" "$request" $status $body_bytes_sent \'',
        "                    '$request_time ingress=$edge_ingress upstream=$upstream_addr '",
        "                    'upstream_status=$upstream_status';",
        f"    access_log {_quote(str(paths.access_log))} edge;",
    ]
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        out.append(f"    {name}_temp_path {_quote(str(temp / name))};")
    out += [
        "    server_names_hash_bucket_size 128;",
        "    proxy_http_version 1.1;",
        "    proxy_connect_timeout 5s;",
        "    proxy_read_timeout 60s;",
        "    proxy_send_timeout 60s;",
        "    # ingress-nginx's defaults: the next address on a connection error or timeout, 3 tries.",
        "    proxy_next_upstream error timeout;",
        "    proxy_next_upstream_tries 3;",
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Request-ID $request_id;",
    ]
    for upstream, addresses in sorted(builder.upstreams.items()):
        out.append(f"    upstream {upstream} {{")
        # max_fails=0: every request tries every address again (ingress-nginx does not take an
        # address out for a while after one failure; the Endpoints say when it is gone).
        out += [f"        server {address} max_fails=0;" for address in addresses]
        out.append("    }")
    ordered = [servers[CATCH_ALL], *(servers[h] for h in sorted(servers) if h != CATCH_ALL)]
    for server in ordered:
        default = " default_server" if server.host == CATCH_ALL else ""
        out += ["    server {", f"        listen {listen}{default};", f"        server_name {server.host};"]
        locations = dict(server.locations)
        if "/" not in locations:
            locations["/"] = server.root or Location("/", "-", "return 404;")
        for match in sorted(locations, key=lambda m: (m.lstrip("= "), m)):
            location = locations[match]
            out += [
                f"        location {match} {{",
                f"            set $edge_ingress {_quote(location.ingress)};",
                f"            {location.action}",
                "        }",
            ]
        out.append("    }")
    out.append("}")
    return "\n".join(out) + "\n"


def scrape_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus file_sd entries: one per Running pod with host ports, at the host port of its
    container port named ``http`` (else its first port)."""
    targets = []
    for pod in sorted(pods, key=_key):
        mapping = host_ports(pod)
        if not mapping or (pod.get("status") or {}).get("phase") != "Running":
            continue
        ports = _container_ports(pod)
        chosen = next(((c, p) for c, p in ports if p.get("name") == "http"), ports[0] if ports else None)
        container, host_port = "", None
        if chosen is not None:
            container, host_port = chosen[0], mapping.get(chosen[1].get("containerPort"))
        if host_port is None:
            host_port = next(iter(mapping.values()))
        if not container:
            containers = (pod.get("spec") or {}).get("containers") or [{}]
            container = containers[0].get("name") or ""
        meta = _meta(pod)
        targets.append(
            {
                "targets": [f"127.0.0.1:{host_port}"],
                "labels": {
                    "namespace": meta.get("namespace") or "",
                    "pod": meta.get("name") or "",
                    "service": (meta.get("labels") or {}).get("app.kubernetes.io/name", ""),
                    "container": container,
                },
            }
        )
    return targets
