"""kubernetes.core modules (k8s, k8s_info, k8s_scale, k8s_rollback, k8s_drain) against the emulated
server, all in one playbook run to keep the cost of starting Ansible down."""

import json
import os
import shutil
import subprocess
import sys

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    ns: shop
    revision_key: deployment.kubernetes.io/revision
    worker:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: worker, namespace: shop, labels: {app: worker}}
      spec:
        replicas: 2
        selector: {matchLabels: {app: worker}}
        template:
          metadata: {labels: {app: worker}}
          spec:
            containers: [{name: worker, image: "ghcr.io/x/worker:1"}]
  tasks:
    - name: apply a deployment
      kubernetes.core.k8s:
        state: present
        wait: true
        wait_timeout: 60
        wait_sleep: 1
        definition: "{{ worker }}"
      register: applied

    - name: apply the same definition again (idempotent)
      kubernetes.core.k8s:
        state: present
        definition: "{{ worker }}"
      register: again

    - name: pods by label
      kubernetes.core.k8s_info:
        kind: Pod
        namespace: "{{ ns }}"
        label_selectors: ["app=worker"]
      register: pods

    - name: scale up and wait
      kubernetes.core.k8s_scale:
        kind: Deployment
        name: worker
        namespace: "{{ ns }}"
        replicas: 3
        wait_timeout: 60
        wait_sleep: 1
      register: scaled

    - name: new template (revision 2)
      kubernetes.core.k8s:
        state: present
        wait: true
        wait_sleep: 1
        definition:
          apiVersion: apps/v1
          kind: Deployment
          metadata: {name: worker, namespace: "{{ ns }}"}
          spec:
            template:
              spec:
                containers: [{name: worker, image: "ghcr.io/x/worker:2"}]

    - name: roll back to revision 1
      kubernetes.core.k8s_rollback:
        api_version: apps/v1
        kind: Deployment
        name: worker
        namespace: "{{ ns }}"
      register: rollback

    - name: wait for the rollback
      kubernetes.core.k8s_info:
        kind: Deployment
        name: worker
        namespace: "{{ ns }}"
        wait: true
        wait_timeout: 60
        wait_sleep: 1
      register: rolled

    - name: drain node-1
      kubernetes.core.k8s_drain:
        name: node-1
        delete_options:
          ignore_daemonsets: true
          delete_emptydir_data: true
          wait_timeout: 30
          wait_sleep: 1
      register: drained

    - name: pods on node-1 after the drain
      kubernetes.core.k8s_info:
        kind: Pod
        field_selectors: ["spec.nodeName=node-1"]
      register: left

    - name: uncordon node-1
      kubernetes.core.k8s_drain:
        name: node-1
        state: uncordon

    - name: report
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'applied': applied.changed, 'again': again.changed, 'pods': pods.resources | length,
                     'scaled': scaled.result.status.readyReplicas, 'rollback': rollback.changed,
                     'image': rolled.resources[0].spec.template.spec.containers[0].image,
                     'revision': rolled.resources[0].metadata.annotations[revision_key],
                     'drained': drained.result, 'left': left.resources | length} | to_json }}"
"""


def test_kubernetes_core_modules(kube_env, tmp_path):
    bindir = os.path.dirname(sys.executable)
    found = shutil.which("ansible-playbook", path=bindir + os.pathsep + os.environ.get("PATH", ""))
    assert found, "ansible-playbook is not installed: run make install"
    playbook, out = tmp_path / "play.yml", tmp_path / "out.json"
    playbook.write_text(PLAYBOOK)
    env = dict(
        kube_env,
        PATH=bindir + os.pathsep + kube_env.get("PATH", ""),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
    )
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",  # JSON: key=value would split a path with a space in it
            json.dumps({"ansible_python_interpreter": sys.executable, "out": str(out)}),
            str(playbook),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["applied"] is True and report["again"] is False
    assert report["pods"] == 2 and report["scaled"] == 3 and report["rollback"] is True
    assert report["image"] == "ghcr.io/x/worker:1" and report["revision"] == "3"
    assert "node node-1 marked unschedulable" in report["drained"] and report["left"] == 0
