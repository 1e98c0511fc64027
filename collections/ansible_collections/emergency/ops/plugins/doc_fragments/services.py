# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # SERVICES_ARGS of module_utils/args_common.py (emergency.ops.services). A module says in its own
    # description of O(services) what it does with them, which Ansible merges over this one.
    DOCUMENTATION = r"""
options:
  services:
    description: The workloads the module acts on, in the order given.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Workload name.
        type: str
        required: true
      kind:
        description: Workload kind.
        type: str
        choices: [Deployment, StatefulSet]
        default: Deployment
"""
