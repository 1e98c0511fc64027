# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # BACKUP_STORE_ARGS of module_utils/args_common.py (emergency.ops.backup_store).
    DOCUMENTATION = r"""
options:
  store:
    description: The S3 backup store.
    type: dict
    required: true
    suboptions:
      bucket: {description: Bucket., type: str, required: true}
      prefix: {description: Key prefix of this database's backups., type: str, default: postgres}
      endpoint_url: {description: S3 endpoint (empty for AWS)., type: str}
      region: {description: Region., type: str, default: us-east-1}
      access_key: {description: Access key id (empty for the default credential chain)., type: str}
      secret_key: {description: Secret access key., type: str}
"""
