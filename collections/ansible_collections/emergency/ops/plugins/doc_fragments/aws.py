# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # AWS_ARGS of module_utils/args_common.py (emergency.ops.aws). no_log is set there, on secret_key.
    DOCUMENTATION = r"""
options:
  region:
    description: AWS region.
    type: str
    required: true
  endpoint_url:
    description: RDS endpoint; empty for AWS.
    type: str
    default: ""
  access_key:
    description: Access key id; empty for the default credential chain.
    type: str
    default: ""
  secret_key:
    description: Secret access key; empty for the default credential chain.
    type: str
    default: ""
requirements:
  - boto3
"""
