# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""The shared incident record: one object per entry in the bucket, so no append is ever lost.

An incident lives in the bucket under ``<prefix>/<ID>/``::

    incidents/INC-20261204-031500/entries/20261204T031500.123456Z-1f2e3d4c.json   one per entry
    incidents/INC-20261204-031500/sent/pagerduty/trigger.json                     one per delivery

Entries are never rewritten: two operators (or an operator and an AWX job) appending at the same
moment write two different keys. Listed by key they are in time order (the key starts with the UTC
time in microseconds; a random suffix keeps equal times apart). What the incident *is* (title,
severity, status, times) is folded from its entries by ``fold``, never stored on its own, so there is
nothing to update concurrently.

A delivery (a notification to one channel for one step of the incident) is claimed by creating its
``sent/`` object with ``If-None-Match: *``: of two machines re-running the same step, exactly one
creates it and sends; the other sees the claim and sends nothing. The claim then records the outcome
(sent or failed; a failed one may be claimed again by a later run).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import re
import secrets

try:
    from botocore.exceptions import ClientError
except ImportError:  # reported by the caller that made the store

    class ClientError(Exception):
        """Stands in for botocore's when it is missing (Store cannot be made then)."""


from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.store import Store
from ansible_collections.emergency.ops.plugins.module_utils.times import utcnow

ENTRY_SCHEMA = "emergency-ops/incident-entry/v1"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
STATUSES = ("investigating", "identified", "monitoring", "resolved")
# A claim left "sending" this long by a run that died may be taken over.
STALE_SENDING = datetime.timedelta(minutes=5)


def valid_id(incident_id):
    return bool(ID_PATTERN.match(incident_id or ""))


def iso(moment):
    """UTC with milliseconds, e.g. ``2026-12-04T03:15:00.123Z``: steps a second apart stay apart."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def _key_time(moment):
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


class Record:
    """The incidents under ``prefix`` of a bucket (the backup bucket by default)."""

    def __init__(self, store):
        self.store = store

    @classmethod
    def connect(cls, settings):
        return cls(Store(**dict(settings, prefix=settings.get("prefix") or "incidents")))

    @property
    def where(self):
        return "s3://%s/%s/" % (self.store.bucket, self.store.prefix)

    # -- entries -------------------------------------------------------------------------------
    def append(self, incident_id, kind, fields, by=None, at=None):
        """Writes one entry and returns it (with its ``at`` and ``key``)."""
        moment = at or utcnow()
        entry = {
            "schema": ENTRY_SCHEMA,
            "incident": incident_id,
            "at": iso(moment),
            "kind": kind,
            "by": by,
        }
        entry.update(fields)
        name = "%s-%s.json" % (_key_time(moment), secrets.token_hex(4))
        key = self.store.key(incident_id, "entries", name)
        self.store.call(
            "append to incident %s" % incident_id,
            self.store.s3.put_object,
            Bucket=self.store.bucket,
            Key=key,
            Body=json.dumps(entry, sort_keys=True).encode(),
            ContentType="application/json",
        )
        entry["key"] = key
        return entry

    def entries(self, incident_id):
        """Every entry of the incident, oldest first."""
        keys = self._keys(self.store.key(incident_id, "entries") + "/")
        out = []
        for key in sorted(keys):
            body = self._get(key)
            if body is not None:
                entry = json.loads(body)
                entry["key"] = key
                out.append(entry)
        return out

    def incident_ids(self):
        prefix = self.store.key("") + "/" if self.store.prefix else ""
        paginator = self.store.s3.get_paginator("list_objects_v2")
        pages = self.store.call(
            "list incidents",
            lambda: list(paginator.paginate(Bucket=self.store.bucket, Prefix=prefix, Delimiter="/")),
        )
        ids = []
        for page in pages:
            for common in page.get("CommonPrefixes") or []:
                ids.append(common["Prefix"][len(prefix) :].strip("/"))
        return sorted(ids)

    # -- deliveries ------------------------------------------------------------------------------
    def claim(self, incident_id, channel, step, by=None):
        """Claims the delivery of ``step`` to ``channel``: returns ``(True, None)`` when this caller
        is to send it, ``(False, claim)`` when it was sent (or is being sent) by someone else."""
        key = self.store.key(incident_id, "sent", channel, "%s.json" % step)
        document = {"channel": channel, "step": step, "status": "sending", "at": iso(utcnow()), "by": by}
        if self._create(key, document):
            return True, None
        existing = self._get_with_etag(key)
        if existing is None:  # deleted between the two calls: try once more
            return (True, None) if self._create(key, document) else (False, {"status": "sending"})
        claim, etag = existing
        stale = claim.get("status") == "sending" and _age(claim.get("at")) > STALE_SENDING
        if (claim.get("status") == "failed" or stale) and self._replace(key, document, etag):
            return True, claim  # the earlier attempt, for its Statuspage id and such
        return False, claim

    def settle(self, incident_id, channel, step, outcome):
        """Records what became of a claimed delivery (status sent or failed, and its details)."""
        key = self.store.key(incident_id, "sent", channel, "%s.json" % step)
        document = dict(outcome, channel=channel, step=step, at=iso(utcnow()))
        self.store.call(
            "record a delivery",
            self.store.s3.put_object,
            Bucket=self.store.bucket,
            Key=key,
            Body=json.dumps(document, sort_keys=True).encode(),
            ContentType="application/json",
        )

    def external_id(self, incident_id, channel):
        """The id a channel gave the incident (its Statuspage incident), once it made one."""
        found = self._get_with_etag(self.store.key(incident_id, "sent", channel, "external-id.json"))
        return found[0].get("id") if found else None

    def keep_external_id(self, incident_id, channel, external_id):
        """Kept once: the first incident a channel made is the one every later step updates."""
        key = self.store.key(incident_id, "sent", channel, "external-id.json")
        self._create(key, {"channel": channel, "id": external_id, "at": iso(utcnow())})

    def deliveries(self, incident_id):
        out = []
        for key in sorted(self._keys(self.store.key(incident_id, "sent") + "/")):
            body = self._get(key)
            if body is not None:
                out.append(json.loads(body))
        return out

    # -- S3 ----------------------------------------------------------------------------------------
    def _keys(self, prefix):
        paginator = self.store.s3.get_paginator("list_objects_v2")
        pages = self.store.call(
            "list %s" % prefix, lambda: list(paginator.paginate(Bucket=self.store.bucket, Prefix=prefix))
        )
        return [item["Key"] for page in pages for item in page.get("Contents") or []]

    def _get(self, key):
        found = self._get_with_etag(key)
        return json.dumps(found[0]) if found else None

    def _get_with_etag(self, key):
        try:
            answer = self.store.call(
                "read %s" % key, self.store.s3.get_object, Bucket=self.store.bucket, Key=key
            )
        except ClientError:  # NoSuchKey: listed, then removed
            return None
        return json.loads(answer["Body"].read()), answer.get("ETag")

    def _create(self, key, document):
        return self._conditional(key, document, IfNoneMatch="*")

    def _replace(self, key, document, etag):
        return self._conditional(key, document, IfMatch=etag) if etag else False

    def _conditional(self, key, document, **condition):
        try:
            self.store.s3.put_object(
                Bucket=self.store.bucket,
                Key=key,
                Body=json.dumps(document, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,
            )
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise Failure("write %s: %s" % (key, exc)) from exc
        except Exception as exc:  # unreachable: the caller reports the channel as not told
            raise Failure(
                "cannot reach the incident record %s: %s" % (self.store.endpoint, exc), "unreachable"
            ) from exc


def _age(at):
    try:
        moment = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return datetime.timedelta(0)
    return utcnow() - moment


def fold(entries):
    """What the incident is now, from its entries: title, severity, services, status, the times of
    its milestones, the procedures run, the evidence, the silences and what was sent."""
    state = {
        "id": None,
        "title": None,
        "severity": None,
        "services": [],
        "status": None,
        "opened_at": None,
        "opened_by": None,
        "acknowledged_at": None,
        "mitigated_at": None,
        "resolved_at": None,
        "resolution": None,
        "root_cause": None,
        "last_message": None,
        "last_action": None,
        "procedures": [],
        "evidence": [],
        "silences": {},
        "notifications": [],
        "operators": [],
    }
    for entry in entries:
        kind = entry.get("kind")
        state["id"] = state["id"] or entry.get("incident")
        if entry.get("by") and entry["by"] not in state["operators"]:
            state["operators"].append(entry["by"])
        if kind == "opened":
            if state["opened_at"] is None:  # the first open wins; a second one is a re-run
                state.update(
                    title=entry.get("title"),
                    severity=entry.get("severity"),
                    services=list(entry.get("services") or []),
                    status="investigating",
                    opened_at=entry["at"],
                    opened_by=entry.get("by"),
                    last_message=entry.get("message"),
                )
        elif kind == "status":
            state["status"] = entry.get("status")
            state["last_message"] = entry.get("message")
            state["acknowledged_at"] = state["acknowledged_at"] or entry["at"]
            if entry.get("status") == "monitoring":
                state["mitigated_at"] = state["mitigated_at"] or entry["at"]
            if entry.get("severity"):
                state["severity"] = entry["severity"]
        elif kind == "resolved":
            state.update(status="resolved", last_message=entry.get("message"))
            state["resolved_at"] = state["resolved_at"] or entry["at"]
            state["resolution"] = entry.get("message")
            state["root_cause"] = entry.get("root_cause") or state["root_cause"]
            state["acknowledged_at"] = state["acknowledged_at"] or entry["at"]
            state["mitigated_at"] = state["mitigated_at"] or entry["at"]
        elif kind == "procedure":
            state["procedures"].append(entry)
            if entry.get("event") == "finished":
                state["last_action"] = "%s %s" % (entry.get("procedure"), entry.get("status"))
                # A procedure that changed the platform and succeeded counts as acknowledging it.
                state["acknowledged_at"] = state["acknowledged_at"] or entry["at"]
                if (
                    entry.get("changed")
                    and entry.get("status") == "succeeded"
                    and not entry.get("check_mode")
                ):
                    state["mitigated_at"] = state["mitigated_at"] or entry["at"]
            for service in entry.get("services") or []:
                if service not in state["services"]:
                    state["services"].append(service)
        elif kind == "evidence":
            state["evidence"].append(entry)
        elif kind == "silence":
            state["silences"][entry.get("silence_id")] = entry
        elif kind == "notified":
            state["notifications"].append(entry)
    state["silences"] = [s for s in state["silences"].values() if s.get("action") != "expired"]
    return state
