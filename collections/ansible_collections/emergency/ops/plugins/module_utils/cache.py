# -*- coding: utf-8 -*-
# Apache-2.0 (see galaxy.yml)
"""A Redis client from the inventory's ``platform_redis``: its URL without the password, and the file
holding the password, read here so that it never travels as a module argument."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def client(settings, decode_responses=False):
    import redis

    password = None
    if settings.get("password_file"):
        with open(settings["password_file"]) as handle:
            password = handle.read().strip()
    return redis.Redis.from_url(
        settings["url"], password=password, socket_timeout=5, decode_responses=decode_responses
    )
