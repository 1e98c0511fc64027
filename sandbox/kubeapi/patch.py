"""Patch formats accepted by the API server.

* JSON merge patch (RFC 7386)
* strategic merge patch (lists merged by well-known merge keys, ``$patch``
  directives, ``$retainKeys`` and ``$deleteFromPrimitiveList``)
* JSON patch (RFC 6902)
"""

import copy


class PatchError(ValueError):
    """Malformed patch (``invalid=False``) or a patch that cannot be applied."""

    def __init__(self, message, invalid=False):
        super().__init__(message)
        self.invalid = invalid


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# list field name -> merge key (tuples: first key present in the items wins)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "addresses": "type",
    "topologySpreadConstraints": "topologyKey",
    "ports": ("containerPort", "port"),
}
SET_LISTS = {"finalizers"}  # primitive lists merged as sets


def _merge_key(field, items):
    key = MERGE_KEYS.get(field)
    if isinstance(key, tuple):
        return next((k for k in key if any(isinstance(i, dict) and k in i for i in items)), key[-1])
    return key


def strategic_merge(target, patch):
    """Apply a strategic merge patch; returns None when the patch deletes the map."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return strategic_merge({}, {k: v for k, v in patch.items() if k != "$patch"})
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(out.get(field), list):
                out[field] = [v for v in out[field] if v not in (value or [])]
            continue
        if key.startswith("$"):  # $retainKeys, $setElementOrder/...: handled below or ignored
            continue
        current = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(current, value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list) and key in SET_LISTS and isinstance(current, list):
            out[key] = current + [v for v in value if v not in current]
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(current, list):
            out[key] = _merge_list(current, value, _merge_key(key, current + value))
        elif isinstance(value, list):
            out[key] = [
                strategic_merge({}, v) if isinstance(v, dict) else v
                for v in value
                if not (isinstance(v, dict) and v.get("$patch") == "delete")
            ]
        else:
            out[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(current, patch, key):
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [strategic_merge({}, i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    out = list(current)
    for item in patch:
        if not isinstance(item, dict):
            if item not in out:
                out.append(item)
            continue
        idx = next(
            (
                n
                for n, c in enumerate(out)
                if isinstance(c, dict) and key in item and c.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            out = [c for c in out if not (isinstance(c, dict) and c.get(key) == item.get(key))]
        elif idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def _pointer(path):
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container, token, allow_end=False):
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}", invalid=True)
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise PatchError(f"array index {idx} out of bounds", invalid=True)
    return idx


def _resolve(doc, tokens):
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise PatchError(f"doc is missing path: /{'/'.join(tokens)}", invalid=True)
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token)]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(tokens)}", invalid=True)
    return doc


def _add(doc, tokens, value):
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], allow_end=True), value)
    else:
        raise PatchError("cannot add to a scalar", invalid=True)
    return doc


def _remove(doc, tokens):
    if not tokens:
        raise PatchError("cannot remove the document root", invalid=True)
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, dict) and tokens[-1] in parent:
        return parent.pop(tokens[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, tokens[-1]))
    raise PatchError(f"doc is missing key: /{'/'.join(tokens)}", invalid=True)


def json_patch(doc, operations):
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op.get("op"), _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind} needs a value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            if path:
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_resolve(doc, source))
            doc = _add(doc, path, value)
        elif kind == "test":
            if _resolve(doc, path) != op["value"]:
                raise PatchError(f"testing value {op['path']} failed", invalid=True)
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc
