#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollout_undo
short_description: Roll Deployments back to a known-good revision and wait until they serve
description:
  - V(undo) does what C(kubectl rollout undo) does, to the previous revision, to O(to_revision), or
    sets O(image) as the tag of the workload's main container, then waits for the rollout and checks
    every replica is ready.
  - It never waits for the current rollout first, so it works when the current revision is broken
    and its pods never become ready.
  - V(recover) looks at each Deployment and rolls back only those whose rollout failed (the
    C(ProgressDeadlineExceeded) condition, or pods of the newest ReplicaSet not ready for more than
    O(not_ready_seconds)) to the newest older revision that was fully available (one that still has
    available pods, otherwise the newest older one whose images differ from the failed one).
  - A revision that does not exist is refused with outcome C(invalid) and the list of those that do.
  - The incident is recorded on each workload it rolls back (annotation
    C(emergency.ops/rollback-incident)), so a re-run for the same incident rolls nothing back again.
  - In check mode the change is validated with a server-side dry run and nothing changes.
version_added: 1.0.0
author: Emergency procedures maintainers (!UNKNOWN)
options:
  services:
    description:
      - Deployments to roll back (V(undo)) or to look at (V(recover)), in order.
      - Only Deployments keep the revisions this module rolls back to.
  mode:
    description: V(undo) rolls every service back; V(recover) only those whose rollout failed.
    type: str
    choices: [undo, recover]
    default: undo
  to_revision:
    description: Revision to roll back to (V(undo) only); default the previous one.
    type: int
  image:
    description: Image tag to set on the main container instead of a revision (V(undo) only).
    type: str
  not_ready_seconds:
    description: With V(recover), a rollout whose new pods are not ready for this long has failed.
    type: int
    default: 300
  incident:
    description: Incident id recorded on each workload rolled back.
    type: str
    required: true
  timeout:
    description: Seconds each rollback may take to be complete and ready.
    type: int
    default: 300
extends_documentation_fragment:
  - emergency.ops.kube
  - emergency.ops.services
"""

EXAMPLES = r"""
- name: Rollback | Roll api back to revision 3
  emergency.ops.rollout_undo:
    namespace: matchbook
    incident: INC-20261122-0931
    services:
      - {name: api, kind: Deployment}
    to_revision: 3
"""

RETURN = r"""
services:
  description: One entry per workload, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Workload name.
      type: str
    failing:
      description: Whether its rollout had failed (V(recover)), and why in C(reason).
      type: bool
    rolled_back:
      description: Whether this run rolled it back.
      type: bool
    previous_revision:
      description: Revision before the rollback.
      type: int
    target_revision:
      description: Revision rolled back to (it gets a new number once rolled out, as with kubectl).
      type: int
    new_revision:
      description: Revision once rolled out.
      type: int
    previous_images:
      description: Container images before the rollback.
      type: dict
    images:
      description: Container images after the rollback.
      type: dict
    revisions:
      description: The revisions that exist, newest first, with their images.
      type: list
prior:
  description: Per workload, the revision and images before this run (the state to return to).
  returned: always
  type: dict
failed_service:
  description: The workload whose rollback did not become ready, with its pods and recent events.
  returned: on failure
  type: dict
"""

import copy
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.emergency.ops.plugins.module_utils.args_common import KUBE_ARGS, SERVICES_ARGS
from ansible_collections.emergency.ops.plugins.module_utils.kube import (
    Kube,
    KubeError,
    get_or_fail,
    outcome_of,
    require_kubernetes,
)
from ansible_collections.emergency.ops.plugins.module_utils.rollout import rollout_state
from ansible_collections.emergency.ops.plugins.module_utils.workloads import (
    condition,
    images,
    main_container,
    not_ready_message,
    pod_age,
    pod_serving,
    pods_of,
    replicasets_of,
    revision_number,
    wait_ready,
)

INCIDENT = "emergency.ops/rollback-incident"
CHANGE_CAUSE = "kubernetes.io/change-cause"
TAG_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


def template_of(rs):
    template = copy.deepcopy(rs["spec"]["template"])
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    return template


def with_tag(image, tag):
    slash = image.rfind("/")
    colon = image.rfind(":")
    repository = image[:colon] if colon > slash else image
    return "%s:%s" % (repository.split("@", 1)[0], tag)


def failure(obj, rss, not_ready_seconds):
    """Why the Deployment's rollout has failed, or None."""
    progressing = condition(obj, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return "ProgressDeadlineExceeded: %s" % progressing.get("message", "")
    state, _message = rollout_state(obj)
    if state == "complete" or not rss:
        return None
    return None if not_ready_seconds is None else "pending"


def stuck_pods(kube, obj, newest, not_ready_seconds):
    hash_label = newest["metadata"].get("labels", {}).get("pod-template-hash")
    stuck = [
        pod["metadata"]["name"]
        for pod in pods_of(kube, obj)
        if pod["metadata"].get("labels", {}).get("pod-template-hash") == hash_label
        and not pod_serving(pod)
        and pod_age(pod) > not_ready_seconds
    ]
    return stuck


def good_revision(rss, current, failed_images):
    """Newest older revision that was fully available."""
    older = [rs for rs in rss if revision_number(rs) < current]
    for rs in older:
        if rs.get("status", {}).get("availableReplicas", 0) > 0:
            return rs
    for rs in older:
        if images(rs["spec"]["template"]) != failed_images:
            return rs
    return None


def prior(results):
    return {e["name"]: {"revision": e["previous_revision"], "images": e["previous_images"]} for e in results}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGS,
            **SERVICES_ARGS,
            mode=dict(type="str", default="undo", choices=["undo", "recover"]),
            to_revision=dict(type="int"),
            image=dict(type="str"),
            not_ready_seconds=dict(type="int", default=300),
            incident=dict(type="str", required=True),
            timeout=dict(type="int", default=300),
        ),
        mutually_exclusive=[("to_revision", "image")],
        supports_check_mode=True,
    )
    require_kubernetes(module)
    p = module.params
    if p["image"] is not None and (
        not p["image"] or len(p["image"]) > 128 or any(ch not in TAG_CHARS for ch in p["image"])
    ):
        module.fail_json(msg="image %r is not a valid tag" % p["image"], outcome="invalid")
    statefulsets = [s["name"] for s in p["services"] if s["kind"] != "Deployment"]
    if statefulsets and p["mode"] == "undo":
        module.fail_json(
            msg="rollback needs Deployments (they keep revisions); not: %s" % ", ".join(statefulsets),
            outcome="invalid",
        )

    results, changed = [], False
    try:
        kube = Kube(p["kubeconfig"], p["context"], p["namespace"])
        plan = []
        # Preflight: every workload and its target, before any of them is touched.
        for service in p["services"]:
            if service["kind"] != "Deployment":
                continue
            name = service["name"]
            obj = get_or_fail(module, kube, "Deployment", name)
            rss = replicasets_of(kube, obj)
            current = revision_number(obj)
            current_template = obj["spec"]["template"]
            entry = {
                "name": name,
                "kind": "Deployment",
                "failing": None,
                "reason": None,
                "rolled_back": False,
                "previous_revision": current,
                "target_revision": None,
                "new_revision": None,
                "previous_images": images(current_template),
                "images": None,
                "revisions": [
                    {"revision": revision_number(rs), "images": images(rs["spec"]["template"])} for rs in rss
                ],
            }
            results.append(entry)
            done = obj["metadata"].get("annotations", {}).get(INCIDENT) == p["incident"]
            target = None
            if p["mode"] == "recover":
                reason = failure(obj, rss, p["not_ready_seconds"])
                if reason == "pending":
                    newest = next((rs for rs in rss if revision_number(rs) == current), None)
                    stuck = stuck_pods(kube, obj, newest, p["not_ready_seconds"]) if newest else []
                    reason = (
                        "pods not ready for more than %ss: %s" % (p["not_ready_seconds"], ", ".join(stuck))
                        if stuck
                        else None
                    )
                entry["failing"], entry["reason"] = bool(reason), reason
                if not reason:
                    plan.append((entry, obj, None, done))
                    continue
                good = good_revision(rss, current, images(current_template))
                if good is None:
                    module.fail_json(
                        msg="Deployment %s has failed (%s) and has no earlier revision that was available"
                        % (name, reason),
                        services=results,
                        prior=prior(results),
                        outcome="refused",
                    )
                target = (revision_number(good), template_of(good))
            elif p["image"] is not None:
                template = copy.deepcopy(current_template)
                index = main_container(template, name)
                container = template["spec"]["containers"][index]
                container["image"] = with_tag(container["image"], p["image"])
                target = (None, template)
            else:
                older = [rs for rs in rss if revision_number(rs) < current]
                wanted = p["to_revision"]
                chosen = (
                    older[0]
                    if wanted is None and older
                    else next((rs for rs in rss if revision_number(rs) == wanted), None)
                )
                if chosen is None and not done:
                    module.fail_json(
                        msg="Deployment %s has no %s; revisions that exist: %s"
                        % (
                            name,
                            "revision %s" % wanted if wanted is not None else "previous revision",
                            ", ".join(str(revision_number(rs)) for rs in rss) or "none",
                        ),
                        services=results,
                        prior=prior(results),
                        outcome="invalid",
                    )
                if chosen is not None:
                    target = (revision_number(chosen), template_of(chosen))
            if target is not None:
                entry["target_revision"] = target[0]
            plan.append((entry, obj, target, done))

        for entry, obj, target, done in plan:
            name = entry["name"]
            if target is not None and not done and target[1] != obj["spec"]["template"]:
                cause = "emergency rollback to %s for %s" % (
                    "revision %s" % target[0] if target[0] is not None else "image %s" % p["image"],
                    p["incident"],
                )
                patch = [
                    {"op": "replace", "path": "/spec/template", "value": target[1]},
                    {
                        "op": "add",
                        "path": "/metadata/annotations",
                        "value": dict(
                            obj["metadata"].get("annotations", {}),
                            **{INCIDENT: p["incident"], CHANGE_CAUSE: cause},
                        ),
                    },
                ]
                kube.patch("Deployment", name, patch, patch_type="json", dry_run=module.check_mode)
                entry["rolled_back"] = True
                changed = True
            if module.check_mode:
                continue
            if not (entry["rolled_back"] or done or p["mode"] == "undo"):
                continue  # recover: a healthy Deployment is left alone, not waited for
            started = time.monotonic()
            obj, state, message = wait_ready(kube, "Deployment", name, p["timeout"])
            entry["new_revision"] = revision_number(obj)
            entry["images"] = images(obj["spec"]["template"])
            entry["seconds_to_ready"] = round(time.monotonic() - started, 2)
            if state != "complete":
                text, detail = not_ready_message(kube, obj, message)
                module.fail_json(
                    msg=text, changed=changed, services=results, prior=prior(results), failed_service=detail
                )
    except KubeError as exc:
        module.fail_json(
            msg=str(exc),
            changed=changed,
            services=results,
            prior=prior(results),
            outcome=outcome_of(exc, changed),
        )
    module.exit_json(changed=changed, services=results, prior=prior(results))


if __name__ == "__main__":
    main()
