# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # DATABASE_ARGS of module_utils/args_common.py (emergency.ops.database). A module whose database
    # means something of its own (the one dumped, the live one) says so in its own description of
    # O(database), which Ansible merges over this one.
    DOCUMENTATION = r"""
options:
  database:
    description: Connection to the PostgreSQL server (an admin login) and the database worked on.
    type: dict
    required: true
    suboptions:
      host: {description: Server host., type: str, required: true}
      port: {description: Server port., type: int, default: 5432}
      name:
        description: "The database: the one dumped, or the live one (see O(database))."
        type: str
        required: true
      user:
        description: Login; for a restore or a swap, an admin login that may create and rename databases.
        type: str
        required: true
      password:
        description: Password; pg_dump and pg_restore get it in their environment, never on a command line.
        type: str
        default: ""
      sslmode: {description: libpq sslmode., type: str, default: prefer}
"""
