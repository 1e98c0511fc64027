# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Credential references of the inventory: ``{source: env, name: VAR}``, ``{source: file, path: P}``,
``{source: secret, secret: NAME, key: KEY}`` or a plain string. Read only when used; an error names
the reference, never its value."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os


def resolve(ref, kube=None):
    """The value of ``ref``; ``kube`` (a ``kube.Kube`` of the namespace) reads Secrets. Raises ValueError."""
    if ref is None or isinstance(ref, str):
        return ref or ""
    source = ref.get("source")
    if source == "env":
        value = os.environ.get(ref.get("name") or "")
        if not value:
            raise ValueError("environment variable %s is not set" % ref.get("name"))
        return value.strip()
    if source == "file":
        try:
            with open(ref["path"]) as handle:
                return handle.read().strip()
        except (OSError, IOError, KeyError) as exc:
            raise ValueError("cannot read the credential file (%s)" % getattr(exc, "strerror", exc)) from None
    if source == "secret":
        if kube is None:
            raise ValueError("Secret %s: no cluster to read it from" % ref.get("secret"))
        from ansible_collections.emergency.ops.plugins.module_utils.kube import KubeError

        try:
            secret = kube.get("secrets", ref["secret"])
        except KubeError as exc:
            raise ValueError("cannot read Secret %s: %s" % (ref.get("secret"), exc.reason)) from None
        data = (secret.get("data") or {}).get(ref.get("key") or "")
        if data is None:
            raise ValueError("Secret %s has no key %s" % (ref.get("secret"), ref.get("key")))
        return base64.b64decode(data).decode().strip()
    if source == "value":
        return str(ref.get("value") or "")
    raise ValueError("unknown credential source %r" % source)


def record_settings(record, backup):
    """Where the incident record lives: ``platform_incident.record`` over ``platform_backup``."""
    settings = dict(
        (k, v)
        for k, v in (backup or {}).items()
        if k in ("bucket", "endpoint_url", "region", "access_key", "secret_key")
    )
    settings.update(dict((k, v) for k, v in (record or {}).items() if v not in (None, "")))
    settings["prefix"] = settings.get("prefix") or "incidents"
    return settings
