"""In-memory object store: resourceVersions, selectors and watch fan-out.

Stored objects are treated as immutable snapshots: every write stores a new
dict, so watch events can reference them without copying.
"""

import collections
import datetime
import queue
import re
import threading


def now_iso():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value):
    try:
        return (
            datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
        )
    except (TypeError, ValueError):
        return 0.0


class APIError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        out = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


# ---------------------------------------------------------------- selectors
_LABEL_REQ = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[A-Za-z0-9_.-]*)|\s+(?P<set>in|notin)\s*\((?P<vals>[^)]*)\))?\s*(?:,|$)"
)


def parse_label_selector(text):
    """Parse 'a=b,c!=d,e in (x,y),f notin (z),g,!h' into (key, op, values) tuples."""
    reqs, pos, text = [], 0, (text or "").strip()
    while pos < len(text):
        m = _LABEL_REQ.match(text, pos)
        if not m or m.end() == pos:
            raise APIError(400, "BadRequest", f"unable to parse requirement: {text[pos:]!r}")
        if m["neg"] and (m["op"] or m["set"]):
            raise APIError(400, "BadRequest", f"invalid label selector {text!r}")
        if m["set"]:
            reqs.append((m["key"], m["set"], {v.strip() for v in m["vals"].split(",") if v.strip()}))
        elif m["op"]:
            reqs.append((m["key"], "!=" if m["op"] == "!=" else "=", {m["val"]}))
        else:
            reqs.append((m["key"], "!" if m["neg"] else "exists", set()))
        pos = m.end()
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, values in reqs:
        present, value = key in labels, labels.get(key)
        if (
            (op in ("=", "in") and (not present or value not in values))
            or (op in ("!=", "notin") and present and value in values)
            or (op == "exists" and not present)
            or (op == "!" and present)
        ):
            return False
    return True


def selector_from_spec(selector):
    """Turn a metav1.LabelSelector dict into requirement tuples."""
    selector = selector or {}
    reqs = [(k, "=", {v}) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append((expr["key"], ops.get(expr.get("operator"), "in"), set(expr.get("values") or [])))
    return reqs


def selector_string(selector):
    parts = [f"{k}={v}" for k, v in ((selector or {}).get("matchLabels") or {}).items()]
    for expr in (selector or {}).get("matchExpressions") or []:
        op, key, vals = expr.get("operator"), expr["key"], ",".join(sorted(expr.get("values") or []))
        parts.append(
            {
                "In": f"{key} in ({vals})",
                "NotIn": f"{key} notin ({vals})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }.get(op, key)
        )
    return ",".join(parts)


def parse_field_selector(text):
    reqs = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise APIError(400, "BadRequest", f"invalid field selector: {part!r}")
        reqs.append((m[1], m[2] != "!=", m[3]))
    return reqs


def field_value(obj, path):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    if isinstance(obj, bool):
        return str(obj).lower()
    return "" if obj is None else str(obj)


def fields_match(reqs, obj):
    return all((field_value(obj, path) == value) == equal for path, equal, value in reqs)


# ---------------------------------------------------------------- store
class Watcher:
    """One watch stream: a filter plus a bounded queue of (type, object) events."""

    MAX_QUEUE = 10000

    def __init__(self, rkey, namespace=None, name=None, labels=(), fields=()):
        self.rkey, self.namespace, self.name = rkey, namespace, name
        self.labels, self.fields = labels, fields
        self.queue, self.overflow = queue.Queue(), False

    def matches(self, obj):
        meta = obj.get("metadata", {})
        return (
            (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and labels_match(self.labels, meta.get("labels"))
            and fields_match(self.fields, obj)
        )

    def translate(self, etype, obj, old):
        """Event type as seen through the filter (selector transitions become ADDED/DELETED)."""
        new_ok = etype != "DELETED" and self.matches(obj)
        old_ok = old is not None and self.matches(old)
        if etype == "DELETED":
            return "DELETED" if self.matches(obj) else None
        if new_ok:
            return "MODIFIED" if old_ok else "ADDED"
        return "DELETED" if old_ok else None

    def offer(self, etype, obj):
        if self.queue.qsize() >= self.MAX_QUEUE:
            self.overflow = True
            self.queue.put(None)
        elif not self.overflow:
            self.queue.put((etype, obj))


class Store:
    def __init__(self, history=1000):
        self.lock = threading.RLock()
        self.changed = threading.Event()
        self.objects = collections.defaultdict(dict)  # rkey -> {(namespace, name): obj}
        self.uids = {}  # uid -> (rkey, namespace, name)
        self.rv = 0
        self.deletions = 0
        self.history = collections.deque(maxlen=history)  # (rv, type, rkey, obj, old)
        self.compacted = 0  # highest resourceVersion no longer in history
        self.watchers = set()

    @staticmethod
    def key(obj):
        meta = obj["metadata"]
        return meta.get("namespace") or "", meta["name"]

    def get(self, rkey, namespace, name):
        return self.objects[rkey].get((namespace or "", name))

    def list(self, rkey, namespace=None):
        with self.lock:
            items = self.objects[rkey].items()
            return [o for (ns, _), o in sorted(items) if namespace is None or ns == namespace]

    def exists_uid(self, uid):
        return uid in self.uids

    def put(self, rkey, obj, old=None):
        """Store a new snapshot (create when old is None) and emit the watch event."""
        with self.lock:
            self.rv += 1
            obj["metadata"] = dict(obj["metadata"], resourceVersion=str(self.rv))
            self.objects[rkey][self.key(obj)] = obj
            self.uids[obj["metadata"]["uid"]] = (rkey, *self.key(obj))
            self._emit("ADDED" if old is None else "MODIFIED", rkey, obj, old)
            return obj

    def remove(self, rkey, namespace, name):
        with self.lock:
            obj = self.objects[rkey].pop((namespace or "", name), None)
            if obj is None:
                return None
            self.uids.pop(obj["metadata"].get("uid"), None)
            self.rv += 1
            self.deletions += 1
            gone = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(self.rv)))
            self._emit("DELETED", rkey, gone, obj)
            return gone

    def _emit(self, etype, rkey, obj, old):
        if len(self.history) == self.history.maxlen:
            self.compacted = self.history[0][0]
        self.history.append((self.rv, etype, rkey, obj, old))
        for watcher in list(self.watchers):
            if watcher.rkey == rkey:
                seen = watcher.translate(etype, obj, old)
                if seen:
                    watcher.offer(seen, obj)
        self.changed.set()

    def watch(self, watcher, since):
        """Register a watcher; returns the initial events (synthetic ADDED or replay)."""
        with self.lock:
            if since in (None, "", "0"):
                initial = [("ADDED", o) for o in self.list(watcher.rkey) if watcher.matches(o)]
            else:
                try:
                    since = int(since)
                except ValueError:
                    raise APIError(400, "BadRequest", f"invalid resource version {since!r}") from None
                if since < self.compacted:
                    raise APIError(
                        410, "Expired", f"too old resource version: {since} ({self.compacted + 1})"
                    )
                initial = []
                for rv, etype, rkey, obj, old in self.history:
                    if rv > since and rkey == watcher.rkey:
                        seen = watcher.translate(etype, obj, old)
                        if seen:
                            initial.append((seen, obj))
            self.watchers.add(watcher)
            return initial, self.rv

    def unwatch(self, watcher):
        with self.lock:
            self.watchers.discard(watcher)

    def close_watchers(self):
        with self.lock:
            for watcher in self.watchers:
                watcher.queue.put(None)
            self.watchers.clear()
