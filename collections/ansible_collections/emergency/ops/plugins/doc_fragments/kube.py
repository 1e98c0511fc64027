# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # KUBE_CLUSTER_ARGS of module_utils/args_common.py (emergency.ops.kube.cluster): the cluster. For
    # node_drain, which works on nodes, and for the modules that say in their own words what their
    # namespace is.
    CLUSTER = r"""
options:
  kubeconfig:
    description:
      - Path to the kubeconfig; the usual defaults (E(K8S_AUTH_KUBECONFIG), E(KUBECONFIG), in-cluster) apply.
    type: path
  context:
    description: Kubeconfig context to use.
    type: str
"""

    # KUBE_ARGS of module_utils/args_common.py (emergency.ops.kube): the cluster and the namespace of the
    # workloads. (A literal, not CLUSTER + ...: ansible-test reads fragments as plain string assignments.)
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to the kubeconfig; the usual defaults (E(K8S_AUTH_KUBECONFIG), E(KUBECONFIG), in-cluster) apply.
    type: path
  context:
    description: Kubeconfig context to use.
    type: str
  namespace:
    description: Namespace of the workloads.
    type: str
    required: true
"""
