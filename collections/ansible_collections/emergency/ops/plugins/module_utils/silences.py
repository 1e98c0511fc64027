# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""Alertmanager silences through its API v2 (the v1 API of the runbooks is gone since 0.27).

Alertmanager has no idempotency key, so an incident's silences are recognised by what we write into
them: ``createdBy`` starts with ``emergency-ops`` and the comment with ``[<incident>]``. A second
silence for the same incident and exactly the same matchers extends the active one (same id; a
silence whose matchers and start are unchanged is updated in place) instead of adding another.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

from ansible_collections.emergency.ops.plugins.module_utils.channels import request
from ansible_collections.emergency.ops.plugins.module_utils.failure import Failure
from ansible_collections.emergency.ops.plugins.module_utils.times import iso, utcnow

CREATED_BY = "emergency-ops"
MATCHER = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)(.*)$")
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_matcher(text):
    """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex`` as Alertmanager's matcher."""
    found = MATCHER.match(text or "")
    if not found or not found.group(3):
        raise ValueError(
            "matcher %r: give name=value (or name!=value, name=~regex, name!~regex)" % (text or "")[:60]
        )
    name, op, value = found.groups()
    return {"name": name, "value": value, "isRegex": "~" in op, "isEqual": not op.startswith("!")}


def parse_duration(text):
    found = DURATION.match(text or "")
    if not text or not found or not any(found.groups()):
        raise ValueError("duration %r: give e.g. 30m, 1h, 2h30m or 1d" % (text or "")[:40])
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    span = datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if span <= datetime.timedelta(0):
        raise ValueError("duration %r must be longer than 0" % text)
    return span


def _key(matchers):
    return sorted(
        (m["name"], m["value"], bool(m.get("isRegex")), bool(m.get("isEqual", True))) for m in matchers
    )


class Alertmanager:
    def __init__(self, url, budget=10.0):
        self.url = url.rstrip("/")
        self.budget = budget

    def _call(self, method, path, body=None):
        outcome, answer = request(method, self.url + path, body, {}, budget=self.budget, attempts=3)
        if outcome["status"] != "sent":
            kind = "unreachable" if outcome.get("http_status") is None else "failed"
            raise Failure("Alertmanager %s %s: %s" % (method, path, outcome.get("error")), kind)
        return answer

    def incident_silences(self, incident_id, matchers=None, active_only=True):
        """The incident's silences (active or pending ones unless ``active_only`` is false)."""
        found = []
        for silence in self._call("GET", "/api/v2/silences") or []:
            if not str(silence.get("createdBy", "")).startswith(CREATED_BY):
                continue
            if not str(silence.get("comment", "")).startswith("[%s]" % incident_id):
                continue
            if active_only and silence.get("status", {}).get("state") == "expired":
                continue
            if matchers is not None and _key(silence.get("matchers") or []) != _key(matchers):
                continue
            found.append(silence)
        return found

    def silence(self, incident_id, matchers, duration, comment, operator, check_mode=False):
        """Creates the incident's silence for ``matchers``, or extends it; returns ``(action, silence)``
        with action ``created``, ``extended`` or ``unchanged`` (it already lasts as long)."""
        ends = utcnow() + duration
        existing = self.incident_silences(incident_id, matchers)
        body = {
            "matchers": matchers,
            "startsAt": iso(utcnow()),
            "endsAt": iso(ends),
            "createdBy": "%s/%s" % (CREATED_BY, operator),
            "comment": "[%s] %s" % (incident_id, comment),
        }
        if existing:
            current = existing[0]
            current_end = _parse(current.get("endsAt"))
            if current_end and current_end >= ends - datetime.timedelta(seconds=60):
                return "unchanged", current
            body.update(
                id=current["id"],
                startsAt=current["startsAt"],
                comment=current.get("comment") or body["comment"],
            )
            if check_mode:
                return "extended", dict(current, endsAt=body["endsAt"])
            answer = self._call("POST", "/api/v2/silences", body)
            return "extended", dict(body, id=answer.get("silenceID", current["id"]))
        if check_mode:
            return "created", dict(body, id=None)
        answer = self._call("POST", "/api/v2/silences", body)
        return "created", dict(body, id=answer.get("silenceID"))

    def expire(self, silence_id):
        self._call("DELETE", "/api/v2/silence/%s" % silence_id)


def _parse(text):
    if not text:
        return None
    text = re.sub(r"\.(\d{6})\d*", r".\1", text.replace("Z", "+00:00"))
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
